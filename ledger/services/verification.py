"""Tamper evidence: re-verify the whole hash chain and every lookup audit record.

`ledger verify` runs this; exit code 1 names the first bad sequence number (or lookup id).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.domain import chain
from ledger.domain.decisions import audit_row_hash, lookup_commitment
from ledger.services.runtime import Runtime
from ledger.storage import audit
from ledger.storage import chain as chain_store
from ledger.storage import console as console_store


@dataclass(frozen=True)
class Verification:
    ok: bool
    events: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None = None
    lookups: int = 0
    bad_lookup: str | None = None
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def checkpoint(rt: Runtime) -> dict[str, Any]:
    with rt.db.transaction() as conn:
        return chain_store.checkpoint(conn)


def verify(rt: Runtime) -> Verification:
    with rt.db.transaction(isolation="REPEATABLE READ") as conn:
        head = chain_store.checkpoint(conn)
        count, prev, expected = 0, chain.GENESIS_HASH, 1
        bad = None
        for event in chain_store.iter_events(conn):
            bad = chain.first_bad_seq([event], prev, expected)
            if bad is not None:
                break
            prev, expected, count = event.entry_hash, event.seq + 1, count + 1
        if bad is None and (expected - 1 != head["seq"] or prev != head["head_hash"]):
            bad = expected if expected - 1 < head["seq"] else head["seq"]
        if bad is not None:
            return Verification(
                False, count, head["seq"], head["head_hash"], bad, problem=f"ledger event {bad}"
            )
        lookups, bad_lookup, after = 0, None, None
        while bad_lookup is None:
            rows = audit.iter_rows(conn, after, 5000)
            if not rows:
                break
            for row in rows:
                lookups += 1
                if not _lookup_ok(row):
                    bad_lookup = str(row["id"])
                    break
            after = rows[-1]["id"]
    if bad_lookup is not None:
        return Verification(
            False,
            count,
            head["seq"],
            head["head_hash"],
            None,
            lookups,
            bad_lookup,
            problem=f"lookup record {bad_lookup}",
        )
    return Verification(True, count, head["seq"], head["head_hash"], lookups=lookups)


def record_run(rt: Runtime, result: Verification) -> None:
    """Keep the outcome of a `ledger verify` run, for the console's ledger status page."""
    with rt.db.transaction() as conn:
        console_store.record_verification(conn, result.ok, result.as_dict())


def _lookup_ok(row: dict[str, Any]) -> bool:
    expected = audit_row_hash(
        str(row["id"]),
        row["platform_id"],
        row["key_id"],
        row["purpose"],
        row["tokens_commitment"],
        row["tier"],
        row["reasons"],
        chain.format_time(row["at"]),
        operator_ref=row["operator_ref"],
    )
    if expected != row["row_hash"]:
        return False
    if row["tokens"] is not None and row["salt"] is not None:
        return (
            lookup_commitment(bytes(row["salt"]), row["tokens"], row["refund_ref"])
            == row["tokens_commitment"]
        )
    return True
