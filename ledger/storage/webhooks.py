"""Webhook endpoints, events, deliveries and the delivery log (schema.sql; docs/webhooks.md)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from ledger.storage.db import Connection

ENDPOINT_PUBLIC = "id, url, events, status, status_reason, consecutive_failures, created_at, status_at"


def add_endpoint(
    conn: Connection, endpoint_id: UUID, platform_id: int, url: str, events: Sequence[str], secret: str
) -> dict[str, Any]:
    row = conn.execute(
        f"""INSERT INTO webhook_endpoints (id, platform_id, url, events, secret) VALUES (%s, %s, %s, %s, %s)
            RETURNING {ENDPOINT_PUBLIC}""",
        (endpoint_id, platform_id, url, list(events), secret),
    ).fetchone()
    assert row is not None
    return dict(row)


def count_endpoints(conn: Connection, platform_id: int) -> int:
    row = conn.execute(
        "SELECT count(*) AS n FROM webhook_endpoints WHERE platform_id = %s", (platform_id,)
    ).fetchone()
    return int(row["n"]) if row else 0


def endpoints_of(conn: Connection, platform_id: int) -> list[dict[str, Any]]:
    return conn.execute(
        f"SELECT {ENDPOINT_PUBLIC} FROM webhook_endpoints WHERE platform_id = %s ORDER BY created_at",
        (platform_id,),
    ).fetchall()


def endpoint(conn: Connection, endpoint_id: UUID, platform_id: int | None = None) -> dict[str, Any] | None:
    """An endpoint; with `platform_id`, only that platform's (another's reads as missing)."""
    return conn.execute(
        f"""SELECT {ENDPOINT_PUBLIC}, platform_id FROM webhook_endpoints
            WHERE id = %s AND (%s::bigint IS NULL OR platform_id = %s)""",
        (endpoint_id, platform_id, platform_id),
    ).fetchone()


def delete_endpoint(conn: Connection, endpoint_id: UUID) -> None:
    """Delete an endpoint and its deliveries and attempts. The endpoint's row is locked first: a fan-out or
    a worker's attempt that is inserting a row referencing it holds a key-share lock, so this waits for it
    to commit and then deletes its row too, rather than failing on the foreign key; new ones wait for us."""
    conn.execute("SELECT 1 FROM webhook_endpoints WHERE id = %s FOR UPDATE", (endpoint_id,))
    conn.execute("DELETE FROM webhook_attempts WHERE endpoint_id = %s", (endpoint_id,))
    conn.execute("DELETE FROM webhook_deliveries WHERE endpoint_id = %s", (endpoint_id,))
    conn.execute("DELETE FROM webhook_endpoints WHERE id = %s", (endpoint_id,))


def set_endpoint_status(conn: Connection, endpoint_id: UUID, status: str, reason: str | None) -> None:
    conn.execute(
        """UPDATE webhook_endpoints SET status = %s, status_reason = %s, status_at = now(),
           consecutive_failures = CASE WHEN %s = 'active' THEN 0 ELSE consecutive_failures END
           WHERE id = %s""",
        (status, reason, status, endpoint_id),
    )


def add_event(conn: Connection, event_id: str, event_type: str, platform_id: int, payload: Any) -> None:
    conn.execute(
        "INSERT INTO webhook_events (id, type, platform_id, payload) VALUES (%s, %s, %s, %s)",
        (event_id, event_type, platform_id, Jsonb(payload)),
    )


def fan_out(conn: Connection, event_ids: Sequence[str]) -> list[UUID]:
    """A delivery for every active endpoint of each event's platform that asked for its type; returns the
    deliveries still pending (new ones and any left from an earlier run of the same fan-out)."""
    conn.execute(
        """INSERT INTO webhook_deliveries (id, event_id, endpoint_id)
           SELECT gen_random_uuid(), e.id, w.id FROM webhook_events e
           JOIN webhook_endpoints w ON w.platform_id = e.platform_id AND w.status = 'active'
                                    AND e.type = ANY(w.events)
           WHERE e.id = ANY(%s)
           ON CONFLICT (event_id, endpoint_id) DO NOTHING""",
        (list(event_ids),),
    )
    rows = conn.execute(
        "SELECT id FROM webhook_deliveries WHERE event_id = ANY(%s) AND status = 'pending'",
        (list(event_ids),),
    ).fetchall()
    return [r["id"] for r in rows]


def claim(conn: Connection, delivery_id: UUID, lease_seconds: float) -> dict[str, Any] | None:
    """Take a due delivery for one attempt, unless another worker holds it; with what it needs to send."""
    return conn.execute(
        """WITH claimed AS (
               UPDATE webhook_deliveries SET lease_until = now() + make_interval(secs => %s),
                      attempts = attempts + 1, first_attempt_at = coalesce(first_attempt_at, now())
               WHERE id = %s AND status = 'pending' AND next_attempt_at <= now() + interval '1 second'
                 AND (lease_until IS NULL OR lease_until < now())
               RETURNING *)
           SELECT c.id, c.attempts, c.first_attempt_at, c.event_id, e.type, e.payload, e.created_at AS event_at,
                  w.id AS endpoint_id, w.url, w.secret, w.status AS endpoint_status
           FROM claimed c JOIN webhook_events e ON e.id = c.event_id JOIN webhook_endpoints w ON w.id = c.endpoint_id""",
        (lease_seconds, delivery_id),
    ).fetchone()


def record_attempt(
    conn: Connection,
    delivery_id: UUID,
    endpoint_id: UUID,
    status_code: int | None,
    error: str | None,
    duration_ms: int,
) -> None:
    conn.execute(
        """INSERT INTO webhook_attempts (delivery_id, endpoint_id, status_code, error, duration_ms)
           VALUES (%s, %s, %s, %s, %s)""",
        (delivery_id, endpoint_id, status_code, error, duration_ms),
    )


def delivered(conn: Connection, delivery_id: UUID, endpoint_id: UUID) -> None:
    conn.execute(
        """UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(), lease_until = NULL
           WHERE id = %s""",
        (delivery_id,),
    )
    conn.execute("UPDATE webhook_endpoints SET consecutive_failures = 0 WHERE id = %s", (endpoint_id,))


def failed(conn: Connection, delivery_id: UUID, endpoint_id: UUID, retry_at: datetime | None) -> int:
    """Schedule the next attempt, or give up (`retry_at` None). Returns the endpoint's failures in a row."""
    if retry_at is None:
        conn.execute(
            "UPDATE webhook_deliveries SET status = 'abandoned', lease_until = NULL WHERE id = %s",
            (delivery_id,),
        )
    else:
        conn.execute(
            "UPDATE webhook_deliveries SET next_attempt_at = %s, lease_until = NULL WHERE id = %s",
            (retry_at, delivery_id),
        )
    row = conn.execute(
        """UPDATE webhook_endpoints SET consecutive_failures = consecutive_failures + 1 WHERE id = %s
           RETURNING consecutive_failures""",
        (endpoint_id,),
    ).fetchone()
    return int(row["consecutive_failures"]) if row else 0


