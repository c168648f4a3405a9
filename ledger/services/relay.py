"""The outbox relay: turns new outbox rows into Celery tasks, so the API never publishes one.

Why: a publish costs the publisher about 1 ms of CPU (kombu builds a Redis client per message, Celery
builds the message), a fifth of a report's CPU in the API. After commit the API now only flags the
tokens as pending and pushes a wake-up, in one Redis round trip (ledger/storage/pending_work.py). The
relay blocks on that wake-up, or at most `POLL_SECONDS`, then claims the rows never sent with
`FOR UPDATE SKIP LOCKED` (several relays never send a row twice), publishes them as a few
`ledger.process_outbox_batch` tasks on one long-lived producer, marks them sent and commits.

Failure cases:
- Redis down: the wake-up and the publish fail, the claim rolls back, and the relay keeps polling
  PostgreSQL every `POLL_SECONDS`; once Redis is back it sends everything that waited.
- A wake-up lost (a Redis error after commit, swallowed by the API): the next poll finds the row.
- The relay dies after commit but before a worker finished: the row is sent and not done, and the beat
  sweep sends it again after `LEDGER_OUTBOX_GRACE_SECONDS`, as a single-id `ledger.process_outbox`.

This module is the use case, one round (`relay_once`), a function of a Runtime like every service, so
tests and tools can run a round by hand. The thread that runs it in a loop is process machinery of the
worker and lives with it, in workers/relay.py.
"""

from __future__ import annotations

import math

from ledger.services.runtime import Runtime
from ledger.storage import outbox
from ledger.storage.queue import PROCESS_OUTBOX_BATCH

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
