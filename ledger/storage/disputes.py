"""Dispute rows. The partial unique index `disputes_one_open` enforces one open dispute per incident."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from ledger.storage.db import Connection


def insert(
    conn: Connection,
    dispute_id: UUID,
    incident_id: UUID,
    platform_id: int,
    opened_by: int,
    statement: str | None,
    contact_ref: str | None,
    respond_by: datetime,
) -> None:
    conn.execute(
        """INSERT INTO disputes (id, incident_id, platform_id, opened_by, statement, contact_ref, status, respond_by)
           VALUES (%s, %s, %s, %s, %s, %s, 'open', %s)""",
        (dispute_id, incident_id, platform_id, opened_by, statement, contact_ref, respond_by),
    )


def get(conn: Connection, dispute_id: UUID, lock: bool = False) -> dict[str, Any] | None:
    return conn.execute(
        "SELECT * FROM disputes WHERE id = %s" + (" FOR UPDATE" if lock else ""), (dispute_id,)
    ).fetchone()


def open_for_incident(conn: Connection, incident_id: UUID) -> dict[str, Any] | None:
    return conn.execute(
        "SELECT * FROM disputes WHERE incident_id = %s AND status = 'open' FOR UPDATE", (incident_id,)
    ).fetchone()


def last_upheld(conn: Connection, incident_id: UUID) -> datetime | None:
    row = conn.execute(
        "SELECT max(resolved_at) AS at FROM disputes WHERE incident_id = %s AND status = 'upheld'",
        (incident_id,),
    ).fetchone()
    return row["at"] if row else None


def resolve(conn: Connection, dispute_id: UUID, status: str, basis: str | None, at: datetime) -> None:
    conn.execute(
        "UPDATE disputes SET status = %s, basis = %s, resolved_at = %s WHERE id = %s",
        (status, basis, at, dispute_id),
    )


def for_platform(conn: Connection, platform_id: int, status: str | None, limit: int) -> list[dict[str, Any]]:
    return conn.execute(
        """SELECT d.id, d.incident_id, i.external_id, d.status, d.statement, d.respond_by, d.opened_at,
                  d.resolved_at, d.basis
           FROM disputes d JOIN incidents i ON i.id = d.incident_id
           WHERE d.platform_id = %s AND (%s::text IS NULL OR d.status = %s)
           ORDER BY d.respond_by LIMIT %s""",
        (platform_id, status, status, limit),
    ).fetchall()


def overdue(conn: Connection, now: datetime, limit: int) -> list[dict[str, Any]]:
    return conn.execute(
        """SELECT * FROM disputes WHERE status = 'open' AND respond_by < %s
           ORDER BY respond_by LIMIT %s FOR UPDATE SKIP LOCKED""",
        (now, limit),
    ).fetchall()


def for_incidents(conn: Connection, incident_ids: Sequence[UUID]) -> list[dict[str, Any]]:
    return conn.execute(
        """SELECT id, incident_id, status, statement IS NOT NULL AND statement <> '' AS has_statement,
                  respond_by, opened_at, resolved_at, basis
           FROM disputes WHERE incident_id = ANY(%s) ORDER BY opened_at""",
        (list(incident_ids),),
    ).fetchall()


def erase_personal(conn: Connection, incident_ids: Sequence[UUID]) -> None:
    conn.execute(
        "UPDATE disputes SET statement = NULL, contact_ref = NULL WHERE incident_id = ANY(%s)",
        (list(incident_ids),),
    )
