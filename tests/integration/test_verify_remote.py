"""`ledger log verify-remote`: the member's own check, against a served ledger, with no database.

It is the only thing that makes the log's promises worth anything to a member, so it is tested the way
an operator would cheat: a rewritten history re-signed with the real key (a fork), a promise not kept,
a checkpoint signed by another key. Each must fail loudly, and leave the saved state as evidence.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ledger.config import Settings
from ledger.domain import note
from ledger.services import verify_remote
from ledger.services.runtime import Runtime
from tests.support import Member, ServedApp, integrate, report, run_ledger

# Every test here serves the API (`ledger serve`) to verify it from outside.
pytestmark = pytest.mark.process


@pytest.fixture
def served(settings: Settings, clean: None) -> Iterator[ServedApp]:
    app = ServedApp(settings, workers=1).start()
    yield app
    app.stop()


def remote(
    settings: Settings, served: ServedApp, state: Path, member: Member, *extra: str
) -> tuple[int, dict[str, Any]]:
    done = run_ledger(
        settings,
        "log",
        "verify-remote",
        served.base,
        "--state",
        str(state),
        "--api-key",
        member.key,
        *extra,
        "--json",
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])


def test_a_member_follows_the_log_and_catches_a_fork(
    client: Any, alpha: Member, rt: Runtime, settings: Settings, served: ServedApp, tmp_path: Path
) -> None:
    state, receipts = tmp_path / "state.json", tmp_path / "receipts.json"
    receipts.write_text(json.dumps([report(client, alpha, f"r-{n}")["receipt"] for n in range(3)]))
    integrate(rt)
    code, first = remote(settings, served, state, alpha, "--receipts", str(receipts))
    assert code == 0, first
    assert (first["tree_size"], first["included"], first["trusted_on_first_use"]) == (3, 3, True)
    assert json.loads(state.read_text())["vkey"] == rt.log_signer.verifier.vkey()  # pinned

    # The log grows; the next run proves consistency from the saved checkpoint, and cosigns as a witness.
    mine = [report(client, alpha, f"r-{n}")["receipt"] for n in range(3, 6)]
    receipts.write_text(json.dumps(mine))
    integrate(rt)
    seed = base64.b64encode(bytes(range(32))).decode()
    code, second = remote(settings, served, state, alpha, "--receipts", str(receipts), "--witness-key", seed)
    assert code == 0, second
    assert (second["previous_size"], second["tree_size"], second["included"]) == (3, 6, 3)
    assert client.get("/v1/log/checkpoint").get_json()["cosignatures"] == 1

    # The operator rewrites history (the same events in another order) and re-signs it with the real key.
    with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("DELETE FROM log_cosignatures")
        conn.execute("DELETE FROM log_checkpoints")
        conn.execute("DELETE FROM log_nodes")
        conn.execute("DELETE FROM log_leaves")
        # The sequencer integrates in event order: renumbering the events in reverse re-orders the tree.
        conn.execute("UPDATE ledger_events SET id = 1000 - id")
        conn.execute("INSERT INTO log_pending SELECT id, leaf_hash FROM ledger_events")
    report(client, alpha, "r-6")
    integrate(rt)
    saved = state.read_text()
    code, forked = remote(settings, served, state, alpha)
    assert code == 1
    assert "fork" in forked["problem"]
    assert state.read_text() == saved  # the evidence is kept


def test_a_broken_promise_and_a_foreign_key_fail(
    client: Any, alpha: Member, rt: Runtime, settings: Settings, served: ServedApp, tmp_path: Path
) -> None:
    report(client, alpha, "kept")
    integrate(rt)
    late = report(client, alpha, "never-integrated")["receipt"]  # no sequencer runs after this one
    state = tmp_path / "state.json"

    # Within its MMD a pending leaf is fine; past it, it is a broken promise.
    ok = verify_remote.run(served.base, str(state), api_key=alpha.key, receipts_path=None, leaves=[])
    assert ok["ok"], ok
    (tmp_path / "late.json").write_text(json.dumps([late]))
    within = verify_remote.run(
        served.base, str(state), api_key=alpha.key, receipts_path=str(tmp_path / "late.json")
    )
    assert (within["ok"], within["pending"]) == (True, 1)
    after = datetime.now(UTC) + timedelta(seconds=rt.settings.log_mmd_seconds + 1)
    broken = verify_remote.run(
        served.base, str(state), api_key=alpha.key, receipts_path=str(tmp_path / "late.json"), now=after
    )
    assert not broken["ok"]
    assert "broken promise" in broken["problem"]

    # A forged promise fails even before the log is asked.
    (tmp_path / "forged.json").write_text(
        json.dumps([{**late, "integrate_by": "2099-01-01T00:00:00.000000Z"}])
    )
    forged = verify_remote.run(
        served.base, str(state), api_key=alpha.key, receipts_path=str(tmp_path / "forged.json")
    )
    assert not forged["ok"]
    assert "promise" in forged["problem"]

    # A checkpoint must be signed by the key the member pinned.
    other = note.Signer.from_seed(rt.settings.log_origin, bytes(32)).verifier.vkey()
    wrong = verify_remote.run(served.base, str(tmp_path / "other.json"), vkey=other, api_key=alpha.key)
    assert not wrong["ok"]
    assert "not signed by" in wrong["problem"]
    code, _ = remote(settings, served, tmp_path / "other2.json", alpha, "--vkey", other)
    assert code == 1
