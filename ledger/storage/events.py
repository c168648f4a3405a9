"""Recording ledger events: each event row and its pending log leaf, in the caller's transaction.

No writer takes a log-wide lock: `ledger_append` (schema.sql) inserts the events and their pending rows,
and `ledger sequencer` gives them their places in the Merkle tree after commit (ledger/services/
sequencer.py). Reports, the hot writer, record through `ledger_report` (ledger/storage/incidents.py),
one autocommit statement; rarer writers (retraction, status changes, retention) append here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from ledger.domain import chain, merkle
from ledger.storage.db import Connection


@dataclass(frozen=True)
class NewEvent:
    kind: str
    incident_id: UUID | None
    payload: dict[str, Any]
    platform_id: int | None = None


@dataclass(frozen=True)
class Appended:
    id: int
    leaf_hash: bytes
    at: datetime


@dataclass(frozen=True)
class StoredEvent:
    id: int
    kind: str
    incident_id: UUID | None
    platform_id: int | None
    at: datetime
    payload: dict[str, Any]
    leaf_hash: bytes

    def derived_leaf_hash(self) -> bytes:
        incident = str(self.incident_id) if self.incident_id is not None else None
        return merkle.leaf_hash(
            chain.leaf_bytes(self.at, incident, self.kind, self.payload, self.platform_id)
        )


# A kind is spliced into the leaf unescaped by `ledger_append` (schema.sql), which refuses the same
# strings; checking here as well reports a programming error before anything is sent.
_PLAIN_KIND = re.compile(r"[A-Za-z0-9_]+")


def append(conn: Connection, events: Sequence[NewEvent]) -> list[Appended]:
    """Record events in the caller's transaction, in order."""
    if not events:
        return []
    for event in events:
        if not _PLAIN_KIND.fullmatch(event.kind):
            raise ValueError(f"event kind {event.kind!r} must match {_PLAIN_KIND.pattern}")
    # Binary parameters: for a batch of 1,000 events, text-format arrays (quoting every JSON text on the
    # client, parsing it back on the server) took about three times as long as the insert itself.
    rows = conn.execute(
        "SELECT id, leaf_hash, at FROM ledger_append(%b::text[], %b::uuid[], %b::bigint[], %b::text[])",
        (
            [event.kind for event in events],
            [event.incident_id for event in events],
            [event.platform_id for event in events],
            [chain.canonical(event.payload).decode("ascii") for event in events],
        ),
    ).fetchall()
    return [Appended(row["id"], bytes(row["leaf_hash"]), row["at"]) for row in rows]


def head_seq(conn: Connection) -> int:
    """The newest event id this snapshot sees. It never decreases from one snapshot to a later one (a
    later snapshot sees a superset of the committed events), which is all the score versions need."""
    row = conn.execute("SELECT coalesce(max(id), 0) AS id FROM ledger_events").fetchone()
    return int(row["id"]) if row else 0


def count(conn: Connection) -> int:
    row = conn.execute("SELECT count(*) AS n FROM ledger_events").fetchone()
    return int(row["n"]) if row else 0


def _stored(row: dict[str, Any]) -> StoredEvent:
    return StoredEvent(
        row["id"],
        row["kind"],
        row["incident_id"],
        row["platform_id"],
        row["at"],
        row["payload"],
        bytes(row["leaf_hash"]),
    )


def by_ids(conn: Connection, ids: Sequence[int]) -> dict[int, StoredEvent]:
    rows = conn.execute(
        """SELECT id, kind, incident_id, platform_id, at, payload, leaf_hash FROM ledger_events
           WHERE id = ANY(%s)""",
        (list(ids),),
    ).fetchall()
    return {row["id"]: _stored(row) for row in rows}


def iter_events(conn: Connection, batch: int = 5000) -> Iterator[StoredEvent]:
    last = 0
    while True:
        rows = conn.execute(
            """SELECT id, kind, incident_id, platform_id, at, payload, leaf_hash FROM ledger_events
               WHERE id > %s ORDER BY id LIMIT %s""",
            (last, batch),
        ).fetchall()
        if not rows:
            return
        for row in rows:
            yield _stored(row)
        last = rows[-1]["id"]
