"""Tamper evidence: `ledger verify` re-checks the whole transparency log and the inquiry log over every
lookup audit record.

In one snapshot it walks the leaves in index order and checks that:
- the indices run 0, 1, 2, ... with none skipped or repeated;
- each leaf re-derives from its event row (ledger/domain/chain.py `leaf_bytes`), so a changed or deleted
  event row is named by its leaf index;
- the interior nodes that proofs are served from are the ones the leaves imply;
- the root at every signed checkpoint's size equals that checkpoint's root, and every checkpoint's
  signature verifies with the log key, so a cut or rewritten log is named by the checkpoint it breaks;
- events recorded before the log (the chain of the previous release) still chain;
- every event is either a leaf or pending, never neither.
Then it walks the inquiry log the same way: each leaf re-derives from its lookup record (the parts never
erased, the salted commitment and the digest of the answer as sent: ledger/domain/decisions.py
`inquiry_leaf`), so a changed or deleted record is named by its leaf index and lookup id; its nodes and
signed checkpoints (under the inquiry log's origin) match; and every record is a leaf or pending.
Exit code 1 names the first problem found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.domain import chain, merkle, note
from ledger.domain.decisions import lookup_commitment, record_leaf
from ledger.errors import ConfigError
from ledger.services.runtime import Runtime
from ledger.storage import audit
from ledger.storage import console as console_store
from ledger.storage import events as event_store
from ledger.storage import log as log_store
from ledger.storage.db import Connection


@dataclass(frozen=True)
class Verification:
    ok: bool
    leaves: int
    pending: int
    tree_size: int
    root_hash: str
    checkpoints: int
    first_bad_index: int | None = None
    lookups: int = 0
    bad_lookup: str | None = None
    problem: str | None = None
    inquiry_tree_size: int = 0
    inquiry_pending: int = 0
    inquiry_checkpoints: int = 0
    inquiry_root_hash: str = ""
    first_bad_inquiry: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


class _Bad(Exception):
    def __init__(self, problem: str, index: int | None = None, lookup_id: str | None = None) -> None:
        super().__init__(problem)
        self.problem, self.index, self.lookup_id = problem, index, lookup_id


def _verifiers(rt: Runtime, conn: Connection, tree: log_store.Tree = log_store.EVENTS) -> list[note.Verifier]:
    """The configured log key when there is one; otherwise (`ledger verify` needs only DATABASE_URL) the
    keys the sequencer recorded in `log_keys`, those named for this tree's log."""
    inquiries = tree is log_store.INQUIRIES
    try:
        return [rt.inquiry_signer.verifier if inquiries else rt.log_signer.verifier]
    except ConfigError:
        recorded = [note.Verifier.parse(v) for v in log_store.recorded_keys(conn)]
        return [v for v in recorded if v.name.endswith("/inquiries") == inquiries]


def verify(rt: Runtime, batch: int = 5000) -> Verification:
    with rt.db.transaction(isolation="REPEATABLE READ") as conn:
        verifiers = _verifiers(rt, conn)
        checkpoints = log_store.iter_checkpoints(conn)
        pending = log_store.pending_count(conn)
        compact = merkle.CompactRange()
        try:
            _check_checkpoint_notes(checkpoints, verifiers)
            _walk_leaves(conn, compact, checkpoints, batch)
            top = int(checkpoints[-1]["tree_size"]) if checkpoints else 0
            if top > compact.size:
                raise _Bad(
                    f"log cut: a checkpoint was signed at size {top} but only {compact.size} leaves remain",
                    compact.size,
                )
            events = event_store.count(conn)
            if events != compact.size + pending:
                raise _Bad(
                    f"{events} events but {compact.size} leaves and {pending} pending: an event row was added "
                    "outside the log or a leaf's event is gone"
                )
        except _Bad as bad:
            return Verification(
                False,
                compact.size,
                pending,
                compact.size,
                compact.root().hex(),
                len(checkpoints),
                bad.index,
                problem=bad.problem,
            )
        result = Verification(
            True, compact.size, pending, compact.size, compact.root().hex(), len(checkpoints)
        )
        return _verify_inquiries(rt, conn, result, batch)


