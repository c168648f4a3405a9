"""Prometheus metrics shared by the API and services.

Under either server, `ledger serve` sets PROMETHEUS_MULTIPROC_DIR so that /metrics aggregates all workers.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

LOOKUPS = Counter("ledger_lookups_total", "Lookups answered, by tier and purpose", ["tier", "purpose"])
LOOKUP_LATENCY = Histogram(
    "ledger_lookup_seconds",
    "Time to answer a lookup request",
    buckets=(0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0),
)
REQUEST_LATENCY = Histogram(
    "ledger_request_seconds",
    "Time to answer an API request, by endpoint",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
FALLBACKS = Counter("ledger_cache_fallbacks_total", "Lookups answered from PostgreSQL because Redis failed")
RATE_LIMITED = Counter("ledger_rate_limited_total", "Requests refused with 429")
FISHING = Counter(
    "ledger_lookups_without_refund_reference_total",
    # By purpose, never by platform: /metrics must not name the members (`ledger lookups fishing` does,
    # for the operator).
    "Lookups without a refund reference (possible fishing), by purpose",
    ["purpose"],
)
WEBHOOKS = Counter("ledger_webhook_attempts_total", "Webhook delivery attempts, by outcome", ["outcome"])
INCIDENTS = Counter("ledger_incidents_reported_total", "Incidents accepted (201)")


_LOOKUP_COUNTERS: dict[tuple[str, str, bool], tuple[Counter, Counter | None]] = {}


def count_lookup(tier: str, purpose: str, referenced: bool) -> None:
    """Count one answered lookup (and, without a refund reference, one possible fishing). The labelled
    children are looked up once per (tier, purpose) and kept: `labels()` checks and locks on every call,
    which was a third of the metrics' cost per lookup."""
    key = (tier, purpose, referenced)
    children = _LOOKUP_COUNTERS.get(key)
    if children is None:
        children = _LOOKUP_COUNTERS[key] = (
            LOOKUPS.labels(tier, purpose),
            None if referenced else FISHING.labels(purpose),
        )
    children[0].inc()
    if children[1] is not None:
        children[1].inc()


def render() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()


def render_log(lag: dict[str, object]) -> bytes:
    """The log's lag and size as gauges. The sequencer is its own process and serves no metrics, so the
    API reads them from the database when scraped (ledger/services/transparency.py `lag`)."""
    return (
        "# HELP ledger_log_lag_seconds Age of the oldest leaf not yet integrated into the log\n"
        "# TYPE ledger_log_lag_seconds gauge\n"
        f"ledger_log_lag_seconds {lag['lag_seconds']}\n"
        "# HELP ledger_log_mmd_seconds The log's maximum merge delay\n"
        "# TYPE ledger_log_mmd_seconds gauge\n"
        f"ledger_log_mmd_seconds {lag['mmd_seconds']}\n"
        "# HELP ledger_log_tree_size Leaves under the latest signed checkpoint\n"
        "# TYPE ledger_log_tree_size gauge\n"
        f"ledger_log_tree_size {lag['tree_size']}\n"
    ).encode()
