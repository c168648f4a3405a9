"""Celery tasks. Each is a thin shell over a service function, with an explicit name, late acks and an
idempotent body; each periodic one has a CLI twin (see `ledger --help`)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from ledger.services import cache_rebuild, outbox_work, scoring, webhooks
from workers.app import app, runtime

TASK_OPTIONS: dict[str, Any] = {"acks_late": True, "reject_on_worker_lost": True}


@app.task(
    name="ledger.process_outbox",
    autoretry_for=(Exception,),
    retry_backoff=True,
    max_retries=5,
    **TASK_OPTIONS,
)
def process_outbox(outbox_id: int) -> str:
    return outbox_work.process_outbox(runtime(), outbox_id)


@app.task(
    name="ledger.process_outbox_batch",
    autoretry_for=(Exception,),
    retry_backoff=True,
    max_retries=5,
    **TASK_OPTIONS,
)
def process_outbox_batch(outbox_ids: list[int]) -> int:
    """What the outbox relay sends; `ledger.process_outbox` (one id) is what the beat sweep re-sends."""
    return outbox_work.process_outbox_batch(runtime(), outbox_ids)


@app.task(name="ledger.sweep_outbox", **TASK_OPTIONS)
def sweep_outbox() -> int:
    sent = outbox_work.sweep_outbox(runtime())
    cache_rebuild.warm_cache(runtime())  # after a Redis restart: refill the cache from PostgreSQL
    return sent


@app.task(name="ledger.rescore_due", **TASK_OPTIONS)
def rescore_due() -> int:
    return scoring.rescore_due(runtime())


@app.task(name="ledger.rescore_stale_policy", **TASK_OPTIONS)
def rescore_stale_policy() -> int:
    return scoring.rescore_stale_policy(runtime())


@app.task(name="ledger.refresh_reliability", **TASK_OPTIONS)
def refresh_reliability() -> list[str]:
    from ledger.services import reliability

    return reliability.refresh(runtime())


@app.task(name="ledger.expire_disputes", **TASK_OPTIONS)
def expire_disputes() -> int:
    from ledger.services import disputes

    return disputes.expire_overdue(runtime())


@app.task(name="ledger.expire_retention", **TASK_OPTIONS)
def expire_retention() -> dict[str, int]:
    from ledger.services import retention

    return retention.run(runtime())


@app.task(name="ledger.refresh_console_overview", **TASK_OPTIONS)
def refresh_console_overview() -> dict[str, int]:
    from ledger.services import console

    return dict(console.refresh_overview(runtime())["totals"])


@app.task(name="ledger.deliver_webhook", bind=True, **TASK_OPTIONS)
def deliver_webhook(self: Any, delivery_id: str) -> None:
    """One attempt; a short wait before the next is a countdown, a long one is left to the sweep."""
    wait = webhooks.deliver(runtime(), UUID(delivery_id))
    if wait is not None and wait <= webhooks.COUNTDOWN_LIMIT_SECONDS:
        self.apply_async((delivery_id,), countdown=wait, queue="ledger")


@app.task(name="ledger.deliver_webhooks", **TASK_OPTIONS)
def deliver_webhooks(delivery_ids: list[str]) -> None:
    """What a fan-out and the sweep send: several attempts at once, each retried on its own."""
    waits = webhooks.deliver_many(runtime(), [UUID(d) for d in delivery_ids])
    for delivery_id, wait in waits.items():
        if wait is not None and wait <= webhooks.COUNTDOWN_LIMIT_SECONDS:
            deliver_webhook.apply_async((str(delivery_id),), countdown=wait, queue="ledger")


@app.task(name="ledger.sweep_webhooks", **TASK_OPTIONS)
def sweep_webhooks() -> int:
    return webhooks.sweep(runtime())