def _verify_inquiries(rt: Runtime, conn: Connection, result: Verification, batch: int) -> Verification:
    tree = log_store.INQUIRIES
    checkpoints = log_store.iter_checkpoints(conn, tree)
    pending = log_store.pending_count(conn, tree)
    compact = merkle.CompactRange()
    bad: _Bad | None = None
    try:
        _check_checkpoint_notes(checkpoints, _verifiers(rt, conn, tree), "inquiry log ")
        _walk_inquiries(conn, compact, checkpoints, batch)
        top = int(checkpoints[-1]["tree_size"]) if checkpoints else 0
        if top > compact.size:
            raise _Bad(
                f"inquiry log cut: a checkpoint was signed at size {top} but only {compact.size} leaves remain",
                compact.size,
            )
        _check_pending_inquiries(conn)
        records = audit.count(conn)
        if records != compact.size + pending:
            raise _Bad(
                f"{records} lookup records but {compact.size} inquiry leaves and {pending} pending: a record was "
                "added outside the log or a leaf's record is gone"
            )
    except _Bad as exc:
        bad = exc
    done = {
        **result.as_dict(),
        "lookups": compact.size + pending,
        "inquiry_tree_size": compact.size,
        "inquiry_pending": pending,
        "inquiry_checkpoints": len(checkpoints),
        "inquiry_root_hash": compact.root().hex(),
    }
    if bad is None:
        return Verification(**done)
    return Verification(
        **{
            **done,
            "ok": False,
            "first_bad_inquiry": bad.index,
            "bad_lookup": bad.lookup_id,
            "problem": bad.problem,
        }
    )


def _check_checkpoint_notes(
    checkpoints: list[dict[str, Any]], verifiers: list[note.Verifier], which: str = ""
) -> None:
    """Each checkpoint is signed by a log key, and its origin is that key's name (the log's origin)."""
    if checkpoints and not verifiers:
        raise _Bad(
            f"no log key to check the {which}checkpoints with: set LEDGER_LOG_KEY (or run the sequencer once)"
        )
    for row in checkpoints:
        size = int(row["tree_size"])
        signed, error = None, None
        for verifier in verifiers:
            try:
                signed = note.open_checkpoint(row["note"], verifier, verifier.name)
                break
            except note.NoteError as exc:
                error = exc
        if signed is None:
            raise _Bad(f"{which}checkpoint at size {size}: {error}")
        if signed.size != size or signed.root != bytes(row["root_hash"]):
            raise _Bad(
                f"{which}checkpoint at size {size}: its signed note says size {signed.size} and another root"
            )


def _walk_leaves(
    conn: Connection, compact: merkle.CompactRange, checkpoints: list[dict[str, Any]], batch: int
) -> None:
    due = [(int(c["tree_size"]), bytes(c["root_hash"])) for c in checkpoints]
    due.reverse()  # pop from the end, smallest size first
    last_good = 0
    while due and due[-1][0] == 0:
        if due.pop()[1] != merkle.EMPTY_ROOT:
            raise _Bad("checkpoint at size 0 does not have the empty root", 0)
    chain_prev, chain_seq = chain.GENESIS_HASH, 1
    after = -1
    while True:
        rows = log_store.leaves_with_events(conn, after, batch)
        if not rows:
            return
        created: list[tuple[int, int, bytes]] = []
        for row in rows:
            index = int(row["idx"])
            if index != compact.size:
                raise _Bad(f"leaf {compact.size} is missing (the next stored leaf is {index})", compact.size)
            if row["id"] is None:
                raise _Bad(f"leaf {index}: its event row is deleted", index)
            event = event_store.StoredEvent(
                row["id"],
                row["kind"],
                row["incident_id"],
                row["platform_id"],
                row["at"],
                row["payload"],
                bytes(row["leaf_hash"]),
            )
            stored = bytes(row["stored"])
            if event.derived_leaf_hash() != event.leaf_hash:
                raise _Bad(f"leaf {index}: its event row (event {event.id}) was changed", index)
            if event.leaf_hash != stored:
                raise _Bad(f"leaf {index}: the stored leaf is not its event's (event {event.id})", index)
            if row["entry_hash"] is not None:  # recorded by the hash chain before the log
                legacy = chain.ChainEvent(
                    chain_seq, event.kind, event.at, event.payload, row["prev_hash"], row["entry_hash"]
                )
                if chain.first_bad_seq([legacy], chain_prev, chain_seq) is not None:
                    raise _Bad(f"leaf {index}: the pre-log chain entry {chain_seq} does not chain", index)
                chain_prev, chain_seq = row["entry_hash"], chain_seq + 1
            created.extend(compact.append(stored))
            last_good = _match_checkpoints(compact, due, last_good, "checkpoint")
        _check_nodes(conn, created)
        after = int(rows[-1]["idx"])


