"""SQL behind the operator console: the overview's aggregates, the disputes queue, per-platform daily
series for sparklines, the console's own action log and the record of `ledger verify` runs.

Every query here is bounded by time or by a LIMIT, and reads through an index, so that a page renders in
the same time at a million incidents as at a hundred (benchmarks/console.py measures it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from ledger.storage.db import Connection


def lookups_per_minute(conn: Connection, since: datetime) -> list[dict[str, Any]]:
    # Through lookups_platform_at, one range scan per platform: there is no index on `at` alone, and the
    # lookup path should not pay for one.
    return conn.execute(
        """SELECT date_trunc('minute', l.at) AS minute, l.tier, count(*) AS n
           FROM platforms p CROSS JOIN LATERAL
                (SELECT at, tier FROM lookups WHERE platform_id = p.id AND at >= %s) AS l
           GROUP BY 1, 2 ORDER BY 1""",
        (since,),
    ).fetchall()


def reports_per_day(conn: Connection, since: datetime) -> list[dict[str, Any]]:
    """Per calendar day in Beijing time, as every time the console shows."""
    return conn.execute(
        """SELECT date_trunc('day', reported_at, 'Asia/Shanghai') AS day, category, count(*) AS n
           FROM incidents WHERE reported_at >= %s GROUP BY 1, 2 ORDER BY 1""",
        (since,),
    ).fetchall()


def tier_distribution(conn: Connection) -> list[dict[str, Any]]:
    return conn.execute("SELECT tier, count(*) AS n FROM risk_scores GROUP BY tier").fetchall()


def open_disputes_by_days_left(conn: Connection, now: datetime) -> list[dict[str, Any]]:
    return conn.execute(
        """SELECT floor(extract(epoch FROM respond_by - %s) / 86400)::integer AS days_left, count(*) AS n
           FROM disputes WHERE status = 'open' GROUP BY 1 ORDER BY 1""",
        (now,),
    ).fetchall()


def open_disputes(conn: Connection, limit: int) -> list[dict[str, Any]]:
    return conn.execute(
        """SELECT d.id, d.incident_id, d.status, d.statement, d.respond_by, d.opened_at, p.slug AS platform,
                  p.name AS platform_name, i.category, i.status AS incident_status
           FROM disputes d JOIN platforms p ON p.id = d.platform_id JOIN incidents i ON i.id = d.incident_id
           WHERE d.status = 'open' ORDER BY d.respond_by, d.id LIMIT %s""",
        (limit,),
    ).fetchall()


def expired_disputes(conn: Connection, since: datetime, limit: int) -> list[dict[str, Any]]:
    """Disputes the SLA job closed, with what it did to the incident."""
    return conn.execute(
        """SELECT d.id, d.incident_id, d.statement, d.respond_by, d.opened_at, d.resolved_at,
                  p.slug AS platform, p.name AS platform_name, i.category, i.status AS incident_status,
                  i.status_reason
           FROM disputes d JOIN platforms p ON p.id = d.platform_id JOIN incidents i ON i.id = d.incident_id
           WHERE d.status = 'expired' AND d.resolved_at >= %s ORDER BY d.resolved_at DESC LIMIT %s""",
        (since, limit),
    ).fetchall()


def platform_reports_per_day(conn: Connection, since: datetime) -> list[dict[str, Any]]:
    return conn.execute(
        """SELECT platform_id, date_trunc('day', reported_at, 'Asia/Shanghai') AS day, count(*) AS n
           FROM incidents WHERE reported_at >= %s GROUP BY 1, 2""",
        (since,),
    ).fetchall()


def disputes_since(conn: Connection, since: datetime) -> list[dict[str, Any]]:
    return conn.execute(
        """SELECT platform_id, opened_at, status, resolved_at FROM disputes WHERE opened_at >= %s""",
        (since,),
    ).fetchall()


def platform_keys(conn: Connection) -> list[dict[str, Any]]:
    return conn.execute(
        """SELECT k.key_id, k.platform_id, k.scopes, k.created_at, k.revoked_at
           FROM api_keys k ORDER BY k.created_at DESC"""
    ).fetchall()


def record_action(
    conn: Connection,
    platform_id: int | None,
    key_id: str | None,
    role: str,
    action: str,
    outcome: str,
    detail: dict[str, Any],
) -> None:
    conn.execute(
        """INSERT INTO console_actions (platform_id, key_id, role, action, outcome, detail)
           VALUES (%s, %s, %s, %s, %s, %s)""",
        (platform_id, key_id, role, action, outcome, Jsonb(detail)),
    )


def recent_actions(conn: Connection, limit: int) -> list[dict[str, Any]]:
    return conn.execute(
        """SELECT a.at, a.role, a.action, a.outcome, a.detail, a.key_id, p.slug AS platform
           FROM console_actions a LEFT JOIN platforms p ON p.id = a.platform_id
           ORDER BY a.id DESC LIMIT %s""",
        (limit,),
    ).fetchall()


def record_verification(conn: Connection, ok: bool, result: dict[str, Any]) -> None:
    conn.execute("INSERT INTO verification_runs (ok, result) VALUES (%s, %s)", (ok, Jsonb(result)))


def last_verification(conn: Connection) -> dict[str, Any] | None:
    return conn.execute("SELECT at, ok, result FROM verification_runs ORDER BY id DESC LIMIT 1").fetchone()


def log_head(conn: Connection) -> dict[str, Any] | None:
    """The latest signed checkpoint of the transparency log, and how many leaves wait for the sequencer."""
    return conn.execute(
        """SELECT c.tree_size, encode(c.root_hash, 'hex') AS root_hash, c.signed_at,
                  (SELECT count(*) FROM log_pending) AS pending,
                  (SELECT count(*) FROM log_cosignatures w WHERE w.tree_size = c.tree_size) AS cosignatures
           FROM log_checkpoints c ORDER BY c.tree_size DESC LIMIT 1"""
    ).fetchone()
