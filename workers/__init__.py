"""Celery workers and beat: thin shells over `ledger.services`."""
