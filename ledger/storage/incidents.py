"""Incident rows, their identifier tokens and evidence hashes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from ledger.storage.db import Connection

# The columns of a new incident row, in the order `ledger_report` takes them (platform_id comes apart).
REPORT_COLUMNS = (
    "id",
    "external_id",
    "request_digest",
    "category",
    "confirmation",
    "amount_minor",
    "currency",
    "occurred_at",
    "salt",
    "consumer_notified_at",
)


@dataclass(frozen=True)
class NewIncident:
    """One incident to report: its row, its tokens and evidence, and its `reported` event's payload
    (canonical JSON text, see ledger/domain/chain.py)."""

    row: dict[str, Any]  # REPORT_COLUMNS
    tokens: Sequence[tuple[str, str]]  # (id_type, token)
    evidence: Sequence[bytes]
    payload: str


def report(
    conn: Connection, platform_id: int, items: Sequence[NewIncident], outbox_task: str
) -> dict[str, dict[str, Any]]:
    """Insert the incidents that are new, with their tokens, evidence, outbox row and `reported` events
    (each with its pending log leaf), in one call to `ledger_report` (schema.sql). On an autocommit connection that is one round
    trip and one transaction, durable when it returns. Returns, per external_id, the incident as it now
    stands: `created` tells whether this call inserted it; otherwise it is the existing one (a replay, a
    conflict, or a race lost to an identical report)."""
    if not items:
        return {}
    positions = range(1, len(items) + 1)
    rows = [item.row for item in items]
    columns = [[row[col] for row in rows] for col in REPORT_COLUMNS]
    result = conn.execute(
        """SELECT * FROM ledger_report(%s, %b::uuid[], %b::text[], %b::text[], %b::text[], %b::text[],
               %b::bigint[], %b::text[], %b::timestamptz[], %b::bytea[], %b::timestamptz[], %b::text[],
               %b::int[], %b::text[], %b::text[], %b::int[], %b::bytea[], %s)""",
        [
            platform_id,
            *columns,
            [item.payload for item in items],
            [n for n, item in zip(positions, items, strict=True) for _ in item.tokens],
            [id_type for item in items for id_type, _ in item.tokens],
            [token for item in items for _, token in item.tokens],
            [n for n, item in zip(positions, items, strict=True) for _ in item.evidence],
            [pdq for item in items for pdq in item.evidence],
            outbox_task,
        ],
    ).fetchall()
    return {
        r["r_external_id"]: {
            "id": r["r_id"],
            "external_id": r["r_external_id"],
            "created": r["r_created"],
            "request_digest": r["r_digest"],
            "status": r["r_status"],
            "leaf_hash": bytes(r["r_leaf_hash"]),
            "received_at": r["r_received_at"],
        }
        for r in result
    }


def insert_evidence(conn: Connection, rows: Sequence[tuple[UUID, bytes, int]]) -> None:
    if rows:
        conn.execute(
            """INSERT INTO incident_evidence (incident_id, pdq, quality)
               SELECT * FROM unnest(%b::uuid[], %b::bytea[], %b::int[]) ON CONFLICT DO NOTHING""",
            ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]),
        )


_PUBLIC = (
    "i.id, i.platform_id, i.external_id, i.request_digest, i.category, i.confirmation, i.amount_minor, "
    "i.currency, i.occurred_at, i.consumer_notified_at, i.reported_at, i.status, i.status_reason, i.status_at, i.subject_id, "
    "e.leaf_hash, e.at AS received_at"
)


def get_for_platform(
    conn: Connection, incident_id: UUID, platform_id: int, lock: bool = False
) -> dict[str, Any] | None:
    """An incident as its reporter sees it; None for another platform's incident (so it reads as 404)."""
    return conn.execute(
        f"""SELECT {_PUBLIC} FROM incidents i
            JOIN ledger_events e ON e.incident_id = i.id AND e.kind = 'reported'
            WHERE i.id = %s AND i.platform_id = %s {"FOR UPDATE OF i" if lock else ""}""",
        (incident_id, platform_id),
    ).fetchone()


def get(conn: Connection, incident_id: UUID, lock: bool = False) -> dict[str, Any] | None:
    return conn.execute(
        f"SELECT * FROM incidents WHERE id = %s {'FOR UPDATE' if lock else ''}", (incident_id,)
    ).fetchone()


def tokens_of(conn: Connection, incident_ids: Sequence[UUID]) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT incident_id, id_type, token FROM incident_identifiers WHERE incident_id = ANY(%s)",
        (list(incident_ids),),
    ).fetchall()


def evidence_of(conn: Connection, incident_id: UUID) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT pdq, quality FROM incident_evidence WHERE incident_id = %s ORDER BY pdq", (incident_id,)
    ).fetchall()


def set_status(conn: Connection, incident_id: UUID, status: str, reason: str | None) -> None:
    conn.execute(
        "UPDATE incidents SET status = %s, status_reason = %s, status_at = now() WHERE id = %s",
        (status, reason, incident_id),
    )


