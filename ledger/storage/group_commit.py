"""Group commit: the audit records of concurrent requests in one statement and one commit.

Every answered lookup waits for its own audit record to be durable before the answer leaves
(docs/audit.md). One commit per lookup makes PostgreSQL parse, plan, execute and flush the WAL once per
answer, and makes each request pay a round trip of its own. Here the request threads of a process hand
their records to whichever of them is writing; that one writes everything queued so far in one multi-row
INSERT on an autocommit connection (one round trip, one WAL flush) and then releases every request whose
record was in it. Requests that arrive while a write is in flight queue up and go together in the next
one, so the batch grows with the load and a lone request still writes at once, with no timer.

There is no writer thread: the leader is a request thread (the first one to find nobody writing), so
nothing is left to start after fork or stop on shutdown, and a killed process takes with it only
requests that were never answered. A failed write is retried record by record when the batch held more
than one request, so one bad record cannot fail its neighbours; a database outage fails them all, as it
would have failed each of them alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from ledger.errors import Unavailable

Rows = Sequence[dict[str, Any]]


class _Entry:
    __slots__ = ("done", "error", "rows")

    def __init__(self, rows: Rows) -> None:
        self.rows = rows
        self.done = False
        self.error: BaseException | None = None


class GroupCommit:
    """`write(rows)` returns once `rows` are durable, sharing the commit with concurrent callers.

    `flush(rows)` must write all the rows it is given atomically and durably, or raise."""

    def __init__(self, flush: Callable[[Rows], None], max_rows: int = 1000) -> None:
        self._flush = flush
        self._max_rows = max_rows
        self._cond = threading.Condition()
        self._queue: list[_Entry] = []
        self._writing = False
        self.batches = 0  # statements written, for tests and benchmarks
        self.records = 0

    def write(self, rows: Rows) -> None:
        if not rows:
            return
        entry = _Entry(rows)
        with self._cond:
            self._queue.append(entry)
            while not entry.done:
                if self._writing:
                    self._cond.wait()
                    continue
                # Nobody is writing and ours is still queued: lead a batch (ours is in it unless the
                # queue ahead of it is over `max_rows`; then we lead again).
                self._writing = True
                batch = self._take()
                self._cond.release()
                try:
                    self._write_batch(batch)
                finally:
                    self._cond.acquire()
                    for queued in batch:
                        queued.done = True
                    self._writing = False
                    self._cond.notify_all()
        if entry.error is not None:
            raise entry.error

    def _take(self) -> list[_Entry]:
        """The queued entries, oldest first, up to about `max_rows` rows (always at least one entry)."""
        taken, rows = 0, 0
        for queued in self._queue:
            if taken and rows + len(queued.rows) > self._max_rows:
                break
            taken += 1
            rows += len(queued.rows)
        batch, self._queue = self._queue[:taken], self._queue[taken:]
        return batch

    def _write_batch(self, batch: list[_Entry]) -> None:
        # Until a flush succeeds, every entry counts as failed: if the flush is interrupted by something
        # that is not an Exception, its callers must not believe their records were written.
        for queued in batch:
            queued.error = Unavailable("the audit record could not be written; retry shortly")
        try:
            self._flush([row for queued in batch for row in queued.rows])
        except Unavailable as exc:
            for queued in batch:
                queued.error = exc
            return
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
                return
        else:
            self._written(batch)
            return
        for queued in batch:  # isolate the failing record(s)
            try:
                self._flush(queued.rows)
            except Exception as exc:
                queued.error = exc
            else:
                self._written([queued])

    def _written(self, entries: list[_Entry]) -> None:
        for queued in entries:
            queued.error = None
        self.batches += 1
        self.records += sum(len(queued.rows) for queued in entries)
