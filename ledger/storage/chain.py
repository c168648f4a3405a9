"""Appending to and reading the hash-chained event log.

Writers take the single `ledger_head` row FOR UPDATE as the last step before commit, so appends are
serialised (the chain can never fork) while everything else in the transaction runs in parallel.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from ledger.domain import chain
from ledger.storage.db import Connection


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


def append(conn: Connection, events: Sequence[NewEvent]) -> list[Appended]:
    head = conn.execute("SELECT seq, head_hash FROM ledger_head FOR UPDATE").fetchone()
    assert head is not None, "ledger_head is seeded by schema.sql"
    seq, prev = int(head["seq"]), str(head["head_hash"])
    at = datetime.now(UTC)
    rows, out = [], []
    for event in events:
        seq += 1
        digest = chain.entry_hash(prev, seq, event.kind, at, event.payload)
        rows.append((seq, event.kind, event.incident_id, at, Jsonb(event.payload), prev, digest))
        out.append(Appended(seq, digest, at))
        prev = digest
    with conn.cursor() as cur:
        if len(rows) > 50:
            with cur.copy(
                "COPY ledger_events (seq, kind, incident_id, at, payload, prev_hash, entry_hash) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row((*row[:4], chain.canonical(row[4].obj).decode(), *row[5:]))
        else:
            cur.executemany(
                """INSERT INTO ledger_events (seq, kind, incident_id, at, payload, prev_hash, entry_hash)
                   VALUES (%s, %s, %s, %s, %s, %s, %s)""",
                rows,
            )
    conn.execute("UPDATE ledger_head SET seq = %s, head_hash = %s, at = %s", (seq, prev, at))
    return out


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