def about_tokens(conn: Connection, tokens: Sequence[str]) -> list[dict[str, Any]]:
    """Incidents concerning the consumer behind these tokens, oldest first: by subject, or by a directly
    shared token, so that incidents not linked yet count. Callers pass strong tokens only, widened with
    `subjects.linked_tokens`, so that a device id never selects another consumer's entries."""
    return conn.execute(
        """SELECT i.* FROM incidents i
           WHERE i.subject_id IN (SELECT subject_id FROM identity_links WHERE token = ANY(%s))
              OR i.id IN (SELECT incident_id FROM incident_identifiers WHERE token = ANY(%s))
           ORDER BY i.occurred_at""",
        (list(tokens), list(tokens)),
    ).fetchall()


def pending_tokens(conn: Connection, tokens: Sequence[str]) -> set[str]:
    """The tokens among these carried by an incident not linked to a subject yet: scoring has not seen it."""
    rows = conn.execute(
        """SELECT DISTINCT ii.token FROM incident_identifiers ii JOIN incidents i ON i.id = ii.incident_id
           WHERE ii.token = ANY(%s) AND i.subject_id IS NULL""",
        (list(tokens),),
    ).fetchall()
    return {r["token"] for r in rows}


def subjects_of(conn: Connection, incident_ids: Sequence[UUID]) -> list[dict[str, Any]]:
    """Each incident's id and subject (None while unlinked), oldest report first: the order linking uses."""
    return conn.execute(
        "SELECT id, subject_id FROM incidents WHERE id = ANY(%s) ORDER BY reported_at, id",
        (list(incident_ids),),
    ).fetchall()


def subject_ids_of(conn: Connection, incident_ids: Sequence[UUID]) -> set[int]:
    """The subjects these incidents belong to; unlinked incidents add none."""
    rows = conn.execute(
        "SELECT DISTINCT subject_id FROM incidents WHERE id = ANY(%s)", (list(incident_ids),)
    ).fetchall()
    return {int(r["subject_id"]) for r in rows if r["subject_id"] is not None}


def subjects_reported_by(conn: Connection, platform_id: int, after: int, limit: int) -> list[int]:
    """A page of the subjects a platform reported, in id order after `after`."""
    rows = conn.execute(
        """SELECT DISTINCT subject_id FROM incidents WHERE platform_id = %s AND subject_id > %s
           AND subject_id IS NOT NULL ORDER BY subject_id LIMIT %s""",
        (platform_id, after, limit),
    ).fetchall()
    return [int(r["subject_id"]) for r in rows]


def unlinked(conn: Connection, limit: int) -> list[UUID]:
    """Incidents that never got a subject. Expired incidents are unlinked on purpose (retention) and
    have no identifiers left to link, so they are not among them."""
    rows = conn.execute(
        "SELECT id FROM incidents WHERE subject_id IS NULL AND status <> 'expired' LIMIT %s", (limit,)
    ).fetchall()
    return [r["id"] for r in rows]


def set_subject(conn: Connection, incident_ids: Sequence[UUID], subject_id: int) -> None:
    conn.execute("UPDATE incidents SET subject_id = %s WHERE id = ANY(%s)", (subject_id, list(incident_ids)))


def facts_for_subjects(conn: Connection, subject_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Everything the scoring model reads for a set of subjects, in one query."""
    return conn.execute(
        """SELECT i.subject_id, i.platform_id, i.category, i.confirmation, i.amount_minor, i.currency,
                  i.occurred_at, i.status, p.effective_trust,
                  EXISTS (SELECT 1 FROM disputes d WHERE d.incident_id = i.id AND d.status = 'open'
                          AND d.statement IS NOT NULL AND d.statement <> '') AS has_statement
           FROM incidents i JOIN platforms p ON p.id = i.platform_id
           WHERE i.subject_id = ANY(%s)""",
        (list(subject_ids),),
    ).fetchall()


def expired_candidates(conn: Connection, before: datetime, limit: int) -> list[dict[str, Any]]:
    return conn.execute(
        """SELECT id, subject_id, platform_id FROM incidents WHERE status <> 'expired' AND occurred_at < %s
           ORDER BY occurred_at LIMIT %s FOR UPDATE SKIP LOCKED""",
        (before, limit),
    ).fetchall()


def shred(conn: Connection, incident_ids: Sequence[UUID], tokens: Sequence[str]) -> list[str]:
    """Expire incidents and delete every link from them to a person. Returns the tokens no incident
    refers to any more (their identity links are deleted; the caller drops them from Redis)."""
    ids = list(incident_ids)
    conn.execute(
        # subject_id too: through it an expired entry would stay attributable to the person whose other,
        # live entries share the subject.
        """UPDATE incidents SET status = 'expired', status_reason = 'retention', status_at = now(), salt = NULL,
                  subject_id = NULL
           WHERE id = ANY(%s)""",
        (ids,),
    )
    conn.execute("DELETE FROM incident_identifiers WHERE incident_id = ANY(%s)", (ids,))
    conn.execute("DELETE FROM incident_evidence WHERE incident_id = ANY(%s)", (ids,))
    orphans = [
        r["token"]
        for r in conn.execute(
            """SELECT t AS token FROM unnest(%s::text[]) AS t
               WHERE NOT EXISTS (SELECT 1 FROM incident_identifiers ii WHERE ii.token = t)""",
            (list(set(tokens)),),
        ).fetchall()
    ]
    conn.execute("DELETE FROM identity_links WHERE token = ANY(%s)", (orphans,))
    return orphans
