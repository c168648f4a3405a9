"""The transactional outbox: nothing is lost between the ledger and the workers.

A report commits its outbox row with the incident, and the API publishes no task: it only wakes the
outbox relay that every `ledger worker` runs, which sends the row. So the row survives a broker that is
down when the API answers 201, and the relay (polling), the sweep (the beat task) or `ledger outbox
flush` gets it scored once the broker is back. Delivering the same outbox task twice must change
nothing, two relays or two sweeps running at once must not send a row twice (FOR UPDATE SKIP LOCKED),
and the CLI twins of the periodic jobs (`ledger rescore`, `ledger cache rebuild`) must do their job
synchronously.

Broker outages use a private redis-server that each test starts and kills, never the shared one. The
tests run on the session database (`isolated_settings`), which no worker watches.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from ledger import create_app
from ledger.config import Settings
from ledger.services import outbox_work
from ledger.services import platforms as platform_service
from ledger.services.relay import relay_once
from ledger.services.runtime import Runtime
from ledger.storage import outbox
from ledger.storage.decision_cache import SEQ_WIDTH, TOKEN_KEY
from ledger.storage.pending_work import RELAY_WAKE_KEY
from ledger.storage.queue import PROCESS_OUTBOX, PROCESS_OUTBOX_BATCH
from tests.private_services import REDIS_PORTS, RedisServer, free_port
from tests.support import (
    Member,
    WorkerProcess,
    ledger_json,
    lookup,
    report,
    stored_token,
    wait_for,
)
from workers.relay import OutboxRelay

PHONE = {"type": "phone", "value": "13800138000"}
EMAIL = {"type": "email", "value": "other-buyer@example.com"}
QUEUE = "ledger"  # kombu's Redis transport keeps the queue as a list under its name


# Every test here starts a private broker, a worker or the relay's own processes.
pytestmark = pytest.mark.process


def token_of(identifier: dict[str, str]) -> str:
    return stored_token(identifier["type"], identifier["value"])


class PrivateRedis(RedisServer):
    """A private redis-server (see tests/private_services.py) that can also list its queued tasks."""

    def queued_tasks(self) -> list[tuple[str, Any]]:
        """(task name, first argument) of each message waiting in the queue."""
        tasks = []
        for raw in self.client().lrange(QUEUE, 0, -1):
            message = json.loads(raw)
            args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            tasks.append((message["headers"]["task"], args[0]))
        return tasks

    def queued_outbox_ids(self) -> list[int]:
        """The outbox ids of the messages waiting in the queue, single (sweep) or batched (relay)."""
        ids = []
        for name, first in self.queued_tasks():
            assert name in (PROCESS_OUTBOX, PROCESS_OUTBOX_BATCH)
            ids.extend([int(first)] if name == PROCESS_OUTBOX else [int(i) for i in first])
        return sorted(ids)


@dataclass
class Stack:
    """An app, runtime and client whose broker and cache are the private redis (or a closed port)."""

    settings: Settings
    rt: Runtime
    client: Any
    member: Member


def build_stack(settings: Settings, redis_url: str) -> Stack:
    private = replace(settings, redis_url=redis_url)
    application = create_app(private)
    application.config["TESTING"] = True
    rt: Runtime = application.extensions["ledger.runtime"]
    issued = platform_service.create_platform(rt, "alpha", "Alpha", "report,lookup")
    return Stack(private, rt, application.test_client(), Member("alpha", issued.key, issued.key_id))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def stack(isolated_settings: Settings, broker: PrivateRedis) -> Iterator[Stack]:
    built = build_stack(isolated_settings, broker.url)
    yield built
    built.rt.close()


@pytest.fixture
def unreachable(isolated_settings: Settings) -> Iterator[Stack]:
    """A stack whose REDIS_URL is a port nobody listens on: no broker and no cache."""
    built = build_stack(isolated_settings, f"redis://127.0.0.1:{free_port(REDIS_PORTS)}/0")
    yield built
    built.rt.close()


@dataclass
class Shared:
    """An API on the same database, with the shared Redis the CLI writes to, and a lookup-only member."""

    rt: Runtime
    client: Any
    beta: Member


@pytest.fixture
def shared(isolated_settings: Settings) -> Iterator[Shared]:
    application = create_app(isolated_settings)
    application.config["TESTING"] = True
    rt: Runtime = application.extensions["ledger.runtime"]
    issued = platform_service.create_platform(rt, "beta", "Beta", "lookup")
    yield Shared(rt, application.test_client(), Member("beta", issued.key, issued.key_id))
    rt.close()


def outbox_rows(rt: Runtime) -> list[dict[str, Any]]:
    with rt.db.transaction() as conn:
        return conn.execute("SELECT id, sent_at, attempts, done_at FROM outbox ORDER BY id").fetchall()


def age_outbox(rt: Runtime) -> None:
    """Move every row past the sweep's grace period instead of sleeping through it."""
    with rt.db.transaction() as conn:
        conn.execute(
            "UPDATE outbox SET created_at = created_at - interval '1 minute', sent_at = sent_at - interval '1 minute'"
        )


