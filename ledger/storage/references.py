"""Reference photo hashes (what platforms sell and ship) as registration writes them and the matcher reads them.

Why a table of its own, not incident evidence: a reference is no accusation. It belongs to the platform
that registered it, is keyed by that platform's own reference (a listing id, an order reference), and a
shipping photo lapses after a configurable period. The matcher's owner key for a reference is
md5(platform:kind:reference) as a uuid, computed here in SQL both for the bulk load and for the change
log, so the in-memory index can replace one reference's hashes exactly (`EvidenceIndex.with_changes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from ledger.domain.pdq_index import EvidenceRows
from ledger.storage.db import Connection
from ledger.storage.evidence import copy_rows

KINDS = ("listing", "shipping")  # their category codes in the index are 1 and 2 (0 is the catch-all)
_OWNER = "md5(r.platform_id::text || ':' || r.kind || ':' || r.reference)::uuid"
_CODE = "(CASE r.kind WHEN 'listing' THEN 1 ELSE 2 END)::int4"

Reference = tuple[str, str]  # (kind, reference)


def add(
    conn: Connection,
    platform_id: int,
    kind: str,
    reference: str,
    hashes: Sequence[bytes],
    expires_at: datetime | None,
) -> int:
    """Add hashes under one reference; returns how many were new. A hash already there keeps its row,
    with the later expiry when it is a shipping photo registered again."""
    if not hashes:
        return 0
    rows = conn.execute(
        """INSERT INTO reference_photos (platform_id, kind, reference, pdq, expires_at)
           SELECT %s, %s, %s, h, %s FROM unnest(%s::bytea[]) AS h
           ON CONFLICT (platform_id, kind, reference, pdq) DO UPDATE
               SET expires_at = greatest(reference_photos.expires_at, EXCLUDED.expires_at)
           RETURNING (xmax = 0) AS inserted""",
        (platform_id, kind, reference, expires_at, list(hashes)),
    ).fetchall()
    return sum(1 for r in rows if r["inserted"])


def remove(conn: Connection, platform_id: int, kind: str, reference: str) -> int:
    """Remove every hash of one of the platform's own references; another platform's are never touched."""
    cursor = conn.execute(
        "DELETE FROM reference_photos WHERE platform_id = %s AND kind = %s AND reference = %s",
        (platform_id, kind, reference),
    )
    return cursor.rowcount


def held(conn: Connection, platform_id: int, kind: str, reference: str) -> int:
    row = conn.execute(
        "SELECT count(*) AS n FROM reference_photos WHERE platform_id = %s AND kind = %s AND reference = %s",
        (platform_id, kind, reference),
    ).fetchone()
    return int(row["n"]) if row else 0


def expire(conn: Connection, now: datetime) -> list[tuple[int, str, str, int]]:
    """Delete lapsed shipping hashes: (platform, kind, reference, how many) per reference."""
    rows = conn.execute(
        """WITH gone AS (DELETE FROM reference_photos WHERE expires_at IS NOT NULL AND expires_at <= %s
                         RETURNING platform_id, kind, reference)
           SELECT platform_id, kind, reference, count(*) AS n FROM gone GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""",
        (now,),
    ).fetchall()
    return [(int(r["platform_id"]), r["kind"], r["reference"], int(r["n"])) for r in rows]


def change_cursor(conn: Connection) -> int:
    row = conn.execute("SELECT coalesce(max(id), 0) AS top FROM reference_changes").fetchone()
    return int(row["top"]) if row else 0


def load_matchable(conn: Connection) -> EvidenceRows:
    """Every live reference hash, for the index: owner, hash, platform, kind code (1 listing, 2 shipping)."""
    return copy_rows(
        conn,
        f"""SELECT {_OWNER}, r.pdq, r.platform_id, {_CODE} FROM reference_photos r
            WHERE r.expires_at IS NULL OR r.expires_at > now()""",
        (),
    )


def changed_since(
    conn: Connection, cursor: int, limit: int = 50_000
) -> tuple[int, list[bytes], EvidenceRows, bool]:
    """References changed after `cursor` (as owner keys), their live rows now, the new cursor, and whether
    that was everything (under `limit`)."""
    changes = conn.execute(
        f"""SELECT r.id, {_OWNER} AS owner, r.platform_id, r.kind, r.reference
            FROM reference_changes r WHERE r.id > %s ORDER BY r.id LIMIT %s""",
        (cursor, limit),
    ).fetchall()
    if not changes:
        return cursor, [], EvidenceRows.empty(), True
    touched = {(int(c["platform_id"]), c["kind"], c["reference"]): c["owner"].bytes for c in changes}
    rows = conn.execute(
        f"""SELECT {_OWNER} AS owner, r.pdq, r.platform_id, {_CODE} AS code FROM reference_photos r
            JOIN unnest(%s::bigint[], %s::text[], %s::text[]) AS t(platform_id, kind, reference)
              USING (platform_id, kind, reference)
            WHERE r.expires_at IS NULL OR r.expires_at > now()""",
        ([k[0] for k in touched], [k[1] for k in touched], [k[2] for k in touched]),
    ).fetchall()
    current = EvidenceRows.of(
        [bytes(r["pdq"]) for r in rows],
        [r["owner"].bytes for r in rows],
        [int(r["platform_id"]) for r in rows],
        [int(r["code"]) for r in rows],
    )
    return int(changes[-1]["id"]), list(dict.fromkeys(touched.values())), current, len(changes) < limit
