"""Member platforms and their API keys."""

from __future__ import annotations

from typing import Any

from ledger.storage.db import Connection


def create_platform(conn: Connection, slug: str, name: str, operator: bool = False) -> int:
    row = conn.execute(
        """INSERT INTO platforms (slug, name, operator) VALUES (%s, %s, %s)
           ON CONFLICT (slug) DO NOTHING RETURNING id""",
        (slug, name, operator),
    ).fetchone()
    return int(row["id"]) if row else -1


def platform_by_slug(conn: Connection, slug: str) -> dict[str, Any] | None:
    return conn.execute("SELECT * FROM platforms WHERE slug = %s", (slug,)).fetchone()


def list_platforms(conn: Connection) -> list[dict[str, Any]]:
    return conn.execute(
        """SELECT p.id, p.slug, p.name, p.operator, p.operator_trust, p.effective_trust, p.rate_per_second, p.rate_burst,
                  p.created_at,
                  (SELECT count(*) FROM api_keys k WHERE k.platform_id = p.id AND k.revoked_at IS NULL) AS active_keys
           FROM platforms p ORDER BY p.slug"""
    ).fetchall()


def lock(conn: Connection, platform_id: int) -> None:
    """Lock the platform's row until the transaction ends, to serialise a check-then-insert on it."""
    conn.execute("SELECT id FROM platforms WHERE id = %s FOR UPDATE", (platform_id,))


def names(conn: Connection) -> dict[int, tuple[str, str]]:
    """Every platform's (slug, name) by id."""
    return {r["id"]: (r["slug"], r["name"]) for r in conn.execute("SELECT id, slug, name FROM platforms")}


def reliability_counts(conn: Connection, window_days: int) -> list[dict[str, Any]]:
    """Per platform, by slug: its trust and how many reports, disputes and overturned disputes (retracted
    or expired) it had within the window."""
    return conn.execute(
        """SELECT p.id, p.slug, p.name, p.operator_trust, p.effective_trust,
                  (SELECT count(*) FROM incidents i WHERE i.platform_id = p.id
                     AND i.reported_at > now() - make_interval(days => %(w)s)) AS reported,
                  (SELECT count(*) FROM disputes d WHERE d.platform_id = p.id
                     AND d.opened_at > now() - make_interval(days => %(w)s)) AS disputed,
                  (SELECT count(*) FROM disputes d WHERE d.platform_id = p.id AND d.status IN ('retracted', 'expired')
                     AND d.opened_at > now() - make_interval(days => %(w)s)) AS overturned
           FROM platforms p ORDER BY p.slug""",
        {"w": window_days},
    ).fetchall()


def insert_key(conn: Connection, key_id: str, platform_id: int, digest: bytes, scopes: list[str]) -> None:
    conn.execute(
        "INSERT INTO api_keys (key_id, platform_id, digest, scopes) VALUES (%s, %s, %s, %s)",
        (key_id, platform_id, digest, scopes),
    )


def key_record(conn: Connection, key_id: str) -> dict[str, Any] | None:
    return conn.execute(
        """SELECT k.key_id, k.digest, k.scopes, k.revoked_at, p.id AS platform_id, p.slug,
                  p.rate_per_second, p.rate_burst, p.operator
           FROM api_keys k JOIN platforms p ON p.id = k.platform_id WHERE k.key_id = %s""",
        (key_id,),
    ).fetchone()


def active_scopes(conn: Connection, platform_id: int) -> list[str]:
    row = conn.execute(
        """SELECT coalesce(array_agg(DISTINCT s), '{}') AS scopes
           FROM api_keys, unnest(scopes) AS s WHERE platform_id = %s AND revoked_at IS NULL""",
        (platform_id,),
    ).fetchone()
    return list(row["scopes"]) if row else []


def revoke_key(conn: Connection, key_id: str) -> bool:
    row = conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL RETURNING key_id",
        (key_id,),
    ).fetchone()
    return row is not None


def revoke_platform_keys(conn: Connection, platform_id: int) -> int:
    cur = conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE platform_id = %s AND revoked_at IS NULL", (platform_id,)
    )
    return cur.rowcount


def set_operator_trust(conn: Connection, platform_id: int, trust: float) -> None:
    conn.execute("UPDATE platforms SET operator_trust = %s WHERE id = %s", (trust, platform_id))


def set_effective_trust(conn: Connection, platform_id: int, trust: float) -> bool:
    """Store the effective trust; True when it changed (a rescore of the platform's subjects follows)."""
    row = conn.execute(
        """UPDATE platforms SET effective_trust = %s WHERE id = %s AND effective_trust IS DISTINCT FROM %s
           RETURNING id""",
        (trust, platform_id, trust),
    ).fetchone()
    return row is not None


def set_rate_limit(conn: Connection, platform_id: int, per_second: int | None, burst: int | None) -> None:
    conn.execute(
        "UPDATE platforms SET rate_per_second = %s, rate_burst = %s WHERE id = %s",
        (per_second, burst, platform_id),
    )
