"""The outbox relay: turns new outbox rows into Celery tasks, so the API never publishes one.

Why: a publish costs the publisher about 1 ms of CPU (kombu builds a Redis client per message, Celery
builds the message), a fifth of a report's CPU in the API. After commit the API now only flags the
tokens as pending and pushes a wake-up, in one Redis round trip (`Cache.mark_pending_and_wake`). The
relay blocks on that wake-up, or at most `POLL_SECONDS`, then claims the rows never sent with
`FOR UPDATE SKIP LOCKED` (several relays never send a row twice), publishes them as a few
`ledger.process_outbox_batch` tasks on one long-lived producer, marks them sent and commits.

Failure cases:
- Redis down: the wake-up and the publish fail, the claim rolls back, and the relay keeps polling
  PostgreSQL every `POLL_SECONDS`; once Redis is back it sends everything that waited.
- A wake-up lost (a Redis error after commit, swallowed by the API): the next poll finds the row.
- The relay dies after commit but before a worker finished: the row is sent and not done, and the beat
  sweep sends it again after `LEDGER_OUTBOX_GRACE_SECONDS`, as a single-id `ledger.process_outbox`.

It runs as a daemon thread in the main process of every `ledger worker` (started by `workers/app.py`),
so every deployment that processes work also relays it. It opens its own Runtime, never the worker's
per-process one, which forked pool processes would otherwise inherit.
"""

from __future__ import annotations

import logging
import math
import threading

from ledger.config import Settings
from ledger.services.runtime import Runtime
from ledger.storage import outbox
from ledger.storage.cache import CacheUnavailable, RelayWakeups
from ledger.storage.queue import PROCESS_OUTBOX_BATCH

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
CLAIM_LIMIT = 500
MAX_PER_TASK = 25


def relay_once(rt: Runtime, parallelism: int = 1, limit: int = CLAIM_LIMIT) -> int:
    """Claim the rows never sent, publish them and mark them sent, in one transaction. Returns how many.

    The rows are spread over at least `parallelism` tasks (the worker's pool size), so one task does not
    serialise what the pool could do at once, and at most `MAX_PER_TASK` rows go in one task. A failed
    publish raises, which rolls the claim back: the rows stay unsent for the next round (a chunk already
    published is then sent twice, which the idempotent tasks make harmless). A task may run
    before this transaction commits; marking its rows done then waits for the commit, which is short."""
    with rt.db.transaction() as conn:
        ids = outbox.claim_unsent(conn, limit)
        if not ids:
            return 0
        per_task = max(1, min(MAX_PER_TASK, math.ceil(len(ids) / max(1, parallelism))))
        rt.queue.publish(
            PROCESS_OUTBOX_BATCH, [[ids[i : i + per_task]] for i in range(0, len(ids), per_task)]
        )
        outbox.mark_sent(conn, ids)
    return len(ids)


class OutboxRelay:
    """`relay_once` in a loop on a daemon thread, woken by commits and polling every `POLL_SECONDS`."""

    def __init__(self, settings: Settings, parallelism: int = 1, poll_seconds: float = POLL_SECONDS) -> None:
        # A small pool of its own: the relay uses one connection at a time.
        self.rt = Runtime(settings.with_(pool_min=1, pool_max=2))
        self.parallelism = parallelism
        self.poll_seconds = poll_seconds
        assert settings.redis_url
        self._wakeups = RelayWakeups(settings.redis_url)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        self._thread.start()
        log.info("outbox relay started")

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(self.poll_seconds + timeout)  # at most one blocking wait and one round
        self._thread = None
        self._wakeups.close()
        self.rt.queue.close()
        self.rt.close()
        log.info("outbox relay stopped")

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = self._round()
            if sent >= CLAIM_LIMIT:
                continue  # a backlog: claim the next rows at once
            try:
                self._wakeups.wait(self.poll_seconds)
            except CacheUnavailable:
                self._stop.wait(self.poll_seconds)  # Redis is down: poll PostgreSQL at the same pace

    def _round(self) -> int:
        try:
            sent = relay_once(self.rt, self.parallelism)
        except Exception as exc:  # a dead broker or database must never kill the thread
            if not self._failing:
                log.warning("outbox relay cannot send (%s); it keeps retrying", type(exc).__name__)
            self._failing = True
            return 0
        if self._failing:
            log.info("outbox relay sends again")
            self._failing = False
        return sent
