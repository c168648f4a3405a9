"""`ledger sequencer` as a real process: one writer at a time, and no promise broken when it is killed.

The sequencer is the only thing that turns committed reports into signed history. If two could write,
the tree could fork; if a SIGKILL between its commit and its signature lost or duplicated a leaf, a
member's receipt would be a broken promise. So: 8 clients report while the sequencer is SIGKILLed and
restarted twice, and afterwards every 201 is in a signed checkpoint within the MMD, no index is used twice
or skipped, and every checkpoint is consistent with every later one.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from ledger.config import Settings
from ledger.domain import merkle, note
from ledger.services import transparency, verification
from ledger.services.runtime import Runtime
from tests.support import Member, SequencerProcess, check_receipt, report, wait_for

CLIENTS = 8
PER_CLIENT = 30


# Every test here runs `ledger sequencer` processes.
pytestmark = pytest.mark.process


def query(settings: Settings, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with psycopg.connect(settings.database_url or "", row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()


def pending(settings: Settings) -> int:
    return int(query(settings, "SELECT count(*) AS n FROM log_pending")[0]["n"])


def signed_size(settings: Settings) -> int:
    row = query(settings, "SELECT coalesce(max(tree_size), 0) AS n FROM log_checkpoints")
    return int(row[0]["n"])


def receipt_of(client: Any, member: Member, external_id: str) -> dict[str, Any]:
    """Report a consumer known only by a device of its own (so that reports never link) and return
    the receipt."""
    device = [{"type": "device_id", "value": external_id}]
    return dict(report(client, member, external_id, identifiers=device)["receipt"])


def assert_log_is_whole(settings: Settings, rt: Runtime, expected: int) -> None:
    leaves = query(settings, "SELECT idx, event_id FROM log_leaves ORDER BY idx")
    assert [r["idx"] for r in leaves] == list(range(expected))  # none skipped, none twice
    assert len({r["event_id"] for r in leaves}) == expected
    sizes = [
        int(r["tree_size"])
        for r in query(settings, "SELECT tree_size FROM log_checkpoints ORDER BY tree_size")
    ]
    assert sizes[-1] == expected
    with rt.db.transaction() as conn:
        top = note.open_checkpoint(
            conn.execute("SELECT note FROM log_checkpoints WHERE tree_size = %s", (expected,)).fetchone()[
                "note"
            ],  # type: ignore[index]
            rt.log_signer.verifier,
            rt.settings.log_origin,
        )
    roots = {
        int(r["tree_size"]): bytes(r["root_hash"]) for r in query(settings, "SELECT * FROM log_checkpoints")
    }
    for size in sizes:
        if 0 < size < expected:  # every checkpoint is consistent with the latest, hence with every later one
            proof = [bytes.fromhex(p) for p in transparency.consistency_proof(rt, size, expected)["proof"]]
            merkle.verify_consistency(size, expected, roots[size], top.root, proof)
    result = verification.verify(rt)
    assert result.ok, result


def test_two_sequencers_one_writer_and_a_standby_that_takes_over(
    app: Any, alpha: Member, rt: Runtime, settings: Settings
) -> None:
    client = app.test_client()
    first = SequencerProcess(settings).start(b"writer")
    second = SequencerProcess(settings).start(b"standby")
    try:
        for n in range(10):
            receipt_of(client, alpha, f"two-{n}")
        wait_for(lambda: pending(settings) == 0 and signed_size(settings) == 10, timeout=30)
        assert b"writer" not in second.log.read_bytes()  # the standby never wrote
        first.kill(9)
        wait_for(lambda: b"writer" in second.log.read_bytes(), timeout=30)
        for n in range(10, 20):
            receipt_of(client, alpha, f"two-{n}")
        wait_for(lambda: pending(settings) == 0 and signed_size(settings) == 20, timeout=30)
        assert_log_is_whole(settings, rt, 20)
    finally:
        first.stop()
        second.stop()


def test_sigkill_twice_while_eight_clients_report(
    app: Any, alpha: Member, rt: Runtime, settings: Settings
) -> None:
    receipts: list[dict[str, Any]] = []
    failures: list[str] = []
    lock = threading.Lock()
    started = threading.Barrier(CLIENTS + 1)

    def client_loop(n: int) -> None:
        client = app.test_client()
        started.wait()
        for i in range(PER_CLIENT):
            try:
                receipt = receipt_of(client, alpha, f"k{n}-{i}")
            except AssertionError as exc:
                failures.append(str(exc))
                continue
            with lock:
                receipts.append(receipt)
            time.sleep(0.01)

    sequencer = SequencerProcess(settings).start()
    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(CLIENTS)]
    try:
        for thread in threads:
            thread.start()
        started.wait()
        for _ in range(2):
            wait_for(lambda: signed_size(settings) > 0 and len(receipts) > 0, timeout=30)
            time.sleep(0.3)
            sequencer.kill(9)  # mid-stream: between commits, or inside one
            sequencer = SequencerProcess(settings).start()
        for thread in threads:
            thread.join(timeout=120)
        assert not failures, failures
        expected = CLIENTS * PER_CLIENT
        wait_for(lambda: pending(settings) == 0 and signed_size(settings) == expected, timeout=30)
    finally:
        sequencer.stop()

    assert_log_is_whole(settings, rt, expected)
    # Every 201's leaf is under a signed checkpoint signed by its integrate_by, with a valid proof.
    for receipt in receipts:
        leaf = check_receipt(rt, receipt)
        [row] = query(
            settings,
            """SELECT l.idx, (SELECT min(signed_at) FROM log_checkpoints c WHERE c.tree_size > l.idx) AS signed_at
               FROM log_leaves l WHERE l.leaf_hash = %s""",
            (leaf,),
        )
        promised = datetime.strptime(receipt["integrate_by"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        assert row["signed_at"] <= promised, (receipt, row)
        proof = (
            app.test_client()
            .get(f"/v1/log/inclusion?leaf_hash={leaf.hex()}", headers=alpha.headers)
            .get_json()
        )
        cp = note.open_checkpoint(proof["checkpoint"], rt.log_signer.verifier, rt.settings.log_origin)
        merkle.verify_inclusion(
            proof["leaf_index"], cp.size, leaf, [bytes.fromhex(p) for p in proof["proof"]], cp.root
        )
