"""Use cases: each combines the pure domain with storage inside explicit transactions."""
