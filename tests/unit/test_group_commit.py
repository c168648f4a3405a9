"""GroupCommit: every caller returns only once its own rows are flushed, each row is flushed exactly once,
concurrent callers share flushes, and one bad record fails only its own caller.

The flush here is a plain function recording what it was given; the real one (one INSERT into
`lookups`) is exercised against PostgreSQL by tests/integration/test_audit_group_commit.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import Unavailable
from ledger.storage.group_commit import GroupCommit


class Recorder:
    def __init__(self, delay: float = 0.0, bad: frozenset[int] = frozenset(), down: bool = False) -> None:
        self.flushed: list[list[int]] = []
        self.lock = threading.Lock()
        self.delay = delay
        self.bad = bad
        self.down = down

    def __call__(self, rows: Sequence[dict[str, Any]]) -> None:
        ids = [r["n"] for r in rows]
        time.sleep(self.delay)  # a round trip: lets other callers queue behind this flush
        if self.down:
            raise Unavailable("the database is unavailable; retry shortly")
        if self.bad & set(ids):
            raise ValueError("a bad record")
        with self.lock:
            self.flushed.append(ids)

    def all_rows(self) -> list[int]:
        with self.lock:
            return [n for batch in self.flushed for n in batch]


def run_concurrently(writer: GroupCommit, recorder: Recorder, groups: list[list[int]]) -> dict[int, Any]:
    """Each group of row numbers written by its own thread; returns what each thread saw."""
    outcome: dict[int, Any] = {}
    start = threading.Barrier(len(groups))

    def call(index: int, ids: list[int]) -> None:
        start.wait()
        try:
            writer.write([{"n": n} for n in ids])
        except Exception as exc:
            outcome[index] = exc
            return
        # Returned: its rows must already be flushed.
        outcome[index] = set(ids) <= set(recorder.all_rows())

    threads = [threading.Thread(target=call, args=(i, ids)) for i, ids in enumerate(groups)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcome


def test_a_lone_write_is_flushed_at_once() -> None:
    recorder = Recorder()
    writer = GroupCommit(recorder)
    writer.write([{"n": 1}, {"n": 2}])
    assert recorder.flushed == [[1, 2]]
    writer.write([])
    assert recorder.flushed == [[1, 2]]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=24), st.integers(1, 8))
def test_concurrent_writes_share_flushes_and_each_row_is_flushed_once(
    sizes: list[int], max_rows: int
) -> None:
    recorder = Recorder(delay=0.002)
    writer = GroupCommit(recorder, max_rows=max_rows)
    groups, n = [], 0
    for size in sizes:
        groups.append(list(range(n, n + size)))
        n += size
    outcome = run_concurrently(writer, recorder, groups)
    assert outcome == dict.fromkeys(range(len(groups)), True)
    assert sorted(recorder.all_rows()) == list(range(n))
    # A caller's rows stay together, and a batch exceeds max_rows only to hold one caller's rows.
    for batch in recorder.flushed:
        assert len(batch) <= max(max_rows, 4)
    assert writer.records == n


def test_many_callers_need_fewer_flushes_than_callers() -> None:
    recorder = Recorder(delay=0.01)
    writer = GroupCommit(recorder)
    outcome = run_concurrently(writer, recorder, [[i] for i in range(16)])
    assert all(outcome.values())
    assert len(recorder.flushed) < 16
    assert writer.batches == len(recorder.flushed)


def test_a_bad_record_fails_only_its_own_caller() -> None:
    recorder = Recorder(delay=0.005, bad=frozenset({7}))
    writer = GroupCommit(recorder)
    outcome = run_concurrently(writer, recorder, [[i] for i in range(12)])
    assert isinstance(outcome[7], ValueError)
    assert all(outcome[i] is True for i in range(12) if i != 7)
    assert sorted(recorder.all_rows()) == [i for i in range(12) if i != 7]


def test_an_outage_fails_every_caller_and_nothing_is_flushed() -> None:
    recorder = Recorder(delay=0.005, down=True)
    writer = GroupCommit(recorder)
    outcome = run_concurrently(writer, recorder, [[i] for i in range(6)])
    assert all(isinstance(v, Unavailable) for v in outcome.values())
    assert recorder.flushed == []
    recorder.down = False
    writer.write([{"n": 99}])  # the writer recovers with the database
    assert recorder.flushed == [[99]]


def test_a_flush_that_raises_something_unexpected_releases_the_waiters() -> None:
    calls = []

    def flush(rows: Sequence[dict[str, Any]]) -> None:
        calls.append(len(rows))
        raise KeyboardInterrupt if len(calls) == 1 else ValueError("x")

    writer = GroupCommit(flush)
    with pytest.raises(KeyboardInterrupt):
        writer.write([{"n": 1}])
    with pytest.raises(ValueError, match="x"):
        writer.write([{"n": 2}])
