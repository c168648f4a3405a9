"""Tamper evidence of the ledger on real PostgreSQL: concurrent writers never fork the hash chain, the
database itself refuses to rewrite history, and a rewrite made behind its back (trigger disabled) is
caught by `ledger verify`, which names the sequence number.

Members trust the consortium only as far as they can check it, so these are the checks they would run.
"""

from __future__ import annotations

import itertools
import json
import threading
from datetime import datetime
from typing import Any

import psycopg
import pytest

from ledger.config import Settings
from ledger.domain.chain import GENESIS_HASH
from ledger.services import verification
from ledger.services.runtime import Runtime
from tests.conftest import Member, incident_body, run_ledger

THREADS = 8
PER_THREAD = 25  # 20 single reports and one batch of 5
RETRACT_EVERY = 5


def chain_rows(settings: Settings) -> list[dict[str, Any]]:
    with psycopg.connect(settings.database_url or "", row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(
            "SELECT seq, kind, at, prev_hash, entry_hash FROM ledger_events ORDER BY seq"
        ).fetchall()


def report_many(client: Any, member: Member, prefix: str, count: int) -> list[dict[str, Any]]:
    items = [
        incident_body(f"{prefix}-{i}", identifiers=[{"type": "device_id", "value": f"{prefix}-dev-{i}"}])
        for i in range(count)
    ]
    response = client.post("/v1/incidents/batch", json={"incidents": items}, headers=member.headers)
    assert response.status_code == 200
    assert all(r["status"] == 201 for r in response.get_json()["results"])
    return [r["incident"] for r in response.get_json()["results"]]


def tamper(settings: Settings, statement: str, params: tuple[Any, ...]) -> None:
    """Rewrite history the way an operator with database access could: with the guard switched off."""
    with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
        conn.execute("ALTER TABLE ledger_events DISABLE TRIGGER ledger_events_append_only")
        try:
            conn.execute(statement, params)
        finally:
            conn.execute("ALTER TABLE ledger_events ENABLE TRIGGER ledger_events_append_only")


def test_parallel_writers_never_fork_the_chain(
    app: Any, alpha: Member, rt: Runtime, settings: Settings
) -> None:
    barrier = threading.Barrier(THREADS)
    failures: list[str] = []

    def writer(n: int) -> None:
        client = app.test_client()
        barrier.wait()
        try:
            for i in range(PER_THREAD - 5):
                response = client.post(
                    "/v1/incidents",
                    json=incident_body(
                        f"t{n}-{i}", identifiers=[{"type": "device_id", "value": f"t{n}-dev-{i}"}]
                    ),
                    headers=alpha.headers,
                )
                if response.status_code != 201:
                    failures.append(f"report {n}/{i}: {response.status_code}")
                    continue
                if i % RETRACT_EVERY == 0:
                    retracted = client.post(
                        f"/v1/incidents/{response.get_json()['id']}/retract",
                        json={"reason": "reported_in_error"},
                        headers=alpha.headers,
                    )
                    if retracted.status_code != 200:
                        failures.append(f"retract {n}/{i}: {retracted.status_code}")
            report_many(client, alpha, f"t{n}-batch", 5)
        except Exception as exc:  # surfaced below: a thread's exception would otherwise vanish
            failures.append(repr(exc))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures

    expected_events = THREADS * (PER_THREAD + (PER_THREAD - 5) // RETRACT_EVERY)
    rows = chain_rows(settings)
    assert [r["seq"] for r in rows] == list(range(1, expected_events + 1))  # no gaps, no duplicates
    assert rows[0]["prev_hash"] == GENESIS_HASH
    assert all(b["prev_hash"] == a["entry_hash"] for a, b in itertools.pairwise(rows))  # one line
    # Stamped under the head lock, so time never runs backwards along the chain.
    assert all(a["at"] <= b["at"] for a, b in itertools.pairwise(rows))
    assert sum(r["kind"] == "retracted" for r in rows) == THREADS * (PER_THREAD - 5) // RETRACT_EVERY

    result = verification.verify(rt)
    assert result.ok, result
    assert result.events == result.head_seq == expected_events
    assert result.head_hash == rows[-1]["entry_hash"]

    cli = run_ledger(settings, "verify", "--json")
    assert cli.returncode == 0, cli.stderr
    printed = json.loads(cli.stdout)
    assert printed["ok"] is True
    assert printed["events"] == printed["head_seq"] == expected_events
    assert printed["first_bad_seq"] is None


def test_the_database_refuses_update_delete_and_truncate_of_events(
    client: Any, alpha: Member, settings: Settings
) -> None:
    report_many(client, alpha, "guarded", 3)
    statements = [
        "UPDATE ledger_events SET payload = '{}'::jsonb WHERE seq = 2",
        "UPDATE ledger_events SET entry_hash = entry_hash",  # even a no-op rewrite
        "DELETE FROM ledger_events WHERE seq = 3",
        "DELETE FROM ledger_events",
        "TRUNCATE ledger_events",
    ]
    for statement in statements:
        with (
            psycopg.connect(settings.database_url or "") as conn,
            pytest.raises(psycopg.Error, match="append-only"),
        ):
            conn.execute(statement)
    assert len(chain_rows(settings)) == 3
    # Appending is still allowed: the guard is on rewrite, not on growth.
    report_many(client, alpha, "after", 1)
    assert [r["seq"] for r in chain_rows(settings)] == [1, 2, 3, 4]


def test_a_rewritten_payload_makes_verify_fail_naming_its_seq(
    client: Any, alpha: Member, rt: Runtime, settings: Settings
) -> None:
    report_many(client, alpha, "tamper", 6)
    assert verification.verify(rt).ok
    tamper(
        settings,
        "UPDATE ledger_events SET payload = jsonb_set(payload, '{amount}', '1') WHERE seq = %s",
        (4,),
    )

    result = verification.verify(rt)
    assert not result.ok
    assert result.first_bad_seq == 4

    text = run_ledger(settings, "verify")
    assert text.returncode == 1
    assert "FAILED" in text.stdout
    assert "ledger event 4" in text.stdout
    assert "Traceback" not in text.stdout + text.stderr

    as_json = run_ledger(settings, "verify", "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["first_bad_seq"] == 4


def test_a_deleted_event_is_named(client: Any, alpha: Member, rt: Runtime, settings: Settings) -> None:
    report_many(client, alpha, "gap", 5)
    tamper(settings, "DELETE FROM ledger_events WHERE seq = %s", (2,))
    result = verification.verify(rt)
    assert (result.ok, result.first_bad_seq) == (False, 2)


def test_a_cut_tail_disagrees_with_the_checkpoint(
    client: Any, alpha: Member, rt: Runtime, settings: Settings
) -> None:
    """Deleting the newest event leaves a chain that is internally consistent; the head catches it."""
    report_many(client, alpha, "tail", 4)
    published = client.get("/v1/ledger/checkpoint").get_json()
    tamper(settings, "DELETE FROM ledger_events WHERE seq = %s", (4,))
    result = verification.verify(rt)
    assert not result.ok
    assert result.first_bad_seq == 4
    assert published["seq"] == 4


def test_the_checkpoint_is_the_last_event(client: Any, alpha: Member, settings: Settings) -> None:
    empty = client.get("/v1/ledger/checkpoint")
    assert empty.status_code == 200
    assert empty.get_json()["seq"] == 0
    assert empty.get_json()["head_hash"] == GENESIS_HASH

    created = report_many(client, alpha, "cp", 3)
    client.post(
        f"/v1/incidents/{created[0]['id']}/retract",
        json={"reason": "duplicate_report"},
        headers=alpha.headers,
    )
    checkpoint = client.get("/v1/ledger/checkpoint")
    assert checkpoint.status_code == 200
    assert checkpoint.mimetype == "application/json"
    body = checkpoint.get_json()
    assert set(body) == {"seq", "head_hash", "at"}
    last = chain_rows(settings)[-1]
    assert (body["seq"], body["head_hash"]) == (4, last["entry_hash"])
    assert last["kind"] == "retracted"
    assert datetime.fromisoformat(body["at"]) == last["at"]
