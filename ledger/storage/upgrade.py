"""Upgrading a database made by the release before the transparency log, in place, from `ledger db init`.

That release kept one hash chain (`ledger_events.seq`, `prev_hash`, `entry_hash`, serialised on the
`ledger_head` row). The upgrade first re-checks the whole chain and refuses a broken one (signing a
forged history into the log would make it unverifiable for ever); then it keeps every event row and its
chain hashes, gives each event its leaf (ledger/domain/chain.py `leaf_bytes`) and queues all of them, in
chain order, as the log's first leaves. `ledger sequencer` integrates them like any other pending leaf,
so they get indices 0..n-1 in the chain's order, and `ledger verify` still checks the old chain links.

The lookup trail of a release before the inquiry log kept a digest per row (`row_hash`). The upgrade
re-checks every row against its digest and its salted commitment and refuses a bad one, for the same
reason; then it gives each row its inquiry leaf (ledger/domain/decisions.py `inquiry_leaf`), drops the
digest, and queues every row, oldest first, as the inquiry log's first leaves.

`before_schema` runs before schema.sql, `after_schema` after it; both do nothing on a database that is
already upgraded, and each step is one transaction, so an interrupted upgrade resumes on the next init.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from ledger.domain import chain, merkle
from ledger.domain.decisions import audit_row_hash, lookup_commitment, record_leaf


class UpgradeRefused(RuntimeError):
    """The previous release's chain does not verify; nothing was changed."""


def _has_column(conn: psycopg.Connection[Any], table: str, column: str) -> bool:
    row = conn.execute(
        """SELECT 1 FROM information_schema.columns
           WHERE table_schema = current_schema() AND table_name = %s AND column_name = %s""",
        (table, column),
    ).fetchone()
    return row is not None


