"""The transactional outbox: work for the Celery workers, committed in the same transaction as the
ledger event that caused it. The relay sends new rows soon after commit (`claim_unsent`); the sweep
re-sends what was sent but never done (`due`)."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from ledger.storage.db import Connection


def add(conn: Connection, task: str, args: dict[str, Any]) -> int:
    row = conn.execute(
        "INSERT INTO outbox (task, args) VALUES (%s, %s) RETURNING id", (task, Jsonb(args))
    ).fetchone()
    assert row is not None
    return int(row["id"])


def get(conn: Connection, outbox_id: int) -> dict[str, Any] | None:
    return conn.execute("SELECT * FROM outbox WHERE id = %s", (outbox_id,)).fetchone()


def get_many(conn: Connection, outbox_ids: list[int]) -> list[dict[str, Any]]:
    return conn.execute("SELECT * FROM outbox WHERE id = ANY(%s) ORDER BY id", (outbox_ids,)).fetchall()


def pending_ids(conn: Connection, limit: int) -> list[int]:
    """Rows not done, oldest first, whether sent or not."""
    rows = conn.execute(
        "SELECT id FROM outbox WHERE done_at IS NULL ORDER BY id LIMIT %s", (limit,)
    ).fetchall()
    return [int(r["id"]) for r in rows]


def claim_unsent(conn: Connection, limit: int) -> list[int]:
    """Rows never sent, locked until the caller's transaction ends. SKIP LOCKED lets several relays run
    at once: each claims other rows, and none waits for another."""
    rows = conn.execute(
        """SELECT id FROM outbox WHERE done_at IS NULL AND sent_at IS NULL
           ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED""",
        (limit,),
    ).fetchall()
    return [int(r["id"]) for r in rows]


def mark_sent(conn: Connection, ids: list[int]) -> None:
    conn.execute("UPDATE outbox SET sent_at = now(), attempts = attempts + 1 WHERE id = ANY(%s)", (ids,))


def mark_done(conn: Connection, ids: list[int]) -> None:
    # Erased tokens travel in `forget` only until the cache has dropped them.
    conn.execute(
        "UPDATE outbox SET done_at = now(), args = args - 'forget' WHERE id = ANY(%s) AND done_at IS NULL",
        (ids,),
    )


def due(conn: Connection, grace_seconds: int, limit: int = 500) -> list[dict[str, Any]]:
    """Rows not done whose last send (or creation) is older than the grace period. SKIP LOCKED lets two
    beat processes run by mistake without sending the same row twice in one sweep."""
    return conn.execute(
        """SELECT id, task FROM outbox
           WHERE done_at IS NULL AND coalesce(sent_at, created_at) < now() - make_interval(secs => %s)
           ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED""",
        (grace_seconds, limit),
    ).fetchall()


def pending_count(conn: Connection) -> int:
    row = conn.execute("SELECT count(*) AS n FROM outbox WHERE done_at IS NULL").fetchone()
    return int(row["n"]) if row else 0


def purge_done(conn: Connection, older_than_days: int = 7) -> int:
    cur = conn.execute(
        "DELETE FROM outbox WHERE done_at < now() - make_interval(days => %s)", (older_than_days,)
    )
    return cur.rowcount
