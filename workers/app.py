"""The Celery app: Redis broker from REDIS_URL, late acks, the beat schedule and the outbox relay.

`acks_late` with `task_reject_on_worker_lost` means a task whose worker is killed mid-run goes back to
the queue; every task body is idempotent, so running it again is safe. The outbox sweep is the second
net: anything never marked done is sent again.

Every `ledger worker` also runs the outbox relay (workers/relay.py), which sends the tasks the
API no longer sends itself: a bootstep starts it in the worker's main process once the pool is up, and
stops it on shutdown. Running it in the worker, rather than as a process of its own, means every
deployment that processes work also relays it, with nothing new to supervise.
"""

from __future__ import annotations

from datetime import timedelta
from functools import cache
from typing import Any

from celery import Celery, bootsteps
from celery.schedules import crontab

from ledger.config import Settings
from ledger.services.runtime import Runtime
from ledger.storage.queue import broker_options
from workers.relay import OutboxRelay

settings = Settings.from_env()
app = Celery("ledger", broker=settings.redis_url, include=["workers.tasks"])
app.conf.update(
    task_default_queue="ledger",
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_acks_on_failure_or_timeout=False,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    broker_transport_options=broker_options(),
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    beat_schedule={
        "outbox-sweep": {"task": "ledger.sweep_outbox", "schedule": timedelta(seconds=5)},
        "webhook-sweep": {"task": "ledger.sweep_webhooks", "schedule": timedelta(seconds=5)},
        "decay-rescore": {"task": "ledger.rescore_due", "schedule": crontab(minute=17, hour=3)},
        "policy-rescore": {"task": "ledger.rescore_stale_policy", "schedule": timedelta(minutes=1)},
        "reliability": {"task": "ledger.refresh_reliability", "schedule": crontab(minute=5, hour=4)},
        "dispute-sla": {"task": "ledger.expire_disputes", "schedule": timedelta(minutes=5)},
        "retention": {"task": "ledger.expire_retention", "schedule": crontab(minute=41, hour=2)},
        "console-overview": {"task": "ledger.refresh_console_overview", "schedule": timedelta(seconds=30)},
    },
)


@cache
def runtime() -> Runtime:
    """One Runtime per worker process, opened lazily after fork."""
    return Runtime(Settings.from_env().require_services())


class OutboxRelayStep(bootsteps.StartStopStep):
    """Starts the outbox relay's thread in the worker's main process, after the pool has forked its
    processes, and stops it on a warm or cold shutdown."""

    requires = ("celery.worker.components:Pool",)

    def create(self, parent: Any) -> OutboxRelay:
        return OutboxRelay(Settings.from_env().require_services(), parallelism=int(parent.concurrency or 1))


app.steps["worker"].add(OutboxRelayStep)
