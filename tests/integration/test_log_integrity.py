"""Tamper evidence of the transparency log on real PostgreSQL: concurrent writers and the sequencer
never skip or reuse an index, the database itself refuses to rewrite history, and a rewrite made behind
its back (triggers off) is caught by `ledger verify`, which names the leaf index or the checkpoint.

Members trust the consortium only as far as they can check it, so these are the checks they would run.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from ledger.config import Settings
from ledger.domain import merkle, note
from ledger.services import verification
from ledger.services.runtime import Runtime
from tests.support import Member, check_receipt, incident_body, integrate, run_ledger

THREADS = 8
PER_THREAD = 25  # 20 single reports and one batch of 5
RETRACT_EVERY = 5


def rows(settings: Settings, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with psycopg.connect(settings.database_url or "", row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()


def report_many(client: Any, member: Member, prefix: str, count: int) -> list[dict[str, Any]]:
    items = [
        incident_body(f"{prefix}-{i}", identifiers=[{"type": "device_id", "value": f"{prefix}-dev-{i}"}])
        for i in range(count)
    ]
    response = client.post("/v1/incidents/batch", json={"incidents": items}, headers=member.headers)
    assert response.status_code == 200
    assert all(r["status"] == 201 for r in response.get_json()["results"])
    return [r["incident"] for r in response.get_json()["results"]]


def tamper(settings: Settings, statement: str, params: tuple[Any, ...] = ()) -> None:
    """Rewrite history the way an operator with database access could: with every guard switched off."""
    with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(statement, params)


def assert_verify_fails(settings: Settings, rt: Runtime, index: int | None, words: str) -> None:
    result = verification.verify(rt)
    assert not result.ok
    assert result.first_bad_index == index, result
    assert words in (result.problem or ""), result.problem
    text = run_ledger(settings, "verify")
    assert text.returncode == 1
    assert "FAILED" in text.stdout
    assert words in text.stdout
    assert "Traceback" not in text.stdout + text.stderr
    as_json = run_ledger(settings, "verify", "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["first_bad_index"] == index


def test_parallel_writers_get_contiguous_leaves_and_proofs(
    app: Any, alpha: Member, rt: Runtime, settings: Settings
) -> None:
    barrier = threading.Barrier(THREADS + 1)
    failures: list[str] = []
    receipts: list[dict[str, Any]] = []
    done = threading.Event()

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
                receipts.append(response.get_json()["receipt"])
                if i % RETRACT_EVERY == 0:
                    retracted = client.post(
                        f"/v1/incidents/{response.get_json()['id']}/retract",
                        json={"reason": "reported_in_error"},
                        headers=alpha.headers,
                    )
                    if retracted.status_code != 200:
                        failures.append(f"retract {n}/{i}: {retracted.status_code}")
            receipts.extend(r["receipt"] for r in report_many(client, alpha, f"t{n}-batch", 5))
        except Exception as exc:  # surfaced below: a thread's exception would otherwise vanish
            failures.append(repr(exc))

    def sequencer() -> None:  # integrates while the writers write, as the real process does
        barrier.wait()
        while not done.is_set():
            integrate(rt)
            done.wait(0.05)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(THREADS)]
    seq_thread = threading.Thread(target=sequencer)
    for thread in [*threads, seq_thread]:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    done.set()
    seq_thread.join(timeout=30)
    integrate(rt)
    assert not failures, failures

    expected = THREADS * (PER_THREAD + (PER_THREAD - 5) // RETRACT_EVERY)
    leaves = rows(settings, "SELECT idx, event_id FROM log_leaves ORDER BY idx")
    assert [r["idx"] for r in leaves] == list(range(expected))  # no gaps, no duplicates
    assert len({r["event_id"] for r in leaves}) == expected  # every event exactly once
    assert rows(settings, "SELECT count(*) AS n FROM log_pending") == [{"n": 0}]

    result = verification.verify(rt)
    assert result.ok, result
    assert result.leaves == result.tree_size == expected
    assert result.checkpoints > 1

    # Every 201's leaf is included under the latest checkpoint, with a proof a member can check.
    client = app.test_client()
    checkpoint = client.get("/v1/log/checkpoint").get_json()
    signed = note.open_checkpoint(checkpoint["note"], rt.log_signer.verifier, settings.log_origin)
    assert signed.size == expected
    assert signed.root.hex() == result.root_hash
    for receipt in receipts:
        leaf = check_receipt(rt, receipt)
        proof = client.get(f"/v1/log/inclusion?leaf_hash={leaf.hex()}", headers=alpha.headers).get_json()
        merkle.verify_inclusion(
            proof["leaf_index"], signed.size, leaf, [bytes.fromhex(p) for p in proof["proof"]], signed.root
        )
    # Every checkpoint is consistent with the latest one.
    for cp in rows(
        settings, "SELECT tree_size, root_hash FROM log_checkpoints WHERE tree_size > 0 ORDER BY tree_size"
    ):
        proof = client.get(f"/v1/log/consistency?from={cp['tree_size']}&to={signed.size}").get_json()
        merkle.verify_consistency(
            cp["tree_size"],
            signed.size,
            bytes(cp["root_hash"]),
            signed.root,
            [bytes.fromhex(p) for p in proof["proof"]],
        )

    cli = run_ledger(settings, "verify", "--json")
    assert cli.returncode == 0, cli.stderr
    printed = json.loads(cli.stdout)
    assert printed["ok"] is True
    assert printed["leaves"] == printed["tree_size"] == expected
    assert printed["first_bad_index"] is None


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_events SET payload = '{}'::jsonb WHERE id = 2",
        "UPDATE ledger_events SET leaf_hash = leaf_hash",  # even a no-op rewrite
        "DELETE FROM ledger_events WHERE id = 3",
        "TRUNCATE ledger_events CASCADE",
        "UPDATE log_leaves SET leaf_hash = leaf_hash",
        "DELETE FROM log_leaves WHERE idx = 2",
        "TRUNCATE log_leaves CASCADE",
        "UPDATE log_nodes SET hash = hash",
        "DELETE FROM log_nodes",
        "UPDATE log_checkpoints SET note = note",
        "DELETE FROM log_checkpoints",
    ],
)
def test_the_database_refuses_to_rewrite_the_log(
    client: Any, alpha: Member, rt: Runtime, settings: Settings, statement: str
) -> None:
    report_many(client, alpha, "guarded", 3)
    integrate(rt)
    with (
        psycopg.connect(settings.database_url or "") as conn,
        pytest.raises(psycopg.Error, match="append-only"),
    ):
        conn.execute(statement)
    assert len(rows(settings, "SELECT idx FROM log_leaves")) == 3
    # Growing is still allowed: the guard is on rewrite, not on growth.
    report_many(client, alpha, "after", 1)
    integrate(rt)
    assert [r["idx"] for r in rows(settings, "SELECT idx FROM log_leaves ORDER BY idx")] == [0, 1, 2, 3]
    assert verification.verify(rt).ok


def _leaf_event(settings: Settings, index: int) -> int:
    return int(rows(settings, "SELECT event_id FROM log_leaves WHERE idx = %s", (index,))[0]["event_id"])


def test_a_rewritten_event_row_is_named_by_its_index(
    client: Any, alpha: Member, rt: Runtime, settings: Settings
) -> None:
    report_many(client, alpha, "tamper", 6)
    integrate(rt)
    assert verification.verify(rt).ok
    tamper(
        settings,
        "UPDATE ledger_events SET payload = jsonb_set(payload, '{amount}', '1') WHERE id = %s",
        (_leaf_event(settings, 3),),
    )
    assert_verify_fails(settings, rt, 3, "leaf 3: its event row")


def test_a_deleted_event_row_is_named(client: Any, alpha: Member, rt: Runtime, settings: Settings) -> None:
    report_many(client, alpha, "gap", 5)
    integrate(rt)
    tamper(settings, "DELETE FROM ledger_events WHERE id = %s", (_leaf_event(settings, 1),))
    assert_verify_fails(settings, rt, 1, "leaf 1: its event row is deleted")


def test_a_deleted_leaf_is_named(client: Any, alpha: Member, rt: Runtime, settings: Settings) -> None:
    report_many(client, alpha, "hole", 5)
    integrate(rt)
    tamper(settings, "DELETE FROM log_leaves WHERE idx = 2")
    assert_verify_fails(settings, rt, 2, "leaf 2 is missing")


def test_a_cut_tail_disagrees_with_the_signed_checkpoint(
    client: Any, alpha: Member, rt: Runtime, settings: Settings
) -> None:
    """Deleting the newest leaves (and their events) leaves a tree that is internally consistent; the
    signed checkpoint catches it."""
    report_many(client, alpha, "tail", 4)
    integrate(rt)
    event = _leaf_event(settings, 3)
    tamper(settings, "DELETE FROM log_leaves WHERE idx = 3")
    tamper(settings, "DELETE FROM ledger_events WHERE id = %s", (event,))
    assert_verify_fails(settings, rt, 3, "log cut")


def test_reordered_leaves_break_the_checkpoint(
    client: Any, alpha: Member, rt: Runtime, settings: Settings
) -> None:
    report_many(client, alpha, "order", 4)
    integrate(rt)
    report_many(client, alpha, "order2", 4)
    integrate(rt)
    one, two = (
        rows(settings, "SELECT event_id, leaf_hash FROM log_leaves WHERE idx = %s", (i,))[0] for i in (5, 6)
    )
    tamper(settings, "DELETE FROM log_leaves WHERE idx IN (5, 6)")
    tamper(
        settings,
        "INSERT INTO log_leaves (idx, event_id, leaf_hash) VALUES (5, %s, %s), (6, %s, %s)",
        (two["event_id"], two["leaf_hash"], one["event_id"], one["leaf_hash"]),
    )
    assert_verify_fails(settings, rt, 4, "checkpoint at size 8 does not match the leaves: a leaf from 4 to 7")


def test_a_stored_leaf_hash_that_is_not_its_events_is_named(
    client: Any, alpha: Member, rt: Runtime, settings: Settings
) -> None:
    report_many(client, alpha, "swap", 3)
    integrate(rt)
    tamper(settings, "UPDATE log_leaves SET leaf_hash = %s WHERE idx = 1", (bytes(32),))
    assert_verify_fails(settings, rt, 1, "leaf 1: the stored leaf is not its event's")


def test_a_tampered_node_is_named(client: Any, alpha: Member, rt: Runtime, settings: Settings) -> None:
    """Nodes are stored from level 8 up (one per 256 leaves); the first one covers leaves 0 to 255."""
    report_many(client, alpha, "node", 257)
    integrate(rt)
    assert rows(settings, "SELECT level, idx FROM log_nodes") == [{"level": 8, "idx": 0}]
    tamper(settings, "UPDATE log_nodes SET hash = %s WHERE level = 8 AND idx = 0", (bytes(32),))
    assert_verify_fails(settings, rt, 0, "stored node 8/0 (leaves 0 to 255)")


def test_a_forged_checkpoint_is_named(client: Any, alpha: Member, rt: Runtime, settings: Settings) -> None:
    report_many(client, alpha, "forge", 3)
    integrate(rt)
    forger = note.Signer.from_seed(settings.log_origin, bytes(32))
    forged = note.sign_note(note.Checkpoint(settings.log_origin, 3, bytes(32)).text(), forger)
    tamper(
        settings,
        "UPDATE log_checkpoints SET note = %s, root_hash = %s WHERE tree_size = 3",
        (forged, bytes(32)),
    )
    assert_verify_fails(settings, rt, None, "checkpoint at size 3: the note is not signed by")


def test_a_checkpoint_with_a_changed_root_is_named(
    client: Any, alpha: Member, rt: Runtime, settings: Settings
) -> None:
    report_many(client, alpha, "forge", 3)
    integrate(rt)
    [row] = rows(settings, "SELECT note FROM log_checkpoints WHERE tree_size = 3")
    _text, lines = note.split_note(row["note"])
    changed = note.Checkpoint(settings.log_origin, 3, bytes(32)).text() + "\n" + lines[0].render()
    tamper(settings, "UPDATE log_checkpoints SET note = %s WHERE tree_size = 3", (changed,))
    assert_verify_fails(settings, rt, None, "does not verify")


def test_an_event_outside_the_log_is_caught(
    client: Any, alpha: Member, rt: Runtime, settings: Settings
) -> None:
    report_many(client, alpha, "outside", 2)
    integrate(rt)
    tamper(settings, "DELETE FROM log_pending")
    tamper(
        settings,
        """INSERT INTO ledger_events (kind, at, payload, leaf_hash) VALUES ('reported', now(), '{}', %s)""",
        (bytes(32),),
    )
    assert_verify_fails(settings, rt, None, "an event row was added outside the log")


def test_verify_with_only_the_database_uses_the_recorded_key(
    client: Any, alpha: Member, rt: Runtime, settings: Settings
) -> None:
    """`ledger verify` needs only DATABASE_URL: it then checks signatures with the key the sequencer
    recorded, and still catches a checkpoint signed by another key."""
    import os
    import subprocess

    from tests.support import invoke_ledger

    report_many(client, alpha, "dbonly", 3)
    integrate(rt)
    shell = {
        k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "DATABASE_URL", "REDIS_URL"))
    }

    def verify_cli() -> subprocess.CompletedProcess[str]:
        return invoke_ledger({**shell, "DATABASE_URL": settings.database_url or ""}, "verify")

    ok = verify_cli()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    forger = note.Signer.from_seed(settings.log_origin, bytes(32))
    forged = note.sign_note(note.Checkpoint(settings.log_origin, 3, bytes(32)).text(), forger)
    tamper(
        settings,
        "UPDATE log_checkpoints SET note = %s, root_hash = %s WHERE tree_size = 3",
        (forged, bytes(32)),
    )
    failed = verify_cli()
    assert failed.returncode == 1
    assert "checkpoint at size 3" in failed.stdout
