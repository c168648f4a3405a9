"""The transparency log as members see it: receipts, checkpoints, proofs and witness cosignatures.

A member cannot replay the ledger's history (it must never see other members' events), but it can check,
with a few hashes, that its own events are in the log and that the log only ever grew. This module serves
what those checks need; ledger/services/sequencer.py writes the tree and ledger/services/verify_remote.py
is the member's side.

A platform only gets proofs for leaves of its own events; for any other leaf the answer is exactly the
answer for an unknown one, so a proof request never reveals that another platform reported anything.

The inquiry log (one leaf per lookup record) is served the same way under its own origin: its checkpoints
and consistency proofs are public, and a platform gets inclusion proofs only for its own lookups, with the
leaf itself so that it can check the leaf is of the answer it received.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from ledger.domain import merkle, note
from ledger.domain.decisions import record_leaf
from ledger.errors import InvalidInput, NotFound
from ledger.services.platforms import Principal
from ledger.services.runtime import Runtime
from ledger.storage import log as log_store
from ledger.storage.db import Connection
from ledger.storage.log import EVENTS, INQUIRIES, Tree

UNKNOWN_LEAF = "no such leaf in the log"
INQUIRY_LOG: Tree = INQUIRIES  # for the API layer, which names the tree it serves but never imports storage


def _signer(rt: Runtime, tree: Tree) -> note.Signer:
    return rt.inquiry_signer if tree is INQUIRIES else rt.log_signer


def signer(rt: Runtime) -> note.Signer:
    return rt.log_signer


def receipt(rt: Runtime, leaf_hash: bytes, received_at: datetime) -> dict[str, Any]:
    """What a 201 carries instead of a chain position: the leaf, when it was received, and the log's
    signed promise to include it by `integrate_by` (deterministic, so a replay gets the same bytes)."""
    origin = rt.settings.log_origin
    integrate_by = received_at + timedelta(seconds=rt.settings.log_mmd_seconds)
    return {
        "leaf_hash": leaf_hash.hex(),
        "received_at": note.format_time(received_at),
        "log_origin": origin,
        "integrate_by": note.format_time(integrate_by),
        "promise": note.sign_promise(signer(rt), origin, leaf_hash, received_at, integrate_by),
    }


def public_key(rt: Runtime, tree: Tree = EVENTS) -> dict[str, Any]:
    verifier = _signer(rt, tree).verifier
    return {
        "origin": verifier.name,
        "vkey": verifier.vkey(),
        "key_id": verifier.key_id.hex(),
        "public_key": base64.b64encode(verifier.public).decode(),
        "algorithm": "Ed25519",
        "mmd_seconds": rt.settings.log_mmd_seconds,
    }


def _checkpoint_view(conn: Connection, row: dict[str, Any], tree: Tree = EVENTS) -> dict[str, Any]:
    size = int(row["tree_size"])
    cosignatures = log_store.cosignature_lines(conn, size) if tree is EVENTS else []
    return {
        "tree_size": size,
        "root_hash": bytes(row["root_hash"]).hex(),
        "note": row["note"] + "".join(cosignatures),
        "cosignatures": len(cosignatures),
        "signed_at": row["signed_at"],
    }


def latest_checkpoint(rt: Runtime, tree: Tree = EVENTS) -> dict[str, Any]:
    with rt.db.transaction() as conn:
        row = log_store.latest_checkpoint(conn, tree)
        if row is None:
            raise NotFound("the log has no checkpoint yet; the sequencer signs one when it starts")
        return _checkpoint_view(conn, row, tree)


def checkpoint_at(rt: Runtime, size: int, tree: Tree = EVENTS) -> dict[str, Any]:
    if size >= 2**63:  # beyond bigint: no such checkpoint, and no query to fail
        raise NotFound(f"no checkpoint was signed at tree size {size}")
    with rt.db.transaction() as conn:
        row = log_store.checkpoint_at(conn, size, tree)
        if row is None:
            raise NotFound(f"no checkpoint was signed at tree size {size}")
        return _checkpoint_view(conn, row, tree)


def _proof(conn: Connection, ranges: Sequence[tuple[int, int]], tree: Tree = EVENTS) -> list[bytes]:
    stored = log_store.nodes(conn, merkle.nodes_needed(ranges), tree)
    return merkle.proof_from_nodes(ranges, lambda level, idx: stored[(level, idx)])


def _signed_size(conn: Connection, tree_size: int | None, tree: Tree = EVENTS) -> dict[str, Any]:
    latest = log_store.latest_checkpoint(conn, tree)
    if tree_size is None:
        if latest is None:
            raise NotFound(UNKNOWN_LEAF)
        return latest
    row = log_store.checkpoint_at(conn, tree_size, tree)
    if row is None:
        raise InvalidInput(
            "no checkpoint at that tree size", {"tree_size": ["is not the size of a signed checkpoint"]}
        )
    return row


def inclusion_proof(
    rt: Runtime,
    who: Principal,
    *,
    index: int | None = None,
    leaf_hash: bytes | None = None,
    tree_size: int | None = None,
) -> dict[str, Any]:
    """An inclusion proof for one of `who`'s leaves against a signed checkpoint (the latest by default).
    Autocommit, each read its own snapshot: no BEGIN and COMMIT round trips. That is safe because the
    tree is append-only and a checkpoint is signed only after its nodes committed, so any node a proof
    needs is visible to a read that starts after the checkpoint was read."""
    with rt.db.autocommit() as conn:
        leaf = log_store.leaf_for_platform(conn, who.platform_id, index=index, leaf_hash=leaf_hash)
        if leaf is None:
            raise NotFound(UNKNOWN_LEAF)
        return _inclusion(conn, int(leaf["idx"]), bytes(leaf["leaf_hash"]), tree_size)


def inquiry_inclusion_proof(
    rt: Runtime,
    who: Principal,
    *,
    index: int | None = None,
    lookup_id: UUID | None = None,
    tree_size: int | None = None,
) -> dict[str, Any]:
    """An inclusion proof in the inquiry log for one of `who`'s own lookups, by lookup id or leaf index,
    with the leaf itself (canonical JSON: the record's parts never erased, the salted commitment to its
    tokens and the SHA-256 of the answer's bytes). Another platform's lookup reads as unknown."""
    with rt.db.autocommit() as conn:
        found = log_store.inquiry_for_platform(conn, who.platform_id, index=index, lookup_id=lookup_id)
        if found is None:
            raise NotFound(UNKNOWN_LEAF)
        proof = _inclusion(conn, int(found["idx"]), bytes(found["leaf_hash"]), tree_size, INQUIRIES)
    return {**proof, "lookup_id": str(found["id"]), "leaf": record_leaf(found).decode()}


def _inclusion(
    conn: Connection, index: int, leaf: bytes, tree_size: int | None, tree: Tree = EVENTS
) -> dict[str, Any]:
    checkpoint = _signed_size(conn, tree_size, tree)
    size = int(checkpoint["tree_size"])
    if index >= size:
        if tree_size is None:
            raise NotFound(UNKNOWN_LEAF)  # integrated, but not yet under a signed checkpoint
        raise InvalidInput(
            "the leaf is not in the tree at that size",
            {"tree_size": [f"must be above the leaf index {index}"]},
        )
    return {
        "leaf_index": index,
        "leaf_hash": leaf.hex(),
        "tree_size": size,
        "root_hash": bytes(checkpoint["root_hash"]).hex(),
        "proof": [p.hex() for p in _proof(conn, merkle.inclusion_ranges(index, size), tree)],
        "checkpoint": checkpoint["note"],
    }


def consistency_proof(rt: Runtime, old: int, new: int, tree: Tree = EVENTS) -> dict[str, Any]:
    with rt.db.autocommit() as conn:  # as for inclusion_proof
        latest = log_store.latest_checkpoint(conn, tree)
        top = int(latest["tree_size"]) if latest else 0
        errors: dict[str, list[str]] = {}
        if not 0 < old <= new:
            errors["from"] = ["must be at least 1 and at most `to`"]
        if new > top:
            errors["to"] = [f"must be at most the latest checkpoint's size ({top})"]
        if errors:
            raise InvalidInput("no consistency proof between those sizes", errors)
        return {
            "from": old,
            "to": new,
            "proof": [p.hex() for p in _proof(conn, merkle.consistency_ranges(old, new), tree)],
        }


def wait_for_inclusion(
    rt: Runtime, leaf_hashes: Sequence[bytes], timeout: float
) -> dict[bytes, dict[str, Any]]:
    """Wait up to `timeout` seconds for the leaves to be under a signed checkpoint (RFC 7240
    `Prefer: wait`); return the inclusion proofs of those that are, against the latest checkpoint."""
    deadline = time.monotonic() + timeout
    wanted = list(dict.fromkeys(leaf_hashes))
    while True:
        with rt.db.transaction() as conn:
            latest = log_store.latest_checkpoint(conn)
            found: dict[bytes, dict[str, Any]] = {}
            if latest is not None:
                for row in log_store.leaves_by_hash(conn, wanted):
                    if int(row["idx"]) < int(latest["tree_size"]):
                        found.setdefault(bytes(row["leaf_hash"]), row)
            if len(found) == len(wanted) or time.monotonic() >= deadline:
                return {
                    h: _inclusion(conn, int(row["idx"]), h, int(latest["tree_size"]))
                    for h, row in found.items()
                    if latest is not None
                }
        time.sleep(0.05)


def add_cosignature(rt: Runtime, who: Principal, tree_size: int, vkey: str, line: str) -> dict[str, Any]:
    """Store a witness's tlog-cosignature/v1 on the checkpoint at `tree_size`, once it checks out."""
    try:
        verifier = note.Verifier.parse(vkey)
    except note.NoteError as exc:
        raise InvalidInput("the cosigner key is invalid", {"cosigner": [str(exc)]}) from exc
    if verifier.sig_type != note.COSIGNATURE_V1:
        raise InvalidInput(
            "the cosigner key is invalid", {"cosigner": ["must be a type 0x04 (cosignature) key"]}
        )
    if not line.endswith("\n"):
        line += "\n"
    try:
        _, [parsed] = note.split_note("x\n\n" + line)
    except (note.NoteError, ValueError) as exc:
        raise InvalidInput(
            "the signature line is invalid", {"signature": ["must be one note signature line"]}
        ) from exc
    with rt.db.transaction() as conn:
        row = log_store.checkpoint_at(conn, tree_size)
        if row is None:
            raise NotFound(f"no checkpoint was signed at tree size {tree_size}")
        text, _ = note.split_note(row["note"])
        try:
            timestamp = note.verify_cosignature(text, parsed, verifier)
        except note.NoteError as exc:
            raise InvalidInput("the cosignature does not verify", {"signature": [str(exc)]}) from exc
        if timestamp > time.time() + 300:
            raise InvalidInput(
                "the cosignature is from the future", {"signature": ["timestamp is in the future"]}
            )
        log_store.add_cosignature(
            conn, tree_size, verifier.vkey(), parsed.render(), timestamp, who.platform_id
        )
        return _checkpoint_view(conn, row)


def lag(rt: Runtime) -> dict[str, Any]:
    """How far the sequencer is behind: the age of the oldest pending leaf, against the MMD."""
    with rt.db.transaction() as conn:
        seconds = log_store.pending_age_seconds(conn)
        latest = log_store.latest_checkpoint(conn)
    return {
        "lag_seconds": round(seconds, 3),
        "mmd_seconds": rt.settings.log_mmd_seconds,
        "tree_size": int(latest["tree_size"]) if latest else 0,
        "within_mmd": seconds <= rt.settings.log_mmd_seconds,
    }
