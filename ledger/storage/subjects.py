"""Subjects: linking strong identifiers of one consumer, transitively, inside the database.

Representation: every strong token points straight at its subject (a flat union-find). Linking a new
incident finds the subjects its tokens already belong to; if more than one, the smaller ones are merged
into the largest by re-pointing their tokens and incidents, and marked `merged_into`. A transaction-level
advisory lock serialises linking, which is short, so concurrent merges cannot deadlock or split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ledger.identity import STRONG_TYPES
from ledger.storage.db import Connection

LINK_LOCK = 7311002


def lock_linking(conn: Connection) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (LINK_LOCK,))


def subjects_of_tokens(conn: Connection, tokens: Sequence[str]) -> dict[str, int]:
    rows = conn.execute(
        "SELECT token, subject_id FROM identity_links WHERE token = ANY(%s)", (list(tokens),)
    ).fetchall()
    return {r["token"]: int(r["subject_id"]) for r in rows}


def share_live(conn: Connection, subject_ids: Sequence[int]) -> set[int]:
    """The subjects among these not merged away, each locked FOR SHARE until the transaction ends. A
    merge committed after the caller's snapshot makes the lock fail (`Contention` from the transaction;
    the caller retries on a newer snapshot); a merge still running waits for the caller, then deletes the
    score it wrote for the subject it merges away. Without the lock that score would outlive the merge."""
    rows = conn.execute(
        "SELECT id FROM subjects WHERE id = ANY(%s) AND merged_into IS NULL ORDER BY id FOR SHARE",
        (list(subject_ids),),
    ).fetchall()
    return {int(r["id"]) for r in rows}


def new_subject(conn: Connection) -> int:
    row = conn.execute("INSERT INTO subjects DEFAULT VALUES RETURNING id").fetchone()
    assert row is not None
    return int(row["id"])


def sizes(conn: Connection, subject_ids: Sequence[int]) -> dict[int, int]:
    rows = conn.execute(
        "SELECT subject_id, count(*) AS n FROM identity_links WHERE subject_id = ANY(%s) GROUP BY subject_id",
        (list(subject_ids),),
    ).fetchall()
    return {int(r["subject_id"]): int(r["n"]) for r in rows}


def merge(conn: Connection, root: int, others: Sequence[int]) -> None:
    others = list(others)
    conn.execute("UPDATE identity_links SET subject_id = %s WHERE subject_id = ANY(%s)", (root, others))
    conn.execute("UPDATE incidents SET subject_id = %s WHERE subject_id = ANY(%s)", (root, others))
    conn.execute("UPDATE subjects SET merged_into = %s WHERE id = ANY(%s)", (root, others))
    conn.execute("DELETE FROM risk_scores WHERE subject_id = ANY(%s)", (others,))


def link_tokens(conn: Connection, subject_id: int, pairs: Sequence[tuple[str, str]]) -> None:
    if pairs:
        conn.execute(
            """INSERT INTO identity_links (token, id_type, subject_id)
               SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[])
               ON CONFLICT (token) DO NOTHING""",
            ([p[0] for p in pairs], [p[1] for p in pairs], [subject_id] * len(pairs)),
        )


def strong_tokens(conn: Connection, subject_ids: Sequence[int]) -> dict[int, list[str]]:
    rows = conn.execute(
        "SELECT subject_id, token FROM identity_links WHERE subject_id = ANY(%s)", (list(subject_ids),)
    ).fetchall()
    out: dict[int, list[str]] = {}
    for r in rows:
        out.setdefault(int(r["subject_id"]), []).append(r["token"])
    return out


def device_tokens(conn: Connection, subject_ids: Sequence[int]) -> list[str]:
    rows = conn.execute(
        """SELECT DISTINCT ii.token FROM incident_identifiers ii JOIN incidents i ON i.id = ii.incident_id
           WHERE i.subject_id = ANY(%s) AND ii.id_type = 'device_id'""",
        (list(subject_ids),),
    ).fetchall()
    return [r["token"] for r in rows]


def device_subject_counts(conn: Connection, tokens: Sequence[str]) -> dict[str, int]:
    """For each device token, how many distinct subjects with counting incidents used it."""
    rows = conn.execute(
        """SELECT ii.token, count(DISTINCT i.subject_id) AS n
           FROM incident_identifiers ii JOIN incidents i ON i.id = ii.incident_id
           WHERE ii.token = ANY(%s) AND ii.id_type = 'device_id' AND i.status IN ('active', 'disputed')
             AND i.subject_id IS NOT NULL
           GROUP BY ii.token""",
        (list(tokens),),
    ).fetchall()
    counts = {r["token"]: int(r["n"]) for r in rows}
    return {t: counts.get(t, 0) for t in tokens}


def all_subject_ids(conn: Connection, after: int, limit: int) -> list[int]:
    rows = conn.execute(
        "SELECT id FROM subjects WHERE merged_into IS NULL AND id > %s ORDER BY id LIMIT %s", (after, limit)
    ).fetchall()
    return [int(r["id"]) for r in rows]


def subjects_for_tokens_any(conn: Connection, tokens: Sequence[str]) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT DISTINCT subject_id FROM identity_links WHERE token = ANY(%s)", (list(tokens),)
    ).fetchall()


def linked_tokens(conn: Connection, tokens: Sequence[str]) -> list[str]:
    """Every strong token of the consumer behind `tokens`: the given ones, the other tokens of their
    subjects, and the strong tokens reported together with any of them on an incident the worker has not
    linked yet (the same rule linking applies, so the answer does not depend on whether it has run).
    Transitive, to a fixed point. Device tokens are never followed: a shared device is not the same
    person, so it never pulls another subject's records in."""
    known = set(tokens)
    frontier = list(known)
    strong = list(STRONG_TYPES)
    while frontier:
        rows = conn.execute(
            """SELECT other.token FROM identity_links mine
                 JOIN identity_links other ON other.subject_id = mine.subject_id
                WHERE mine.token = ANY(%(frontier)s)
               UNION
               SELECT other.token FROM incident_identifiers mine
                 JOIN incident_identifiers other ON other.incident_id = mine.incident_id
                WHERE mine.token = ANY(%(frontier)s) AND mine.id_type = ANY(%(strong)s)
                  AND other.id_type = ANY(%(strong)s)""",
            {"frontier": frontier, "strong": strong},
        ).fetchall()
        frontier = [r["token"] for r in rows if r["token"] not in known]
        known.update(frontier)
    return sorted(known)
