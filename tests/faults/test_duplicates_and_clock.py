"""Duplicates and clocks: work delivered twice, reports retried, timestamps from the future, and two
schedulers running by mistake.

At-least-once delivery is the price of never losing work: the outbox sweep resends, a late-acked task
whose worker died runs again, a platform whose request timed out sends it again. Each of those must
change nothing the second time: no second incident, no second ledger event, no second subject for one
consumer, and scores equal to a from-scratch recompute. Time is the other source of duplicates and
gaps: an incident dated in the future is refused, and two `ledger beat` processes (the classic
deployment mistake) must not make the outbox sweep send a row twice or corrupt anything.
"""

from __future__ import annotations

import http.client
import json
import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from ledger.api.schemas import IncidentSchema
from ledger.services import incidents as incident_service
from ledger.services import outbox_work
from ledger.services.platforms import KeyResolver
from ledger.services.runtime import Runtime
from ledger.storage.queue import PROCESS_OUTBOX, TaskQueue
from tests.faults.support import (
    Http,
    Stack,
    count,
    email,
    half_written,
    lookup_body,
    phone,
    report_body,
    rows,
    score_mismatches,
    wait_settled,
)
from tests.private_services import REDIS_PORTS, RedisServer, free_port
from tests.support import Member, wait_for

PROBLEM = "application/problem+json"
ORPHAN_SUBJECTS = """SELECT count(*) FROM subjects s WHERE s.merged_into IS NULL
                     AND NOT EXISTS (SELECT 1 FROM incidents i WHERE i.subject_id = s.id)"""


def overlapping(batch: int, item: int) -> list[dict[str, str]]:
    """Consumers shared across batches; every fifth report also joins the next consumer."""
    consumer = (batch * 7 + item * 3) % 40
    found = [email(consumer)]
    if item % 5 == 0:
        found.append(phone(consumer + 1))
    return found


def assert_no_duplicates(database: str) -> None:
    """One `reported` event per incident and nothing else appended; no subject without incidents."""
    incidents = count(database, "SELECT count(*) FROM incidents")
    assert count(database, "SELECT count(*) FROM ledger_events") == incidents
    assert count(database, ORPHAN_SUBJECTS) == 0
    assert half_written(database) == []
    assert score_mismatches(database) == []


# -- duplicate delivery ------------------------------------------------------------------------------
@pytest.mark.timeout(150)
def test_the_same_task_delivered_three_times_at_once_changes_nothing(
    stack: Stack, private_redis: RedisServer
) -> None:
    database = stack.settings.database_url or ""
    members = [stack.member("alpha"), stack.member("beta")]
    _, api = stack.serve()
    for b in range(6):
        body = {"incidents": [report_body(f"dup-{b}-{i}", overlapping(b, i)) for i in range(30)]}
        reply = api.post("/v1/incidents/batch", body, members[b % 2])
        assert reply.status == 200, reply
        assert {r["status"] for r in reply.body["results"]} == {201}

    # No worker yet, so no relay: the API queues nothing. Queue three copies of each task, so a worker
    # with four processes runs the copies at the same moment; its relay sends each row a fourth time.
    broker = private_redis.client()
    outbox_ids = [int(r["id"]) for r in rows(database, "SELECT id FROM outbox ORDER BY id")]
    assert broker.llen("ledger") == 0
    queue = TaskQueue(private_redis.url)
    for outbox_id in outbox_ids:
        for _ in range(3):
            assert queue.send(PROCESS_OUTBOX, outbox_id)
    assert broker.llen("ledger") == 3 * len(outbox_ids)

    worker = stack.worker(concurrency=4)
    wait_settled(database, timeout=90)
    wait_for(lambda: broker.llen("ledger") == 0 and broker.hlen("unacked") == 0, timeout=60)

    assert count(database, "SELECT count(*) FROM incidents") == 6 * 30
    assert_no_duplicates(database)
    assert worker.problems() == []


def send_and_hang_up(api: Http, path: str, body: dict[str, Any], member: Member) -> None:
    """A client that times out: the whole request goes out, and the connection closes unread."""
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    try:
        conn.request(
            "POST", path, json.dumps(body).encode(), {"Content-Type": "application/json", **member.headers}
        )
    finally:
        conn.close()