def ledger_state(rt: Runtime) -> dict[str, Any]:
    """Everything a duplicate delivery could duplicate or change."""
    with rt.db.transaction() as conn:
        counts = conn.execute(
            """SELECT (SELECT count(*) FROM subjects) AS subjects,
                      (SELECT count(*) FROM identity_links) AS links,
                      (SELECT count(*) FROM incidents) AS incidents,
                      (SELECT count(*) FROM risk_scores) AS scores,
                      (SELECT count(*) FROM ledger_events) AS events"""
        ).fetchone()
        rows = conn.execute(
            "SELECT subject_id, score, tier, reasons, incidents, platforms, computed_from_seq FROM risk_scores"
        ).fetchall()
    return {"counts": counts, "scores": rows}


def cached(rt: Runtime, identifier: dict[str, str]) -> tuple[int, dict[str, Any]] | None:
    raw = rt.cache.client.get(TOKEN_KEY + token_of(identifier))
    return (int(raw[:SEQ_WIDTH]), json.loads(raw[SEQ_WIDTH:])) if raw else None


# -- the relay -----------------------------------------------------------------------------------------
def run_together(target: Callable[[Runtime], None], runtimes: list[Runtime]) -> None:
    """One thread per runtime, as separate relay or beat processes would race; returns when all are done."""
    threads = [threading.Thread(target=target, args=(rt,)) for rt in runtimes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_the_api_publishes_nothing_and_a_worker_relays_and_scores_the_report(
    stack: Stack, broker: PrivateRedis
) -> None:
    report(stack.client, stack.member, "order-1")
    (row,) = outbox_rows(stack.rt)
    assert (row["sent_at"], row["attempts"], row["done_at"]) == (None, 0, None)
    assert broker.queued_tasks() == []  # no task from the API: only the relay's wake-up
    assert broker.client().lrange(RELAY_WAKE_KEY, 0, -1) == [b"1"]
    assert lookup(stack.client, stack.member, PHONE)["stale"] is True

    worker = WorkerProcess(stack.settings, concurrency=1).start()  # no beat: no sweep runs
    try:
        result = wait_for(lambda: (r := lookup(stack.client, stack.member, PHONE))["stale"] is False and r)
        assert result["summary"]["incidents"] == 1
        assert result["decision"]["score"] > 0
        wait_for(lambda: outbox_rows(stack.rt)[0]["done_at"] is not None)
        (row,) = outbox_rows(stack.rt)
        assert row["sent_at"] is not None
        assert row["attempts"] == 1  # sent once, by the relay

    finally:
        worker.stop()
    assert "outbox relay started" in worker.log.read_text()
    assert "outbox relay stopped" in worker.log.read_text()


def test_the_relay_is_woken_by_a_commit_and_polls_for_what_it_missed(
    stack: Stack, broker: PrivateRedis
) -> None:
    poll = 6.0
    relay = OutboxRelay(stack.settings, poll_seconds=poll)
    relay.start()
    try:
        time.sleep(0.3)  # the relay has looked once and is now blocked on the wake-up list
        report(stack.client, stack.member, "order-1")
        # Sent before the relay's next poll could come, so the commit's wake-up did it.
        wait_for(lambda: len(broker.queued_outbox_ids()) == 1, timeout=poll - 2, interval=0.01)
        assert not broker.client().exists(RELAY_WAKE_KEY)

        # A committed row whose wake-up never came (the API's Redis call failed after commit).
        with stack.rt.db.transaction() as conn:
            missed = outbox.add(conn, PROCESS_OUTBOX, {"subjects": []})
        wait_for(lambda: missed in broker.queued_outbox_ids(), timeout=poll + 4)

        # The broker dies: reports are still accepted, and the relay keeps trying without sending.
        broker.kill()
        report(stack.client, stack.member, "order-2", identifiers=[EMAIL])
        time.sleep(1.5)
        row = outbox_rows(stack.rt)[-1]
        assert (row["sent_at"], row["attempts"]) == (None, 0)
        broker.start()  # back, and empty: it lost the two messages sent before
        wait_for(lambda: broker.queued_outbox_ids() == [int(row["id"])], timeout=poll + 4)
    finally:
        relay.stop()
    assert [r["attempts"] for r in outbox_rows(stack.rt)] == [1, 1, 1]


def test_a_report_accepted_while_the_broker_is_down_is_scored_once_it_is_back(
    stack: Stack, broker: PrivateRedis
) -> None:
    """A running worker, its broker killed and restarted empty: no process is restarted, no sweep runs."""
    worker = WorkerProcess(stack.settings, concurrency=1).start()
    try:
        broker.kill()
        created = report(stack.client, stack.member, "order-1")
        assert created["status"] == "active"
        during = lookup(stack.client, stack.member, PHONE)  # answered from PostgreSQL, said to lag behind
        assert during["stale"] is True
        assert during["summary"]["incidents"] == 0
        time.sleep(1.5)
        assert outbox_rows(stack.rt)[0]["sent_at"] is None

        broker.start()
        result = wait_for(
            lambda: (r := lookup(stack.client, stack.member, PHONE))["summary"]["incidents"] == 1 and r,
            timeout=40,
        )
        assert result["decision"]["score"] > 0
        assert result["stale"] is False
        wait_for(lambda: outbox_rows(stack.rt)[0]["done_at"] is not None)
        assert outbox_rows(stack.rt)[0]["attempts"] == 1
    finally:
        worker.stop()


def test_two_relays_never_send_a_row_twice(stack: Stack, broker: PrivateRedis) -> None:
    for i in range(40):
        report(
            stack.client,
            stack.member,
            f"order-{i}",
            identifiers=[{"type": "phone", "value": f"1390000{i:04d}"}],
        )
    ids = [int(r["id"]) for r in outbox_rows(stack.rt)]
    runtimes = [Runtime(stack.settings), Runtime(stack.settings)]
    sent: list[int] = []
    try:
        # A first relay has claimed (and locked) three rows but not yet committed; a second one neither
        # waits for it nor sends those rows.
        with runtimes[0].db.transaction() as conn:
            held = outbox.claim_unsent(conn, 3)
            assert held == ids[:3]
            sent.append(relay_once(runtimes[1], parallelism=2, limit=5))
            assert sent == [5]
            conn.rollback()  # as when its publish fails: the rows stay unsent

        # Both relays race, in small claims, until nothing is left.
        barrier = threading.Barrier(len(runtimes))

        def relay(rt: Runtime) -> None:
            barrier.wait()
            while n := relay_once(rt, parallelism=2, limit=4):
                sent.append(n)

        run_together(relay, runtimes)
    finally:
        for rt in runtimes:
            rt.close()
    assert sum(sent) == len(ids)
    assert broker.queued_outbox_ids() == ids  # each row in exactly one message
    assert [r["attempts"] for r in outbox_rows(stack.rt)] == [1] * len(ids)
    tasks = broker.queued_tasks()
    assert {name for name, _ in tasks} == {PROCESS_OUTBOX_BATCH}
    assert max(len(batch) for _, batch in tasks) <= 3  # each claim is spread over the pool's 2 processes


def test_a_report_to_an_unreachable_broker_is_scored_by_outbox_flush(
    unreachable: Stack, shared: Shared, isolated_settings: Settings
) -> None:
    report(unreachable.client, unreachable.member, "order-1")
    report(unreachable.client, unreachable.member, "order-2", identifiers=[EMAIL])
    assert [r["done_at"] for r in outbox_rows(unreachable.rt)] == [None, None]
    # `ledger outbox flush` processes the pending rows in its own process, no broker needed.
    assert ledger_json(isolated_settings, "outbox", "flush") == {"processed": 2}
    assert all(r["done_at"] is not None for r in outbox_rows(unreachable.rt))
    for identifier in (PHONE, EMAIL):
        result = lookup(shared.client, shared.beta, identifier)  # the shared Redis the CLI wrote to
        assert result["summary"]["incidents"] == 1
        assert result["decision"]["score"] > 0
    assert ledger_json(isolated_settings, "outbox", "flush") == {"processed": 0}


# -- duplicate delivery ------------------------------------------------------------------------------
def test_duplicate_delivery_changes_nothing(stack: Stack, broker: PrivateRedis) -> None:
    report(stack.client, stack.member, "order-1", identifiers=[PHONE, EMAIL])
    (row,) = outbox_rows(stack.rt)
    outbox_id = int(row["id"])
    assert broker.queued_outbox_ids() == []  # the API sends nothing; no worker (and so no relay) runs yet
    assert relay_once(stack.rt) == 1
    assert broker.queued_tasks() == [(PROCESS_OUTBOX_BATCH, [outbox_id])]

    assert outbox_work.process_outbox(stack.rt, outbox_id) == "done"
    first = ledger_state(stack.rt)
    first_cache = cached(stack.rt, PHONE)
    assert first["counts"]["subjects"] == 1
    assert first["counts"]["links"] == 2
    assert len(first["scores"]) == 1
    assert outbox_work.process_outbox(stack.rt, outbox_id) == "already-done"

    # A redelivery after a crash between scoring and marking done runs the whole body again,
    # and so do two deliveries racing each other.
    for parallel in (1, 2):
        with stack.rt.db.transaction() as conn:
            conn.execute("UPDATE outbox SET done_at = NULL WHERE id = %s", (outbox_id,))
        barrier = threading.Barrier(parallel)
        results: list[str] = []

        def deliver(barrier: threading.Barrier, results: list[str]) -> None:
            barrier.wait()
            results.append(outbox_work.process_outbox(stack.rt, outbox_id))

        threads = [threading.Thread(target=deliver, args=(barrier, results)) for _ in range(parallel)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert "done" in results
        assert ledger_state(stack.rt) == first
        again = cached(stack.rt, PHONE)
        assert again is not None
        assert first_cache is not None
        assert (again[0], again[1]["s"], again[1]["score"], again[1]["n"]) == (
            first_cache[0],
            first_cache[1]["s"],
            first_cache[1]["score"],
            first_cache[1]["n"],
        )

    # The single-id task (the sweep's) sent twice more, and the relay's message, all reach a real worker.
    assert stack.rt.queue.send("ledger.process_outbox", outbox_id)
    assert stack.rt.queue.send("ledger.process_outbox", outbox_id)
    assert broker.queued_outbox_ids() == [outbox_id] * 3
    worker = WorkerProcess(stack.settings, concurrency=2).start()
    try:
        wait_for(lambda: broker.client().llen(QUEUE) == 0 and not broker.client().hlen("unacked"))
    finally:
        worker.stop()
    assert ledger_state(stack.rt) == first
    result = lookup(stack.client, stack.member, EMAIL)
    assert result["summary"]["incidents"] == 1
    assert result["decision"]["score"] == first["scores"][0]["score"]


# -- concurrent sweeps -------------------------------------------------------------------------------
def pending_reports(stack: Stack, broker: PrivateRedis, n: int) -> list[int]:
    """n reports accepted while the broker was down; the broker is back (empty) when this returns."""
    broker.kill()
    for i in range(n):
        report(
            stack.client,
            stack.member,
            f"order-{i}",
            identifiers=[{"type": "phone", "value": f"1390000{i:04d}"}],
        )
    broker.start()
    age_outbox(stack.rt)
    rows = outbox_rows(stack.rt)
    assert all(r["sent_at"] is None and r["done_at"] is None for r in rows)
    return [int(r["id"]) for r in rows]


def test_a_sweep_skips_rows_another_sweep_holds(stack: Stack, broker: PrivateRedis) -> None:
    ids = pending_reports(stack, broker, 6)
    assert broker.queued_outbox_ids() == []
    # A first sweep has selected (and locked) two rows but not yet committed.
    with stack.rt.db.transaction() as conn:
        held = [int(r["id"]) for r in outbox.due(conn, stack.rt.settings.outbox_grace_seconds, limit=2)]
        assert held == ids[:2]
        # A second sweep neither waits for it nor sends those rows.
        assert outbox_work.sweep_outbox(stack.rt) == 4
        assert broker.queued_outbox_ids() == ids[2:]
        outbox.mark_sent(conn, held)
    for outbox_id in held:
        assert stack.rt.queue.send("ledger.process_outbox", outbox_id)
    assert broker.queued_outbox_ids() == ids
    assert [r["attempts"] for r in outbox_rows(stack.rt)] == [1] * len(ids)
    # Within the grace period nothing is due again.
    assert outbox_work.sweep_outbox(stack.rt) == 0


def test_two_concurrent_sweeps_send_each_row_once(stack: Stack, broker: PrivateRedis) -> None:
    ids = pending_reports(stack, broker, 40)
    runtimes = [Runtime(stack.settings), Runtime(stack.settings)]
    barrier = threading.Barrier(len(runtimes))
    sent: list[int] = []

    def sweep(rt: Runtime) -> None:
        barrier.wait()
        sent.append(outbox_work.sweep_outbox(rt, limit=15))  # small batches: the sweeps interleave

    try:
        for _ in range(3):
            run_together(sweep, runtimes)
    finally:
        for rt in runtimes:
            rt.close()
    assert sum(sent) == len(ids)
    assert broker.queued_outbox_ids() == ids
    assert [r["attempts"] for r in outbox_rows(stack.rt)] == [1] * len(ids)


# -- CLI twins -----------------------------------------------------------------------------------------
def test_rescore_all_and_cache_rebuild_from_the_cli(
    unreachable: Stack, shared: Shared, isolated_settings: Settings
) -> None:
    """Reports accepted with no broker are never linked nor scored until an operator runs the twins."""
    settings, rt, client, beta = isolated_settings, shared.rt, shared.client, shared.beta
    report(unreachable.client, unreachable.member, "order-1")
    report(unreachable.client, unreachable.member, "order-2", category="false_damage_claim")
    report(unreachable.client, unreachable.member, "order-3", identifiers=[EMAIL])
    with rt.db.transaction() as conn:
        assert conn.execute("SELECT count(*) AS n FROM risk_scores").fetchone()["n"] == 0  # type: ignore[index]

    assert ledger_json(settings, "rescore", "--all") == {"rescored": 2}
    by_phone = lookup(client, beta, PHONE)
    by_email = lookup(client, beta, EMAIL)
    assert (by_phone["summary"]["incidents"], by_email["summary"]["incidents"]) == (2, 1)
    assert by_phone["decision"]["score"] > by_email["decision"]["score"] > 0
    phone_entry = cached(rt, PHONE)
    assert phone_entry is not None

    # Rescoring one subject by its token gives the same answer.
    assert ledger_json(settings, "rescore", "--subject", token_of(PHONE)) == {"rescored": 1}
    assert lookup(client, beta, PHONE)["decision"]["score"] == by_phone["decision"]["score"]

    # The cache is lost; `ledger cache rebuild` writes every stored score back from PostgreSQL.
    rt.cache.clear_decisions()
    assert cached(rt, PHONE) is None
    assert cached(rt, EMAIL) is None
    rebuilt = ledger_json(settings, "cache", "rebuild")
    assert rebuilt == {"tokens_written": 2}
    for identifier, expected in ((PHONE, by_phone), (EMAIL, by_email)):
        entry = cached(rt, identifier)
        assert entry is not None
        assert (entry[1]["score"], entry[1]["n"], entry[1]["tier"]) == (
            expected["decision"]["score"],
            expected["summary"]["incidents"],
            expected["decision"]["tier"],
        )
    assert lookup(client, beta, PHONE)["decision"]["score"] == by_phone["decision"]["score"]
