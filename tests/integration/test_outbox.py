"""The transactional outbox: nothing is lost between the ledger and the workers.

A report commits its outbox row with the incident, so it survives a broker that is down when the API
answers 201; the sweep (the beat task, or `ledger outbox flush`) gets it scored once the broker is
back. Delivering the same outbox task twice must change nothing, two sweeps running at once must not
send a row twice (FOR UPDATE SKIP LOCKED), and the CLI twins of the periodic jobs (`ledger rescore`,
`ledger cache rebuild`) must do their job synchronously.

Broker outages use a private redis-server that each test starts and kills, never the shared one.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from ledger import create_app
from ledger.config import Settings
from ledger.identity import tokenize
from ledger.services import platforms as platform_service
from ledger.services import scoring
from ledger.services.runtime import Runtime
from ledger.storage import outbox
from ledger.storage.cache import SEQ_WIDTH, TOKEN_KEY
from tests.conftest import (
    IDENTITY_KEY,
    Member,
    WorkerProcess,
    incident_body,
    ledger_json,
    wait_for,
)
from tests.private_services import REDIS_PORTS, RedisServer, free_port

PHONE = {"type": "phone", "value": "13800138000"}
EMAIL = {"type": "email", "value": "other-buyer@example.com"}
QUEUE = "ledger"  # kombu's Redis transport keeps the queue as a list under its name


def token_of(identifier: dict[str, str]) -> str:
    return tokenize(identifier["type"], identifier["value"], IDENTITY_KEY)


class PrivateRedis(RedisServer):
    """A private redis-server (see tests/private_services.py) that can also list its queued tasks."""

    def queued_outbox_ids(self) -> list[int]:
        """The outbox ids of the `ledger.process_outbox` messages waiting in the queue."""
        ids = []
        for raw in self.client().lrange(QUEUE, 0, -1):
            message = json.loads(raw)
            args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            assert message["headers"]["task"] == "ledger.process_outbox"
            ids.append(int(args[0]))
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
def stack(settings: Settings, clean: None, broker: PrivateRedis) -> Iterator[Stack]:
    built = build_stack(settings, broker.url)
    yield built
    built.rt.close()


@pytest.fixture
def unreachable(settings: Settings, clean: None) -> Iterator[Stack]:
    """A stack whose REDIS_URL is a port nobody listens on: no broker and no cache."""
    built = build_stack(settings, f"redis://127.0.0.1:{free_port(REDIS_PORTS)}/0")
    yield built
    built.rt.close()


def report(stack: Stack, external_id: str, **overrides: Any) -> dict[str, Any]:
    response = stack.client.post(
        "/v1/incidents", json=incident_body(external_id, **overrides), headers=stack.member.headers
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def lookup(client: Any, member: Member, identifier: dict[str, str]) -> dict[str, Any]:
    response = client.post(
        "/v1/lookups", json={"identifiers": [identifier], "purpose": "refund_review"}, headers=member.headers
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


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


# -- a broker outage ---------------------------------------------------------------------------------
def test_a_report_accepted_while_the_broker_is_down_is_scored_after_the_sweep(
    stack: Stack, broker: PrivateRedis
) -> None:
    broker.kill()
    created = report(stack, "order-1")
    assert created["status"] == "active"
    (row,) = outbox_rows(stack.rt)
    assert row["done_at"] is None
    assert row["attempts"] == 0

    # Meanwhile a lookup answers from PostgreSQL and says that it may lag behind the ledger.
    during = lookup(stack.client, stack.member, PHONE)
    assert during["stale"] is True
    assert during["summary"]["incidents"] == 0

    broker.start()  # back, and empty: the message the API failed to send was never there
    worker = WorkerProcess(stack.settings, concurrency=1).start()
    try:
        age_outbox(stack.rt)
        assert scoring.sweep_outbox(stack.rt) == 1
        result = wait_for(
            lambda: (r := lookup(stack.client, stack.member, PHONE))["summary"]["incidents"] == 1 and r
        )
        assert result["decision"]["score"] > 0
        assert result["stale"] is False
        wait_for(lambda: outbox_rows(stack.rt)[0]["done_at"] is not None)
        assert outbox_rows(stack.rt)[0]["attempts"] == 1
    finally:
        worker.stop()


def test_a_report_to_an_unreachable_broker_is_scored_by_outbox_flush(
    unreachable: Stack, settings: Settings, client: Any, make_platform: Any
) -> None:
    report(unreachable, "order-1")
    report(unreachable, "order-2", identifiers=[EMAIL])
    assert [r["done_at"] for r in outbox_rows(unreachable.rt)] == [None, None]
    # `ledger outbox flush` processes the pending rows in its own process, no broker needed.
    assert ledger_json(settings, "outbox", "flush") == {"processed": 2}
    assert all(r["done_at"] is not None for r in outbox_rows(unreachable.rt))
    beta = make_platform("beta", "lookup")
    for identifier in (PHONE, EMAIL):
        result = lookup(client, beta, identifier)  # the shared Redis the CLI wrote to
        assert result["summary"]["incidents"] == 1
        assert result["decision"]["score"] > 0
    assert ledger_json(settings, "outbox", "flush") == {"processed": 0}


# -- duplicate delivery ------------------------------------------------------------------------------
def test_duplicate_delivery_changes_nothing(stack: Stack, broker: PrivateRedis) -> None:
    report(stack, "order-1", identifiers=[PHONE, EMAIL])
    (row,) = outbox_rows(stack.rt)
    outbox_id = int(row["id"])
    assert broker.queued_outbox_ids() == [outbox_id]  # sent after commit; no worker runs yet

    assert scoring.process_outbox(stack.rt, outbox_id) == "done"
    first = ledger_state(stack.rt)
    first_cache = cached(stack.rt, PHONE)
    assert first["counts"]["subjects"] == 1
    assert first["counts"]["links"] == 2
    assert len(first["scores"]) == 1
    assert scoring.process_outbox(stack.rt, outbox_id) == "already-done"

    # A redelivery after a crash between scoring and marking done runs the whole body again,
    # and so do two deliveries racing each other.
    for parallel in (1, 2):
        with stack.rt.db.transaction() as conn:
            conn.execute("UPDATE outbox SET done_at = NULL WHERE id = %s", (outbox_id,))
        barrier = threading.Barrier(parallel)
        results: list[str] = []

        def deliver(barrier: threading.Barrier, results: list[str]) -> None:
            barrier.wait()
            results.append(scoring.process_outbox(stack.rt, outbox_id))

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

    # The same task sent twice more, and the original message, all reach a real worker.
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
        report(stack, f"order-{i}", identifiers=[{"type": "phone", "value": f"1390000{i:04d}"}])
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
        assert scoring.sweep_outbox(stack.rt) == 4
        assert broker.queued_outbox_ids() == ids[2:]
        outbox.mark_sent(conn, held)
    for outbox_id in held:
        assert stack.rt.queue.send("ledger.process_outbox", outbox_id)
    assert broker.queued_outbox_ids() == ids
    assert [r["attempts"] for r in outbox_rows(stack.rt)] == [1] * len(ids)
    # Within the grace period nothing is due again.
    assert scoring.sweep_outbox(stack.rt) == 0


def test_two_concurrent_sweeps_send_each_row_once(stack: Stack, broker: PrivateRedis) -> None:
    ids = pending_reports(stack, broker, 40)
    runtimes = [Runtime(stack.settings), Runtime(stack.settings)]
    barrier = threading.Barrier(len(runtimes))
    sent: list[int] = []

    def sweep(rt: Runtime) -> None:
        barrier.wait()
        sent.append(scoring.sweep_outbox(rt, limit=15))  # small batches: the sweeps interleave

    try:
        for _ in range(3):
            threads = [threading.Thread(target=sweep, args=(rt,)) for rt in runtimes]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        for rt in runtimes:
            rt.close()
    assert sum(sent) == len(ids)
    assert broker.queued_outbox_ids() == ids
    assert [r["attempts"] for r in outbox_rows(stack.rt)] == [1] * len(ids)


# -- CLI twins -----------------------------------------------------------------------------------------
def test_rescore_all_and_cache_rebuild_from_the_cli(
    unreachable: Stack, settings: Settings, rt: Runtime, client: Any, make_platform: Any
) -> None:
    """Reports accepted with no broker are never linked nor scored until an operator runs the twins."""
    report(unreachable, "order-1")
    report(unreachable, "order-2", category="false_damage_claim")
    report(unreachable, "order-3", identifiers=[EMAIL])
    beta = make_platform("beta", "lookup")
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