def _has_table(conn: psycopg.Connection[Any], table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def before_schema(conn: psycopg.Connection[Any], batch: int = 5000) -> bool:
    """Reshape a chained `ledger_events` into the log's event table, and a lookup trail with per-row
    digests into the inquiry log's records. True when it did something."""
    events = _events_before_schema(conn, batch)
    return _lookups_before_schema(conn, batch) or events


def _lookups_before_schema(conn: psycopg.Connection[Any], batch: int) -> bool:
    if not _has_table(conn, "lookups") or not _has_column(conn, "lookups", "row_hash"):
        return False
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute("LOCK TABLE lookups IN ACCESS EXCLUSIVE MODE")
        cur.execute(
            "ALTER TABLE lookups ADD COLUMN IF NOT EXISTS operator_ref text CHECK (length(operator_ref) <= 128)"
        )
        cur.execute("ALTER TABLE lookups ADD COLUMN IF NOT EXISTS leaf_hash bytea")
        cur.execute("ALTER TABLE lookups DISABLE TRIGGER USER")
        after = None
        while True:
            rows = cur.execute(
                """SELECT id, platform_id, key_id, purpose, refund_ref, tokens, salt, tokens_commitment, tier,
                          reasons, response, at, row_hash, operator_ref
                   FROM lookups WHERE (%s::uuid IS NULL OR id > %s) ORDER BY id LIMIT %s""",
                (after, after, batch),
            ).fetchall()
            if not rows:
                break
            for r in rows:
                _check_old_lookup(r)
            cur.execute(
                """UPDATE lookups k SET leaf_hash = u.h
                   FROM unnest(%s::uuid[], %s::bytea[]) AS u (id, h) WHERE k.id = u.id""",
                ([r["id"] for r in rows], [merkle.leaf_hash(record_leaf(r)) for r in rows]),
            )
            after = rows[-1]["id"]
        cur.execute("ALTER TABLE lookups ALTER COLUMN leaf_hash SET NOT NULL")
        cur.execute(
            "ALTER TABLE lookups ADD CONSTRAINT lookups_leaf_hash_check CHECK (length(leaf_hash) = 32)"
        )
        cur.execute("ALTER TABLE lookups DROP COLUMN row_hash")
        cur.execute("ALTER TABLE lookups ENABLE TRIGGER USER")
    return True


def _check_old_lookup(r: dict[str, Any]) -> None:
    digest = audit_row_hash(
        str(r["id"]),
        r["platform_id"],
        r["key_id"],
        r["purpose"],
        r["tokens_commitment"],
        r["tier"],
        r["reasons"],
        chain.format_time(r["at"]),
        operator_ref=r["operator_ref"],
    )
    if digest != r["row_hash"]:
        raise UpgradeRefused(f"lookup record {r['id']} does not match its row hash; nothing was changed")
    if (
        r["tokens"] is not None
        and r["salt"] is not None
        and lookup_commitment(bytes(r["salt"]), r["tokens"], r["refund_ref"]) != r["tokens_commitment"]
    ):
        raise UpgradeRefused(f"lookup record {r['id']} does not match its commitment; nothing was changed")


def _events_before_schema(conn: psycopg.Connection[Any], batch: int) -> bool:
    if not _has_table(conn, "ledger_events") or not _has_column(conn, "ledger_events", "seq"):
        return False
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute("LOCK TABLE ledger_events IN ACCESS EXCLUSIVE MODE")
        _check_chain(cur, batch)
        cur.execute("ALTER TABLE ledger_events DISABLE TRIGGER ledger_events_append_only")
        cur.execute("ALTER TABLE ledger_events RENAME COLUMN seq TO id")
        cur.execute("ALTER TABLE ledger_events ALTER COLUMN prev_hash DROP NOT NULL")
        cur.execute("ALTER TABLE ledger_events ALTER COLUMN entry_hash DROP NOT NULL")
        cur.execute("ALTER TABLE ledger_events DROP CONSTRAINT IF EXISTS ledger_events_entry_hash_key")
        cur.execute("ALTER TABLE ledger_events ADD COLUMN platform_id bigint, ADD COLUMN leaf_hash bytea")
        cur.execute(
            """UPDATE ledger_events e SET platform_id = i.platform_id FROM incidents i
               WHERE i.id = e.incident_id"""
        )
        after = 0
        while True:
            rows = cur.execute(
                """SELECT id, kind, incident_id, platform_id, at, payload FROM ledger_events
                   WHERE id > %s ORDER BY id LIMIT %s""",
                (after, batch),
            ).fetchall()
            if not rows:
                break
            hashes = [
                merkle.leaf_hash(
                    chain.leaf_bytes(
                        r["at"],
                        str(r["incident_id"]) if r["incident_id"] is not None else None,
                        r["kind"],
                        r["payload"],
                        r["platform_id"],
                    )
                )
                for r in rows
            ]
            cur.execute(
                """UPDATE ledger_events e SET leaf_hash = u.h
                   FROM unnest(%s::bigint[], %s::bytea[]) AS u (id, h) WHERE e.id = u.id""",
                ([r["id"] for r in rows], hashes),
            )
            after = rows[-1]["id"]
        cur.execute(
            """ALTER TABLE ledger_events ALTER COLUMN leaf_hash SET NOT NULL,
                   ADD CONSTRAINT ledger_events_leaf_hash_check CHECK (length(leaf_hash) = 32)"""
        )
        start = int(cur.execute("SELECT coalesce(max(id), 0) + 1 AS n FROM ledger_events").fetchone()["n"])  # type: ignore[index]
        cur.execute(
            f"ALTER TABLE ledger_events ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY (START WITH {start})"
        )
        cur.execute("ALTER TABLE ledger_events ENABLE TRIGGER ledger_events_append_only")
    return True


def _check_chain(cur: psycopg.Cursor[dict[str, Any]], batch: int) -> None:
    prev, expected, after = chain.GENESIS_HASH, 1, 0
    while True:
        rows = cur.execute(
            """SELECT seq, kind, at, payload, prev_hash, entry_hash FROM ledger_events
               WHERE seq > %s ORDER BY seq LIMIT %s""",
            (after, batch),
        ).fetchall()
        if not rows:
            break
        events = [
            chain.ChainEvent(r["seq"], r["kind"], r["at"], r["payload"], r["prev_hash"], r["entry_hash"])
            for r in rows
        ]
        bad = chain.first_bad_seq(events, prev, expected)
        if bad is not None:
            raise UpgradeRefused(f"the previous release's chain is broken at seq {bad}; nothing was changed")
        prev, expected, after = events[-1].entry_hash, events[-1].seq + 1, events[-1].seq
    if _has_table_cur(cur, "ledger_head"):
        head = cur.execute("SELECT seq, head_hash FROM ledger_head").fetchone()
        if head is not None and (int(head["seq"]) != expected - 1 or head["head_hash"] != prev):
            raise UpgradeRefused("the previous release's chain was cut below its head; nothing was changed")


def _has_table_cur(cur: psycopg.Cursor[dict[str, Any]], table: str) -> bool:
    row = cur.execute("SELECT to_regclass(%s) IS NOT NULL AS ok", (table,)).fetchone()
    return bool(row and row["ok"])


def after_schema(conn: psycopg.Connection[Any]) -> int:
    """Queue upgraded lookup records as the inquiry log's first leaves, then the upgraded events as the
    event log's and drop the chain's head. Returns how many events were queued."""
    queue_inquiries(conn)
    if not _has_table(conn, "ledger_head"):
        return 0
    with conn.transaction():
        queued = conn.execute(
            """INSERT INTO log_pending (event_id, leaf_hash)
               SELECT e.id, e.leaf_hash FROM ledger_events e
               WHERE NOT EXISTS (SELECT 1 FROM log_leaves l WHERE l.event_id = e.id)
               ON CONFLICT DO NOTHING"""
        ).rowcount
        conn.execute("DROP TABLE ledger_head")
    return int(queued)


def queue_inquiries(conn: psycopg.Connection[Any]) -> int:
    """Queue every lookup record, oldest first, as the inquiry log's first leaves, when the log has neither
    leaves nor pending ones but records exist: only an upgraded trail is in that state (every record written
    since has its pending leaf from the start). Returns how many."""
    with conn.transaction():
        conn.execute("LOCK TABLE inquiry_pending IN EXCLUSIVE MODE")
        row = conn.execute(
            """SELECT EXISTS (SELECT 1 FROM lookups) AND NOT EXISTS (SELECT 1 FROM inquiry_leaves)
                      AND NOT EXISTS (SELECT 1 FROM inquiry_pending)"""
        ).fetchone()
        if not row or not row[0]:
            return 0
        return int(
            conn.execute(
                "INSERT INTO inquiry_pending (lookup_id, leaf_hash) SELECT id, leaf_hash FROM lookups ORDER BY at, id"
            ).rowcount
        )
