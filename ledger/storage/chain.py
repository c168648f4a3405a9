"""Appending to and reading the hash-chained event log.

Appends are serialised on the single `ledger_head` row (the chain can never fork). The lock, the hashing
and the inserts all happen inside PostgreSQL in one call to `ledger_append` (schema.sql). Reports, the
hot writer, append through `ledger_report` (ledger/storage/incidents.py), a single autocommit statement,
so they hold the lock only while the server works. Rarer writers (retraction, status changes, retention)
append here, inside their transactions, and hold the head until they commit.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg

from ledger.domain import chain
from ledger.storage.db import Connection

Cursor = psycopg.Cursor[dict[str, Any]]


@dataclass(frozen=True)
class NewEvent:
    kind: str
    incident_id: UUID | None
    payload: dict[str, Any]


@dataclass(frozen=True)
class Appended:
    seq: int
    entry_hash: str
    at: datetime


# A kind is spliced into the hashed text unescaped by `ledger_append` (schema.sql), which refuses the
# same strings; checking here as well reports a programming error before any lock is taken.
_PLAIN_KIND = re.compile(r"[A-Za-z0-9_]+")


def append(conn: Connection, events: Sequence[NewEvent]) -> list[Appended]:
    """Append events in the caller's transaction, in order; the head stays locked until it ends."""
    if not events:
        return []
    return _appended(_call_append(conn, events))


def _call_append(conn: Connection, events: Sequence[NewEvent]) -> Cursor:
    for event in events:
        if not _PLAIN_KIND.fullmatch(event.kind):
            raise ValueError(f"event kind {event.kind!r} must match {_PLAIN_KIND.pattern}")
    # Binary parameters: for a batch of 1,000 events, text-format arrays (quoting every JSON text on the
    # client, parsing it back on the server) took about three times as long as the append itself.
    return conn.execute(
        "SELECT seq, entry_hash, at FROM ledger_append(%b::text[], %b::uuid[], %b::text[])",
        (
            [event.kind for event in events],
            [event.incident_id for event in events],
            [chain.canonical(event.payload).decode("ascii") for event in events],
        ),
    )


def _appended(cursor: Cursor) -> list[Appended]:
    return [Appended(row["seq"], row["entry_hash"], row["at"]) for row in cursor.fetchall()]


def checkpoint(conn: Connection) -> dict[str, Any]:
    row = conn.execute("SELECT seq, head_hash, at FROM ledger_head").fetchone()
    assert row is not None
    return dict(row)


def head_seq(conn: Connection) -> int:
    row = conn.execute("SELECT seq FROM ledger_head").fetchone()
    return int(row["seq"]) if row else 0


def iter_events(conn: Connection, batch: int = 5000) -> Iterator[chain.ChainEvent]:
    last = 0
    while True:
        rows = conn.execute(
            """SELECT seq, kind, at, payload, prev_hash, entry_hash FROM ledger_events
               WHERE seq > %s ORDER BY seq LIMIT %s""",
            (last, batch),
        ).fetchall()
        if not rows:
            return
        for row in rows:
            yield chain.ChainEvent(
                row["seq"], row["kind"], row["at"], row["payload"], row["prev_hash"], row["entry_hash"]
            )
        last = rows[-1]["seq"]


def head_matches(conn: Connection, seq: int, entry_hash: str) -> bool:
    row = conn.execute("SELECT seq, head_hash FROM ledger_head").fetchone()
    return row is not None and int(row["seq"]) == seq and row["head_hash"] == entry_hash
