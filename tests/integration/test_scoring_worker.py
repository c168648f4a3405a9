"""Scoring through a real Celery worker on real Redis and PostgreSQL.

These tests report incidents through the API and wait for a `ledger worker` subprocess to score them,
then read the result back through the lookup API (the Redis hot path) and from `risk_scores`. They cover
what issue 3 promises end to end: a score appears, retractions lower it, a second platform corroborates,
one platform alone is capped, strong identifiers link subjects transitively while a shared device does
not, concurrent reports converge, an out-of-order write never wins, and a killed worker loses nothing.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import psutil
import psycopg
import pytest
import redis

from ledger import create_app
from ledger.config import Settings
from ledger.domain.policy import load_policy
from ledger.identity import id_card_check_digit
from ledger.services import outbox_work, scoring
from ledger.services import platforms as platform_service
from ledger.services.runtime import Runtime
from ledger.storage import scores, subjects
from ledger.storage.decision_cache import SEQ_WIDTH, TOKEN_KEY
from tests.support import (
    Member,
    WorkerProcess,
    free_port,
    incident_body,
    lookup,
    report,
    stored_token,
    wait_for,
)

POLICY = load_policy()
PHONE = {"type": "phone", "value": "13800138000"}
EMAIL = {"type": "email", "value": "buyer@example.com"}
ID_CARD = {"type": "id_card", "value": "11010519491231002" + id_card_check_digit("11010519491231002")}
DEVICE = {"type": "device_id", "value": "device-shared-by-a-family"}


def phone(i: int) -> dict[str, str]:
    return {"type": "phone", "value": f"1390000{i:04d}"}


def token_of(identifier: dict[str, str]) -> str:
    return stored_token(identifier["type"], identifier["value"])


def codes(result: dict[str, Any]) -> list[str]:
    return [r["code"] for r in result["decision"]["reasons"]]


def scored(
    client: Any, member: Member, identifier: dict[str, str], incidents: int, **summary: int
) -> dict[str, Any]:
    """Wait until a lookup reflects exactly `incidents` counting incidents (and the given summary)."""

    def ready() -> dict[str, Any] | None:
        result = lookup(client, member, identifier)
        want = {"incidents": incidents, **summary}
        got = {k: result["summary"][k] for k in want}
        return result if got == want and not result["stale"] else None

    return wait_for(ready)


def score_row(rt: Runtime, identifier: dict[str, str]) -> dict[str, Any] | None:
    with rt.db.transaction() as conn:
        rows = scores.for_tokens(conn, [token_of(identifier)])
    return rows[0] if rows else None


def outbox_pending(rt: Runtime) -> int:
    with rt.db.transaction() as conn:
        row = conn.execute("SELECT count(*) AS n FROM outbox WHERE done_at IS NULL").fetchone()
    assert row is not None
    return int(row["n"])


def outbox_sent(rt: Runtime) -> int:
    with rt.db.transaction() as conn:
        row = conn.execute("SELECT count(*) AS n FROM outbox WHERE sent_at IS NOT NULL").fetchone()
    assert row is not None
    return int(row["n"])


def cached(rt: Runtime, token: str) -> tuple[int, dict[str, Any]] | None:
    raw = rt.cache.client.get(TOKEN_KEY + token)
    return (int(raw[:SEQ_WIDTH]), json.loads(raw[SEQ_WIDTH:])) if raw else None


# -- reporting, retraction, corroboration, cap -------------------------------------------------------
def test_report_makes_a_score_appear(client: Any, alpha: Member, beta: Member, worker: Any) -> None:
    assert lookup(client, beta, PHONE)["decision"]["tier"] == "clear"
    created = client.post("/v1/incidents", json=incident_body(), headers=alpha.headers)
    assert created.status_code == 201
    result = wait_for(lambda: (r := lookup(client, beta, PHONE))["decision"]["score"] > 0 and r)
    assert result["decision"]["tier"] in ("review", "return_required")
    assert result["summary"] == {
        "incidents": 1,
        "platforms": 1,
        "last_incident_at": result["summary"]["last_incident_at"],
    }
    assert result["stale"] is False


def test_the_stored_score_records_its_policy_and_ledger_position(
    client: Any, rt: Runtime, alpha: Member, beta: Member, worker: Any
) -> None:
    created = report(client, alpha, "order-1")
    result = scored(client, beta, PHONE, 1)
    row = score_row(rt, PHONE)
    assert row is not None
    assert row["policy_version"] == POLICY.version == result["policy_version"]
    with rt.db.transaction() as conn:
        event = conn.execute(
            "SELECT id FROM ledger_events WHERE leaf_hash = %s",
            (bytes.fromhex(created["receipt"]["leaf_hash"]),),
        ).fetchone()
    assert event is not None
    assert row["computed_from_seq"] >= event["id"]
    assert row["score"] == result["decision"]["score"]
    assert row["tier"] == result["decision"]["tier"]
    assert list(row["restrictions"]) == result["decision"]["restrictions"]
    assert row["review_at"] is not None  # a scored subject is due for the decay job at some point
    assert outbox_pending(rt) == 0


def test_a_retraction_lowers_the_score(
    client: Any, rt: Runtime, alpha: Member, beta: Member, worker: Any
) -> None:
    first = report(client, alpha, "order-1")
    report(client, alpha, "order-2", category="false_damage_claim")
    before = scored(client, beta, PHONE, 2)
    response = client.post(
        f"/v1/incidents/{first['id']}/retract", json={"reason": "overturned_on_review"}, headers=alpha.headers
    )
    assert response.status_code == 200, response.get_json()
    after = scored(client, beta, PHONE, 1)
    assert after["decision"]["score"] < before["decision"]["score"]
    assert POLICY.rank(after["decision"]["tier"]) <= POLICY.rank(before["decision"]["tier"])
    assert "FABRICATED_EVIDENCE_RECENT" in codes(before)
    assert "FABRICATED_EVIDENCE_RECENT" not in codes(after)
    row = score_row(rt, PHONE)
    assert row is not None
    assert (row["score"], row["incidents"]) == (after["decision"]["score"], 1)


def test_retracting_the_only_incident_clears_the_consumer(
    client: Any, alpha: Member, beta: Member, worker: Any
) -> None:
    created = report(client, alpha, "order-1")
    scored(client, beta, PHONE, 1)
    client.post(
        f"/v1/incidents/{created['id']}/retract", json={"reason": "reported_in_error"}, headers=alpha.headers
    )
    after = scored(client, beta, PHONE, 0)
    assert (after["decision"]["tier"], after["decision"]["score"], codes(after)) == ("clear", 0, [])


def test_a_second_platform_raises_the_score_through_corroboration(
    client: Any, alpha: Member, beta: Member, make_platform: Any, worker: Any
) -> None:
    gamma = make_platform("gamma", "lookup")
    report(client, alpha, "order-1")
    one = scored(client, gamma, PHONE, 1, platforms=1)
    report(client, alpha, "order-2")
    same_platform = scored(client, gamma, PHONE, 2, platforms=1)
    report(client, beta, "b-order-1")
    two = scored(client, gamma, PHONE, 3, platforms=2)
    assert one["decision"]["score"] < same_platform["decision"]["score"] < two["decision"]["score"]
    assert "MULTIPLE_PLATFORMS" in codes(two)
    assert "MULTIPLE_PLATFORMS" not in codes(same_platform)


def test_the_fairness_cap_holds_for_many_incidents_from_one_platform(
    client: Any, alpha: Member, beta: Member, make_platform: Any, worker: Any
) -> None:
    gamma = make_platform("gamma", "lookup")
    batch = [incident_body(f"order-{i}", amount={"value": 900_000, "currency": "CNY"}) for i in range(12)]
    response = client.post("/v1/incidents/batch", json={"incidents": batch}, headers=alpha.headers)
    assert response.status_code in (200, 201, 207), response.get_json()
    capped = scored(client, gamma, PHONE, 12, platforms=1)
    cap = POLICY.tier(POLICY.single_platform_max_tier)
    above = next(t for t in reversed(POLICY.tiers) if t.min_score > cap.min_score)
    assert capped["decision"]["tier"] == cap.name
    assert capped["decision"]["score"] == above.min_score - 1
    assert "SINGLE_PLATFORM_CAP" in codes(capped)
    assert "no_auto_refund" not in capped["decision"]["restrictions"]
    # An independent platform's single report lifts the cap: the consumer is now held.
    report(client, beta, "b-order-1")
    held = scored(client, gamma, PHONE, 13, platforms=2)
    assert held["decision"]["tier"] == "hold"
    assert "SINGLE_PLATFORM_CAP" not in codes(held)


def test_a_court_confirmation_lifts_the_cap(client: Any, alpha: Member, beta: Member, worker: Any) -> None:
    batch = [incident_body(f"order-{i}", amount={"value": 900_000, "currency": "CNY"}) for i in range(8)]
    batch.append(incident_body("order-court", confirmation="court_or_police"))
    client.post("/v1/incidents/batch", json={"incidents": batch}, headers=alpha.headers)
    held = scored(client, beta, PHONE, 9, platforms=1)
    assert held["decision"]["tier"] == "hold"
    assert "STRONG_CONFIRMATION" in codes(held)
    assert "SINGLE_PLATFORM_CAP" not in codes(held)


# -- subjects ----------------------------------------------------------------------------------------
def live_subjects(rt: Runtime) -> list[int]:
    with rt.db.transaction() as conn:
        rows = conn.execute(
            "SELECT DISTINCT subject_id FROM incidents WHERE subject_id IS NOT NULL ORDER BY subject_id"
        ).fetchall()
    return [int(r["subject_id"]) for r in rows]


def test_strong_identifiers_link_subjects_transitively(
    client: Any, rt: Runtime, alpha: Member, beta: Member, make_platform: Any, worker: Any
) -> None:
    gamma = make_platform("gamma", "lookup")
    report(client, alpha, "order-1", identifiers=[PHONE, EMAIL])
    report(client, beta, "b-order-1", identifiers=[EMAIL, ID_CARD])
    by_phone = scored(client, gamma, PHONE, 2, platforms=2)
    by_card = scored(client, gamma, ID_CARD, 2, platforms=2)
    assert by_phone["decision"]["score"] == by_card["decision"]["score"]
    assert "MULTIPLE_SUBJECTS_MATCHED" not in codes(lookup(client, gamma, PHONE, ID_CARD))
    assert len(live_subjects(rt)) == 1


def test_a_bridging_report_merges_two_existing_subjects(
    client: Any, rt: Runtime, alpha: Member, beta: Member, make_platform: Any, worker: Any
) -> None:
    gamma = make_platform("gamma", "lookup")
    report(client, alpha, "order-1", identifiers=[PHONE])
    report(client, beta, "b-order-1", identifiers=[ID_CARD])
    scored(client, gamma, PHONE, 1)
    scored(client, gamma, ID_CARD, 1)
    assert len(live_subjects(rt)) == 2
    report(client, alpha, "order-2", identifiers=[EMAIL, PHONE, ID_CARD])
    # Every identifier of the merged subject, old and new, now sees all three incidents.
    for identifier in (PHONE, ID_CARD, EMAIL):
        merged = scored(client, gamma, identifier, 3, platforms=2)
        assert "MULTIPLE_PLATFORMS" in codes(merged)
    (root,) = live_subjects(rt)
    with rt.db.transaction() as conn:
        merged_away = conn.execute("SELECT id FROM subjects WHERE merged_into = %s", (root,)).fetchall()
        rows = scores.for_subjects(conn, [root, *(int(r["id"]) for r in merged_away)])
    assert len(merged_away) == 1
    assert [r["subject_id"] for r in rows] == [root]  # the merged subject's score is gone, not left stale


def test_a_shared_device_never_merges_subjects(
    client: Any, rt: Runtime, alpha: Member, beta: Member, make_platform: Any, worker: Any
) -> None:
    gamma = make_platform("gamma", "lookup")
    other = {"type": "phone", "value": "13900139000"}
    report(client, alpha, "order-1", identifiers=[PHONE, DEVICE])
    report(client, beta, "b-order-1", identifiers=[other, DEVICE], confirmation="court_or_police")
    report(client, beta, "b-order-2", identifiers=[other, DEVICE], confirmation="court_or_police")
    mine = scored(client, gamma, PHONE, 1, platforms=1)
    theirs = scored(client, gamma, other, 2, platforms=1)
    assert len(live_subjects(rt)) == 2
    assert mine["decision"]["score"] < theirs["decision"]["score"]
    assert "MULTIPLE_PLATFORMS" not in codes(mine)
    # The device alone is a weak signal: named as a reason, never above the policy's device tier.
    by_device = lookup(client, gamma, DEVICE)
    assert POLICY.rank(theirs["decision"]["tier"]) > POLICY.rank(POLICY.device_max_tier)
    assert by_device["decision"]["tier"] == POLICY.device_max_tier
    assert codes(by_device) == ["DEVICE_LINKED"]
    with rt.db.transaction() as conn:
        device_links = conn.execute(
            "SELECT count(*) AS n FROM identity_links WHERE token = %s", (token_of(DEVICE),)
        ).fetchone()
    assert device_links is not None
    assert device_links["n"] == 0


# -- concurrency and ordering ------------------------------------------------------------------------
def test_concurrent_reports_converge_to_a_score_from_scratch(
    app: Any, rt: Runtime, alpha: Member, beta: Member, make_platform: Any, worker: Any
) -> None:
    """Reports race each other and the worker: some join the subject by e-mail, some by ID card, and one
    bridges the two, so merges happen while other tasks are scoring. The end state must be one subject
    whose stored and cached score equal a recompute from scratch."""
    gamma = make_platform("gamma", "lookup")
    n = 12
    bodies = []
    for i in range(n):
        shared = EMAIL if i % 2 else ID_CARD
        bodies.append(incident_body(f"c-{i}", identifiers=[phone(i), shared], category="return_fraud"))
    bodies.append(incident_body("c-bridge", identifiers=[EMAIL, ID_CARD]))
    barrier = threading.Barrier(len(bodies))
    statuses: list[int] = []

    def send(i: int, body: dict[str, Any]) -> None:
        member = alpha if i % 3 else beta
        local = app.test_client()
        barrier.wait()
        statuses.append(local.post("/v1/incidents", json=body, headers=member.headers).status_code)

    threads = [threading.Thread(target=send, args=(i, b)) for i, b in enumerate(bodies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [201] * len(bodies)
    client = app.test_client()
    wait_for(lambda: outbox_pending(rt) == 0)
    converged = scored(client, gamma, phone(0), n + 1, platforms=2)
    assert len(live_subjects(rt)) == 1
    (subject,) = live_subjects(rt)
    identifiers = [*(phone(i) for i in range(n)), EMAIL, ID_CARD]
    before_row = score_row(rt, phone(0))
    before_cache = {token_of(i): cached(rt, token_of(i)) for i in identifiers}

    assert scoring.rescore(rt, [subject]) == 1  # from scratch, at the same ledger position
    after_row = score_row(rt, phone(0))
    assert before_row is not None
    assert after_row is not None
    fields = (
        "subject_id",
        "score",
        "tier",
        "restrictions",
        "reasons",
        "incidents",
        "platforms",
        "computed_from_seq",
    )
    assert {f: before_row[f] for f in fields} == {f: after_row[f] for f in fields}
    assert converged["decision"]["score"] == after_row["score"]
    for token, entry in before_cache.items():
        assert entry is not None, "every identifier of the subject is cached"
        seq, value = entry
        assert seq == after_row["computed_from_seq"]
        assert (value["s"], value["score"], value["tier"], value["n"], value["p"]) == (
            subject,
            after_row["score"],
            after_row["tier"],
            n + 1,
            2,
        ), token


def test_a_task_run_out_of_order_never_leaves_an_older_score(
    client: Any, rt: Runtime, alpha: Member, beta: Member, worker: Any
) -> None:
    report(client, alpha, "order-1")
    old = scored(client, beta, PHONE, 1)
    old_row = score_row(rt, PHONE)
    report(client, alpha, "order-2")
    new = scored(client, beta, PHONE, 2)
    new_row = score_row(rt, PHONE)
    assert old_row is not None
    assert new_row is not None
    assert old_row["computed_from_seq"] < new_row["computed_from_seq"]

    # A slow task that computed from the older position finishes last (even with a later clock).
    late = {**old_row, "restrictions": list(old_row["restrictions"]), "reasons": list(old_row["reasons"])}
    late["computed_at"] = datetime.now(UTC)
    with rt.db.transaction() as conn:
        assert scores.upsert_many(conn, [late]) == set()
    entry = scores.cached_decision(late)
    assert rt.cache.put_decisions(old_row["computed_from_seq"], {token_of(PHONE): entry}) == 0
    assert score_row(rt, PHONE)["incidents"] == 2  # type: ignore[index]
    after = lookup(client, beta, PHONE)
    assert after["summary"]["incidents"] == 2
    assert after["decision"]["score"] == new["decision"]["score"] > old["decision"]["score"]

    # The first report's task delivered again (e.g. redelivered after a crash) recomputes from now.
    with rt.db.transaction() as conn:
        first = conn.execute("SELECT min(id) AS id FROM outbox").fetchone()
        assert first is not None
        conn.execute("UPDATE outbox SET done_at = NULL WHERE id = %s", (first["id"],))
    assert outbox_work.process_outbox(rt, int(first["id"])) == "done"
    assert lookup(client, beta, PHONE)["summary"]["incidents"] == 2
    assert score_row(rt, PHONE)["incidents"] == 2  # type: ignore[index]

    # The guard is not a wall: a computation at the same position but later replaces the row.
    with rt.db.transaction() as conn:
        newer = {
            **new_row,
            "restrictions": list(new_row["restrictions"]),
            "reasons": list(new_row["reasons"]),
        }
        newer["computed_at"] = datetime.now(UTC)
        assert scores.upsert_many(conn, [newer]) == {new_row["subject_id"]}


# -- a worker killed mid-task ------------------------------------------------------------------------


@dataclass
class Stack:
    """An app, runtime and client wired to a private redis-server, so its queue is ours alone."""

    settings: Settings
    app: Any
    rt: Runtime
    client: Any


@pytest.fixture
def private_stack(isolated_settings: Settings) -> Iterator[Stack]:
    """On a database no worker watches: only this stack's workers send and take its rows."""
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    probe = redis.Redis(port=port)
    try:
        wait_for(lambda: _pings(probe))
        private = replace(isolated_settings, redis_url=f"redis://127.0.0.1:{port}/0")
        application = create_app(private)
        application.config["TESTING"] = True
        runtime: Runtime = application.extensions["ledger.runtime"]
        yield Stack(private, application, runtime, application.test_client())
        runtime.close()
    finally:
        server.kill()
        server.wait(timeout=10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def waiting_on_link_lock(database_url: str) -> bool:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = %s",
            (subjects.LINK_LOCK,),
        ).fetchone()
    return bool(row and row[0])


