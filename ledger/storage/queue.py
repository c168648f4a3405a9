"""Sending Celery tasks by name, so `ledger/` never imports `workers/`.

Sends are fire-and-forget with no retries: if the broker is down the outbox row stays pending and the
beat sweep sends it later. A short socket timeout keeps a dead broker from stalling a request.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

log = logging.getLogger(__name__)

PROCESS_OUTBOX = "ledger.process_outbox"


def broker_options() -> dict[str, Any]:
    return {
        "socket_connect_timeout": 0.5,
        "socket_timeout": 2.0,
        "retry_on_timeout": False,
        "visibility_timeout": 600,
    }


class TaskQueue:
    def __init__(self, broker_url: str) -> None:
        self.app = Celery("ledger-producer", broker=broker_url, set_as_current=False)
        self.app.conf.update(
            broker_connection_retry=False,
            broker_connection_retry_on_startup=False,
            broker_connection_max_retries=0,
            # Without max_retries kombu keeps reconnecting for its connect timeout, sleeping 2 s between
            # attempts, so every report stalled about 5 s while the broker was down. One immediate retry
            # still covers a stale pooled connection.
            broker_transport_options={**broker_options(), "max_retries": 1, "interval_start": 0},
            task_default_queue="ledger",
        )

    def send(self, name: str, *args: Any) -> bool:
        """True if the broker took the task; False (logged, never raised) if it did not."""
        try:
            self.app.send_task(name, args=list(args), retry=False, queue="ledger")
        except Exception as exc:  # the broker is optional at this moment: the outbox is the guarantee
            log.warning("task %s not sent (%s); the outbox sweep will send it", name, type(exc).__name__)
            return False
        return True