def skip(conn: Connection, delivery_id: UUID) -> None:
    conn.execute(
        "UPDATE webhook_deliveries SET status = 'skipped', lease_until = NULL WHERE id = %s", (delivery_id,)
    )


def due(conn: Connection, limit: int) -> list[UUID]:
    rows = conn.execute(
        """SELECT id FROM webhook_deliveries
           WHERE status = 'pending' AND next_attempt_at <= now() AND (lease_until IS NULL OR lease_until < now())
           ORDER BY next_attempt_at LIMIT %s""",
        (limit,),
    ).fetchall()
    return [r["id"] for r in rows]


def redeliver(conn: Connection, delivery_id: UUID, platform_id: int | None = None) -> dict[str, Any] | None:
    """Queue a delivery again from now, whatever became of it (another platform's reads as missing)."""
    return conn.execute(
        """UPDATE webhook_deliveries d SET status = 'pending', next_attempt_at = now(), lease_until = NULL,
                  first_attempt_at = NULL
           FROM webhook_endpoints w
           WHERE d.id = %s AND w.id = d.endpoint_id AND (%s::bigint IS NULL OR w.platform_id = %s)
           RETURNING d.id, d.status""",
        (delivery_id, platform_id, platform_id),
    ).fetchone()


def deliveries_of(conn: Connection, endpoint_id: UUID, limit: int) -> list[dict[str, Any]]:
    return conn.execute(
        """SELECT d.id, d.event_id, e.type, d.status, d.attempts, d.next_attempt_at, d.delivered_at,
                  d.created_at,
                  coalesce((SELECT jsonb_agg(jsonb_build_object(
                      'at', a.at, 'status_code', a.status_code, 'error', a.error, 'duration_ms', a.duration_ms)
                      ORDER BY a.id) FROM webhook_attempts a WHERE a.delivery_id = d.id), '[]') AS log
           FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id
           WHERE d.endpoint_id = %s ORDER BY d.created_at DESC LIMIT %s""",
        (endpoint_id, limit),
    ).fetchall()


def disabled_by_platform(conn: Connection) -> list[dict[str, Any]]:
    return conn.execute(
        """SELECT p.slug, count(*) AS n FROM webhook_endpoints w JOIN platforms p ON p.id = w.platform_id
           WHERE w.status = 'disabled' GROUP BY p.slug ORDER BY p.slug"""
    ).fetchall()


def purge(conn: Connection, older_than_days: int) -> int:
    """Delete finished deliveries (and their log) and the events no delivery still needs."""
    conn.execute(
        """DELETE FROM webhook_attempts a USING webhook_deliveries d
           WHERE a.delivery_id = d.id AND d.status <> 'pending' AND d.created_at < now() - make_interval(days => %s)""",
        (older_than_days,),
    )
    gone = conn.execute(
        """DELETE FROM webhook_deliveries
           WHERE status <> 'pending' AND created_at < now() - make_interval(days => %s)""",
        (older_than_days,),
    ).rowcount
    conn.execute(
        """DELETE FROM webhook_events e WHERE e.created_at < now() - make_interval(days => %s)
           AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id)""",
        (older_than_days,),
    )
    return gone


def restricted_lookups(conn: Connection, tokens: Sequence[str], since: datetime) -> dict[int, list[str]]:
    """Per platform, its refund_review lookups since `since` with these tokens that carried a restriction."""
    rows = conn.execute(
        """SELECT platform_id, array_agg(id::text ORDER BY at) AS ids FROM lookups
           WHERE tokens && %s::text[] AND purpose = 'refund_review' AND at >= %s
             AND jsonb_array_length(response -> 'decision' -> 'restrictions') > 0
           GROUP BY platform_id""",
        (list(tokens), since),
    ).fetchall()
    return {int(r["platform_id"]): list(r["ids"]) for r in rows}