@pytest.mark.process
@pytest.mark.parametrize("victim", ["pool_child", "whole_worker"])
def test_a_worker_killed_mid_task_does_not_lose_the_recompute(private_stack: Stack, victim: str) -> None:
    """Hold the linking lock so the task the worker's relay sent blocks inside its body, then SIGKILL
    either the pool process running it (the worker requeues it: acks_late + reject_on_worker_lost) or
    the whole worker (the message is never acked; the outbox sweep sends it again to a new worker, whose
    relay leaves the row alone because it was sent)."""
    stack = private_stack
    reporter = platform_service.create_platform(stack.rt, "alpha", "Alpha", "report,lookup")
    member = Member("alpha", reporter.key, reporter.key_id)
    proc = WorkerProcess(stack.settings, concurrency=1).start()
    replacement: WorkerProcess | None = None
    assert stack.settings.database_url
    try:
        with psycopg.connect(stack.settings.database_url) as blocker:
            blocker.execute("SELECT pg_advisory_xact_lock(%s)", (subjects.LINK_LOCK,))
            report(stack.client, member, "order-1")
            wait_for(lambda: waiting_on_link_lock(stack.settings.database_url or ""))
            wait_for(lambda: outbox_sent(stack.rt) == 1)  # the relay commits just after it publishes
            assert proc.proc is not None
            if victim == "pool_child":
                children = psutil.Process(proc.proc.pid).children(recursive=True)
                assert len(children) == 1
                children[0].kill()
            else:
                proc.kill()
            blocker.rollback()  # release the lock only once the task's process is gone
        assert outbox_pending(stack.rt) == 1
        assert score_row(stack.rt, PHONE) is None
        if victim == "whole_worker":
            replacement = WorkerProcess(stack.settings, concurrency=1).start()
            with stack.rt.db.transaction() as conn:  # the beat sweep's grace period, without sleeping
                conn.execute(
                    """UPDATE outbox SET created_at = created_at - interval '1 minute',
                                         sent_at = sent_at - interval '1 minute'"""
                )
            assert outbox_work.sweep_outbox(stack.rt) == 1
        result = scored(stack.client, member, PHONE, 1)
        assert result["decision"]["score"] > 0
        assert outbox_pending(stack.rt) == 0
        with stack.rt.db.transaction() as conn:
            attempts = conn.execute("SELECT attempts FROM outbox").fetchone()
        assert attempts is not None
        # Sent once by the relay. The pool child case is redelivered by the worker itself, with no help
        # from the sweep.
        assert attempts["attempts"] == (2 if victim == "whole_worker" else 1)
    finally:
        proc.stop()
        if replacement is not None:
            replacement.stop()


