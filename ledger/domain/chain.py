"""The canonical encoding of ledger events, and the leaf each event is in the transparency log.

Every verifier must reproduce an event's bytes exactly, so the encoding is JSON with sorted keys, no
whitespace and ASCII escapes, and refuses floats. A leaf (`leaf_bytes`) never contains a raw identity
token: identifiers enter the log only as a salted commitment (`identifiers_commitment`). Expiry deletes
the salt and the tokens, which shreds the link to the person, while every stored event still re-derives
the same leaf and every proof stays valid.

`entry_hash` and `first_bad_seq` are the hash chain of the release before the log: the upgrade checks
the chain with them before it turns its events into the log's first leaves (ledger/services/upgrade.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS_HASH = "0" * 64


def canonical(value: Any) -> bytes:
    """Deterministic bytes for a JSON-compatible value. Floats are refused: they do not round-trip."""
    return json.dumps(
        _reject_floats(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


# Exact types that need no walking. Checking `type(value)` first keeps the ABC `isinstance(.., Mapping)`
# machinery off the common path: canonical() runs several times per reported incident.
_PLAIN_TYPES = frozenset({str, int, bool, type(None)})


def _reject_floats(value: Any) -> Any:
    if type(value) in _PLAIN_TYPES:
        return value
    if isinstance(value, float):
        raise TypeError("floats are not allowed in chained payloads; use integers or strings")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError("payload keys must be strings")
            _reject_floats(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _reject_floats(item)
    return value


def format_time(at: datetime) -> str:
    """The one textual form of a timestamp inside the chain (UTC, microseconds)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def leaf_bytes(
    at: datetime, incident_id: str | None, kind: str, payload: Mapping[str, Any], platform_id: int | None
) -> bytes:
    """The log leaf of an event; `ledger_append` (schema.sql) builds the same bytes in SQL."""
    return canonical(
        {
            "at": format_time(at),
            "incident_id": incident_id,
            "kind": kind,
            "payload": payload,
            "platform_id": platform_id,
        }
    )


def entry_hash(prev_hash: str, seq: int, kind: str, at: datetime, payload: Mapping[str, Any]) -> str:
    body = {"prev": prev_hash, "seq": seq, "kind": kind, "at": format_time(at), "payload": payload}
    return hashlib.sha256(canonical(body)).hexdigest()


def identifiers_commitment(salt: bytes, tokens: Iterable[str]) -> str:
    """A salted digest of an incident's tokens; without the salt it links to nobody."""
    digest = hashlib.sha256(salt)
    for token in sorted(set(tokens)):
        digest.update(b"\n" + token.encode("ascii"))
    return digest.hexdigest()


@dataclass(frozen=True)
class ChainEvent:
    seq: int
    kind: str
    at: datetime
    payload: Mapping[str, Any]
    prev_hash: str
    entry_hash: str


def first_bad_seq(
    events: Iterable[ChainEvent], start_prev: str = GENESIS_HASH, start_seq: int = 1
) -> int | None:
    """Re-verify a run of events in order; return the first sequence number that does not check out."""
    expected_prev, expected_seq = start_prev, start_seq
    for event in events:
        if event.seq != expected_seq or event.prev_hash != expected_prev:
            return event.seq if event.seq == expected_seq else expected_seq
        if entry_hash(event.prev_hash, event.seq, event.kind, event.at, event.payload) != event.entry_hash:
            return event.seq
        expected_prev, expected_seq = event.entry_hash, event.seq + 1
    return None