@pytest.mark.timeout(120)
def test_a_report_retried_after_a_client_timeout_is_stored_and_scored_once(stack: Stack) -> None:
    database = stack.settings.database_url or ""
    alpha, beta = stack.member("alpha"), stack.member("beta")
    _, api = stack.serve()
    stack.worker()

    # Retried after giving up on the answer: the retry may overlap the original or replay it.
    body = report_body("retry-1", [email(1), phone(1)])
    send_and_hang_up(api, "/v1/incidents", body, alpha)
    second = api.post("/v1/incidents", body, alpha)
    assert second.status in (200, 201), second
    third = api.post("/v1/incidents", body, alpha)
    assert third.status == 200, third
    assert third.body == second.body

    # Eight identical retries in flight together: exactly one creates, the others replay it.
    body = report_body("retry-2", [email(2)])
    barrier = threading.Barrier(8)
    replies: list[Any] = []

    def retry() -> None:
        barrier.wait(timeout=30)
        replies.append(api.post("/v1/incidents", body, alpha))

    threads = [threading.Thread(target=retry) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(r.status for r in replies) == [200] * 7 + [201]
    assert len({r.body["id"] for r in replies}) == 1

    wait_settled(database)
    for external_id in ("retry-1", "retry-2"):
        assert count(database, "SELECT count(*) FROM incidents WHERE external_id = %s", (external_id,)) == 1
    assert_no_duplicates(database)
    for n in (1, 2):
        looked_up = api.post("/v1/lookups", lookup_body(email(n)), beta)
        assert looked_up.status == 200, looked_up
        assert looked_up.body["summary"]["incidents"] == 1
        assert looked_up.body["stale"] is False


# -- clock -------------------------------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_a_report_dated_in_the_future_is_refused_with_422_and_leaves_no_trace(stack: Stack) -> None:
    database = stack.settings.database_url or ""
    alpha = stack.member("alpha")
    _, api = stack.serve(workers=1)
    now = datetime.now(UTC)

    tomorrow = {**report_body("future-1", [email(1)]), "occurred_at": (now + timedelta(days=1)).isoformat()}
    refused = api.post("/v1/incidents", tomorrow, alpha)
    assert refused.status == 422, refused
    assert refused.headers["content-type"].startswith(PROBLEM)
    assert "occurred_at" in refused.body["errors"]

    # Two hours ahead, written in UTC-12: its wall-clock reading is ten hours behind UTC's, but the
    # instant is still in the future.
    west = (now + timedelta(hours=2)).astimezone(timezone(timedelta(hours=-12)))
    assert west.replace(tzinfo=None) < now.replace(tzinfo=None)
    later = {**report_body("future-2", [email(2)]), "occurred_at": west.isoformat()}
    assert api.post("/v1/incidents", later, alpha).status == 422

    # In a batch only the future item is refused.
    batch = {"incidents": [{**tomorrow, "external_id": "future-3"}, report_body("past-1", [email(3)])]}
    reply = api.post("/v1/incidents/batch", batch, alpha)
    assert reply.status == 200, reply
    assert [r["status"] for r in reply.body["results"]] == [422, 201]

    assert [r["external_id"] for r in rows(database, "SELECT external_id FROM incidents")] == ["past-1"]
    assert count(database, "SELECT count(*) FROM ledger_events") == 1
    assert count(database, "SELECT count(*) FROM outbox") == 1


def report_offline(stack: Stack, member: Member, prefix: str, batches: int) -> None:
    """Report through a Runtime whose broker is down: the outbox rows commit, their tasks are never
    sent, and only the sweep can get them done."""
    offline = Runtime(stack.settings.with_(redis_url=f"redis://127.0.0.1:{free_port(REDIS_PORTS)}/0"))
    try:
        principal = KeyResolver(offline).resolve(f"Bearer {member.key}")
        schema = IncidentSchema()
        for b in range(batches):
            items = [schema.load(report_body(f"{prefix}-{b}-{i}", overlapping(b, i))) for i in range(10)]
            outcomes = incident_service.report(offline, principal, items)
            assert {o.created for o in outcomes} == {True}, outcomes
    finally:
        offline.close()


@pytest.mark.timeout(150)
def test_two_beat_processes_by_mistake_send_each_row_once_and_leave_the_ledger_correct(
    stack: Stack, private_redis: RedisServer
) -> None:
    database = stack.settings.database_url or ""
    alpha, beta = stack.member("alpha"), stack.member("beta")
    broker = private_redis.client()

    # Two sweeps at the same moment, each with its own connections: each due row is sent exactly once.
    report_offline(stack, alpha, "swept", 6)
    wait_for(
        lambda: (
            count(database, "SELECT count(*) FROM outbox WHERE created_at < now() - interval '1.2 s'") == 6
        )
    )
    barrier = threading.Barrier(2)
    sent: list[int] = []

    def sweep() -> None:
        rt = Runtime(stack.settings)  # outbox_grace_seconds=1
        try:
            barrier.wait(timeout=30)
            sent.append(outbox_work.sweep_outbox(rt))
        finally:
            rt.close()

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sum(sent) == 6
    assert broker.llen("ledger") == 6
    assert {r["attempts"] for r in rows(database, "SELECT attempts FROM outbox")} == {1}

    # Two `ledger beat` processes and a worker; more rows that only a sweep can deliver.
    report_offline(stack, beta, "stranded", 6)
    worker = stack.worker(concurrency=2)
    beats = [stack.beat(), stack.beat()]
    wait_settled(database, timeout=90)
    # Let each beat sweep the settled ledger at least twice more.
    wait_for(lambda: all(b.log().count("Sending due task outbox-sweep") >= 2 for b in beats), timeout=60)
    wait_for(lambda: broker.llen("ledger") == 0 and broker.hlen("unacked") == 0, timeout=30)

    assert count(database, "SELECT count(*) FROM incidents") == 12 * 10
    assert_no_duplicates(database)
    assert worker.problems() == []
    assert [b.problems() for b in beats] == [[], []]
