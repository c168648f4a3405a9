"""Stored risk scores. An upsert never replaces a score computed from a newer ledger position."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ledger.domain.decisions import SubjectView
from ledger.storage.db import Connection
from ledger.storage.decision_cache import subject_view

SCORE_COLUMNS = (
    "subject_id, score, tier, restrictions, reasons, incidents, platforms, last_incident_at, policy_version, "
    "computed_from_seq, computed_at, review_at"
)


def upsert_many(conn: Connection, rows: Sequence[dict[str, Any]]) -> set[int]:
    """Write scores; returns the subject ids whose row was written (not skipped as older)."""
    if not rows:
        return set()
    cols = [c.strip() for c in SCORE_COLUMNS.split(",")]
    written = conn.execute(
        f"""INSERT INTO risk_scores AS r ({SCORE_COLUMNS})
            SELECT subject_id, score, tier, string_to_array(restrictions, ','), string_to_array(reasons, ','),
                   incidents, platforms, last_incident_at, policy_version, computed_from_seq, computed_at, review_at
            FROM unnest(%s::bigint[], %s::int[], %s::text[], %s::text[], %s::text[], %s::int[], %s::int[],
                        %s::timestamptz[], %s::text[], %s::bigint[], %s::timestamptz[], %s::timestamptz[])
                 AS u({SCORE_COLUMNS})
            ON CONFLICT (subject_id) DO UPDATE SET
                score = EXCLUDED.score, tier = EXCLUDED.tier, restrictions = EXCLUDED.restrictions,
                reasons = EXCLUDED.reasons, incidents = EXCLUDED.incidents, platforms = EXCLUDED.platforms,
                last_incident_at = EXCLUDED.last_incident_at, policy_version = EXCLUDED.policy_version,
                computed_from_seq = EXCLUDED.computed_from_seq, computed_at = EXCLUDED.computed_at,
                review_at = EXCLUDED.review_at
            WHERE r.computed_from_seq < EXCLUDED.computed_from_seq
               OR (r.computed_from_seq = EXCLUDED.computed_from_seq AND r.computed_at <= EXCLUDED.computed_at)
            RETURNING subject_id""",
        [[",".join(row[c]) if c in ("restrictions", "reasons") else row[c] for row in rows] for c in cols],
    ).fetchall()
    return {int(r["subject_id"]) for r in written}


def for_tokens(conn: Connection, tokens: Sequence[str]) -> list[dict[str, Any]]:
    """The PostgreSQL fallback of the lookup hot path: one indexed join, no scoring."""
    return conn.execute(
        """SELECT l.token, r.* FROM identity_links l JOIN risk_scores r ON r.subject_id = l.subject_id
           WHERE l.token = ANY(%s)""",
        (list(tokens),),
    ).fetchall()


def for_subjects(conn: Connection, subject_ids: Sequence[int]) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT * FROM risk_scores WHERE subject_id = ANY(%s)", (list(subject_ids),)
    ).fetchall()


def due_for_review(conn: Connection, now: Any, limit: int) -> list[int]:
    rows = conn.execute(
        "SELECT subject_id FROM risk_scores WHERE review_at <= %s ORDER BY review_at LIMIT %s", (now, limit)
    ).fetchall()
    return [int(r["subject_id"]) for r in rows]


def stale_policy(conn: Connection, version: str, after: int, limit: int) -> list[int]:
    rows = conn.execute(
        """SELECT subject_id FROM risk_scores WHERE policy_version <> %s AND subject_id > %s
           ORDER BY subject_id LIMIT %s""",
        (version, after, limit),
    ).fetchall()
    return [int(r["subject_id"]) for r in rows]


def restricted_without_live_incidents(
    conn: Connection, subject_ids: Sequence[int], expiring: Sequence[Any]
) -> list[int]:
    """The subjects among these scored above `clear` that keep no active or disputed incident once the
    `expiring` incidents are gone."""
    rows = conn.execute(
        """SELECT r.subject_id FROM risk_scores r WHERE r.subject_id = ANY(%s) AND r.tier <> 'clear'
           AND NOT EXISTS (SELECT 1 FROM incidents i WHERE i.subject_id = r.subject_id
                           AND i.status IN ('active', 'disputed') AND NOT (i.id = ANY(%s)))""",
        (list(subject_ids), list(expiring)),
    ).fetchall()
    return [int(r["subject_id"]) for r in rows]


def cached_decision(row: dict[str, Any]) -> SubjectView:
    """A risk_scores row as the decision cache holds it (the rebuild and the lookup's fallback)."""
    return subject_view(
        row["subject_id"],
        row["score"],
        row["tier"],
        row["reasons"],
        row["incidents"],
        row["platforms"],
        row["last_incident_at"],
        row["policy_version"],
        row["computed_at"],
    )


def iter_all(conn: Connection, after: int, limit: int) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT * FROM risk_scores WHERE subject_id > %s ORDER BY subject_id LIMIT %s", (after, limit)
    ).fetchall()
