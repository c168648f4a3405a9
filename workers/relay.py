"""The outbox relay's thread: `relay_once` (ledger/services/relay.py) in a loop, in the worker.

It runs as a daemon thread in the main process of every `ledger worker`, started and stopped by a
bootstep in workers/app.py, so every deployment that processes work also relays it, with nothing new to
supervise. It lives here, beside the Celery app, because it is part of what a worker process is, as the
pool is: the API, the CLI and beat never run it. It opens its own Runtime, never the worker's per-process
one, which forked pool processes would otherwise inherit.

Between rounds it blocks on the wake-up list the API pushes after each commit, or at most `POLL_SECONDS`;
with Redis down it polls PostgreSQL at that pace.
"""

from __future__ import annotations

import logging
import threading

from ledger.config import Settings
from ledger.errors import CacheUnavailable
from ledger.services.relay import CLAIM_LIMIT, relay_once
from ledger.services.runtime import Runtime
from ledger.storage.pending_work import RelayWakeups

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0


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
