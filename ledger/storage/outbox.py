"""The transactional outbox: work for the Celery workers, committed in the same transaction as the
ledger event that caused it. Sending happens after commit; the sweep re-sends what was never done."""

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


def mark_sent(conn: Connection, ids: list[int]) -> None:
    conn.execute("UPDATE outbox SET sent_at = now(), attempts = attempts + 1 WHERE id = ANY(%s)", (ids,))


def mark_done(conn: Connection, outbox_id: int) -> None:
    # Erased tokens travel in `forget` only until the cache has dropped them.
    conn.execute(
        "UPDATE outbox SET done_at = now(), args = args - 'forget' WHERE id = %s AND done_at IS NULL",
        (outbox_id,),
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
