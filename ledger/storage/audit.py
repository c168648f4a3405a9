"""The lookup audit trail (append-only; the table's trigger refuses changes except token erasure).

Each record is also a leaf of the inquiry log: the statement that inserts the records queues their leaves
for `ledger sequencer` in the same transaction, so a record and its pending leaf commit together, with one
round trip and no lock (schema.sql, "The inquiry log").
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from ledger.storage.db import Connection

COLUMNS = (
    "id, platform_id, key_id, purpose, refund_ref, tokens, salt, tokens_commitment, tier, reasons, response, at, "
    "leaf_hash, operator_ref"
)


def text_array(values: Sequence[str] | None) -> str | None:
    """A PostgreSQL array literal of `values`, every element quoted (so any text survives) or None."""
    if values is None:
        return None
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"


def insert_many(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """All rows in one INSERT statement: on an autocommit connection (`Database.autocommit`) that is one
    round trip, atomic for a batch, and durable when it returns. `response` is the answer's JSON text,
    exactly as sent to the client."""
    if not rows:
        return
    # tokens (6th) and reasons (10th) go as array literals: psycopg's list dumper inspects every element
    # to choose a type, which cost about 25 µs of the API's CPU per record (benchmarks note in
    # docs/performance.md); the literal is the same text[] value.
    one_row = "(%s, %s, %s, %s, %s, %s::text[], %s, %s, %s, %s::text[], %s::jsonb, %s, %s, %s)"
    # Within one batch the leaves' order is of no importance (they share a time); the sequencer numbers
    # them in the order they were queued.
    conn.execute(
        f"""WITH ins AS (INSERT INTO lookups ({COLUMNS}) VALUES {", ".join([one_row] * len(rows))}
                         RETURNING id, leaf_hash)
            INSERT INTO inquiry_pending (lookup_id, leaf_hash) SELECT id, leaf_hash FROM ins""",
        [
            value
            for r in rows
            for value in (
                r["id"],
                r["platform_id"],
                r["key_id"],
                r["purpose"],
                r["refund_ref"],
                text_array(r["tokens"]),
                r["salt"],
                r["tokens_commitment"],
                r["tier"],
                text_array(r["reasons"]),
                r["response"],
                r["at"],
                r["leaf_hash"],
                r.get("operator_ref"),
            )
        ],
    )


def get_for_platform(conn: Connection, lookup_id: UUID, platform_id: int) -> dict[str, Any] | None:
    return conn.execute(
        "SELECT response FROM lookups WHERE id = %s AND platform_id = %s", (lookup_id, platform_id)
    ).fetchone()


def iter_rows(conn: Connection, after: UUID | None, limit: int) -> list[dict[str, Any]]:
    return conn.execute(
        f"""SELECT {COLUMNS} FROM lookups WHERE (%s::uuid IS NULL OR id > %s) ORDER BY id LIMIT %s""",
        (after, after, limit),
    ).fetchall()


def for_tokens(conn: Connection, tokens: Sequence[str], since: datetime) -> list[dict[str, Any]]:
    return conn.execute(
        """SELECT l.at, l.purpose, p.slug, p.name FROM lookups l JOIN platforms p ON p.id = l.platform_id
           WHERE l.tokens && %s::text[] AND l.at >= %s ORDER BY l.at DESC""",
        (list(tokens), since),
    ).fetchall()


def erase_before(conn: Connection, before: datetime, limit: int) -> int:
    conn.execute("SET LOCAL ledger.erasure = 'on'")
    cur = conn.execute(
        """UPDATE lookups SET tokens = NULL, refund_ref = NULL, salt = NULL
           WHERE id IN (SELECT id FROM lookups WHERE at < %s AND tokens IS NOT NULL LIMIT %s)""",
        (before, limit),
    )
    return cur.rowcount


def fishing_report(conn: Connection, since: datetime) -> list[dict[str, Any]]:
    return conn.execute(
        """SELECT p.slug, l.purpose, count(*) AS lookups,
                  count(*) FILTER (WHERE l.refund_ref IS NULL) AS without_reference
           FROM lookups l JOIN platforms p ON p.id = l.platform_id WHERE l.at >= %s
           GROUP BY p.slug, l.purpose ORDER BY p.slug, l.purpose""",
        (since,),
    ).fetchall()


def count(conn: Connection) -> int:
    row = conn.execute("SELECT count(*) AS n FROM lookups").fetchone()
    return int(row["n"]) if row else 0
