"""Subject access reports given out: counted per consumer and calendar year, because the law sets how many
are free (征信业管理条例 Art. 17). A row holds the request's tokens, so that a later request with any of the
same identifiers counts against the same consumer; the retention job erases the tokens with the lookup
trail's, after which a row still counts in statistics but no longer against anyone."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from ledger.storage.db import Connection


def record(
    conn: Connection,
    report_id: UUID,
    tokens: Sequence[str],
    at: datetime,
    platform_id: int,
    key_id: str,
    salt: bytes,
    tokens_commitment: str,
) -> None:
    """One report given out: who asked (the operator's platform and key), when, the tokens it counts
    against, and a salted commitment to the identifiers asked about, which outlives the tokens' erasure."""
    conn.execute(
        """INSERT INTO subject_reports (id, tokens, at, platform_id, key_id, salt, tokens_commitment)
           VALUES (%s, %s, %s, %s, %s, %s, %s)""",
        (report_id, sorted(tokens), at, platform_id, key_id, salt, tokens_commitment),
    )


def count_since(conn: Connection, tokens: Sequence[str], since: datetime) -> int:
    row = conn.execute(
        "SELECT count(*) AS n FROM subject_reports WHERE tokens && %s::text[] AND at >= %s",
        (list(tokens), since),
    ).fetchone()
    return int(row["n"]) if row else 0


def erase_before(conn: Connection, before: datetime) -> int:
    return conn.execute(
        "UPDATE subject_reports SET tokens = NULL WHERE at < %s AND tokens IS NOT NULL", (before,)
    ).rowcount