def _match_checkpoints(
    compact: merkle.CompactRange, due: list[tuple[int, bytes]], last_good: int, what: str
) -> int:
    """Check every stored checkpoint whose size the recomputed tree has just reached (`due`, largest
    first) against its root; return the largest size known good so far."""
    while due and due[-1][0] == compact.size:
        size, root = due.pop()
        if compact.root() != root:
            raise _Bad(
                f"{what} at size {size} does not match the leaves: a leaf from {last_good} to "
                f"{size - 1} was changed or reordered",
                last_good,
            )
        last_good = size
    return last_good


def _check_nodes(
    conn: Connection, created: list[tuple[int, int, bytes]], tree: log_store.Tree = log_store.EVENTS
) -> None:
    if not created:
        return
    created = log_store.stored_nodes(created)  # the others are recomputed from the leaves checked here
    if not created:
        return
    stored = log_store.nodes(conn, [(level, idx) for level, idx, _ in created], tree)
    for level, idx, value in created:
        if stored.get((level, idx)) != value:
            first = idx << level
            raise _Bad(
                f"stored {'inquiry log ' if tree is log_store.INQUIRIES else ''}node {level}/{idx} (leaves "
                f"{first} to {first + (1 << level) - 1}) is wrong or missing; proofs served from it would fail",
                first,
            )


def record_run(rt: Runtime, result: Verification) -> None:
    """Keep the outcome of a `ledger verify` run, for the console's ledger status page."""
    with rt.db.transaction() as conn:
        console_store.record_verification(conn, result.ok, result.as_dict())


def _record_problem(row: dict[str, Any]) -> str | None:
    """What is wrong with a lookup record against its own leaf hash, or None."""
    if merkle.leaf_hash(record_leaf(row)) != bytes(row["leaf_hash"]):
        return "was changed"
    if (
        row["tokens"] is not None
        and row["salt"] is not None
        and lookup_commitment(bytes(row["salt"]), row["tokens"], row["refund_ref"])
        != row["tokens_commitment"]
    ):
        return "has tokens or a refund reference its commitment does not cover"
    return None


def _walk_inquiries(
    conn: Connection, compact: merkle.CompactRange, checkpoints: list[dict[str, Any]], batch: int
) -> None:
    tree = log_store.INQUIRIES
    due = [(int(c["tree_size"]), bytes(c["root_hash"])) for c in checkpoints]
    due.reverse()
    last_good = 0
    while due and due[-1][0] == 0:
        if due.pop()[1] != merkle.EMPTY_ROOT:
            raise _Bad("inquiry checkpoint at size 0 does not have the empty root", 0)
    after = -1
    while True:
        rows = log_store.inquiry_leaves_with_records(conn, after, batch)
        if not rows:
            return
        created: list[tuple[int, int, bytes]] = []
        for row in rows:
            index, lookup_id = int(row["idx"]), str(row["leaf_of"])
            if index != compact.size:
                raise _Bad(
                    f"inquiry leaf {compact.size} is missing (the next stored leaf is {index})", compact.size
                )
            if row["id"] is None:
                raise _Bad(
                    f"inquiry leaf {index}: its lookup record {lookup_id} is deleted", index, lookup_id
                )
            problem = _record_problem(row)
            if problem is not None:
                raise _Bad(f"inquiry leaf {index}: lookup record {lookup_id} {problem}", index, lookup_id)
            stored = bytes(row["stored"])
            if stored != bytes(row["leaf_hash"]):
                raise _Bad(
                    f"inquiry leaf {index}: the stored leaf is not its record's ({lookup_id})",
                    index,
                    lookup_id,
                )
            created.extend(compact.append(stored))
            last_good = _match_checkpoints(compact, due, last_good, "inquiry checkpoint")
        _check_nodes(conn, created, tree)
        after = int(rows[-1]["idx"])


def _check_pending_inquiries(conn: Connection) -> None:
    """Records not yet integrated are checked against their own leaf hash and their pending leaf."""
    for row in log_store.pending_inquiries_with_records(conn):
        lookup_id = str(row["leaf_of"])
        if row["id"] is None:
            raise _Bad(f"pending inquiry leaf: its lookup record {lookup_id} is deleted", None, lookup_id)
        problem = _record_problem(row) or (
            None if bytes(row["stored"]) == bytes(row["leaf_hash"]) else "is not its pending leaf"
        )
        if problem is not None:
            raise _Bad(f"pending inquiry leaf: lookup record {lookup_id} {problem}", None, lookup_id)
