"""Sending Celery tasks by name, so `ledger/` never imports `workers/`.

Sends are fire-and-forget with no retries: if the broker is down the outbox row stays unsent and the
relay (or the beat sweep) sends it later. A short socket timeout keeps a dead broker from stalling anyone.
The API sends nothing: a publish costs about 1 ms of CPU, so the outbox relay in `ledger worker` sends
for it (workers/relay.py).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from typing import Any

from celery import Celery

log = logging.getLogger(__name__)

PROCESS_OUTBOX = "ledger.process_outbox"
PROCESS_OUTBOX_BATCH = "ledger.process_outbox_batch"
DELIVER_WEBHOOK = "ledger.deliver_webhook"
DELIVER_WEBHOOKS = "ledger.deliver_webhooks"


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
        self._producer: Any = None
        self._lock = threading.Lock()

    def send(self, name: str, *args: Any) -> bool:
        """True if the broker took the task; False (logged, never raised) if it did not."""
        try:
            self.app.send_task(name, args=list(args), retry=False, queue="ledger")
        except Exception as exc:  # the broker is optional at this moment: the outbox is the guarantee
            log.warning("task %s not sent (%s); the outbox sweep will send it", name, type(exc).__name__)
            return False
        return True

    def publish(self, name: str, calls: Sequence[Sequence[Any]]) -> None:
        """Publish one task per argument list on a long-lived connection and producer; raise if the broker
        fails, so that the caller can roll back what it claimed. `send` takes a producer from the pool
        for each call, which is fine for the sweep's occasional sends, not for the relay's steady stream."""
        with self._lock:
            if self._producer is None:
                self._producer = self.app.amqp.Producer(self.app.connection_for_write())
            try:
                for args in calls:
                    self.app.send_task(
                        name, args=list(args), retry=False, queue="ledger", producer=self._producer
                    )
            except Exception:
                self._drop_producer()  # a broken connection is not reused: the next call opens a new one
                raise

    def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                producer.connection.release()

    def close(self) -> None:
        with self._lock:
            self._drop_producer()