@pytest.mark.process
def test_a_slow_cache_write_from_before_a_merge_never_wins(private_stack: Stack, monkeypatch: Any) -> None:
    """Linking does not advance the ledger sequence, so two recomputes can share one: the cache must
    then keep the later computation, as PostgreSQL does, whatever order the Redis writes land in.

    No worker runs on this stack's broker; the test plays the tasks itself, in a chosen order."""
    stack = private_stack
    reporter = platform_service.create_platform(stack.rt, "alpha", "Alpha", "report,lookup")
    member = Member("alpha", reporter.key, reporter.key_id)
    report(stack.client, member, "order-1", identifiers=[PHONE])
    report(stack.client, member, "order-2", identifiers=[ID_CARD])
    assert outbox_work.flush_outbox(stack.rt) == 2
    report(stack.client, member, "order-3", identifiers=[PHONE, ID_CARD])  # bridges the two subjects

    # A task for the phone's subject computes at the new position but before the bridge is linked, and
    # its Redis write is delayed until after the bridge's own task has finished.
    delayed: list[tuple[int, dict[str, Any]]] = []
    with monkeypatch.context() as patch:
        patch.setattr(
            stack.rt.cache, "put_decisions", lambda seq, by_token: delayed.append((seq, dict(by_token)))
        )
        (phone_subject,) = live_subjects(stack.rt)[:1]
        scoring.rescore(stack.rt, [phone_subject])
    assert outbox_work.flush_outbox(stack.rt) == 1
    merged = scored(stack.client, member, PHONE, 3)
    (seq, by_token) = delayed[0]
    assert seq == score_row(stack.rt, PHONE)["computed_from_seq"]  # type: ignore[index]
    stack.rt.cache.put_decisions(seq, by_token)

    for identifier in (PHONE, ID_CARD):
        result = lookup(stack.client, member, identifier)
        assert result["summary"]["incidents"] == 3, identifier
        assert result["decision"]["score"] == merged["decision"]["score"]
