"""Upgrading a lookup trail of the release before the inquiry log (commit cd1333a, a digest per row) in place.

`ledger db init` on such a database must keep every lookup record, check each against the digest it was
written with (a rewritten record must not be signed into the log, where it would verify for ever), make
them the inquiry log's first leaves, oldest first, and leave a trail that `ledger verify` passes and that
new lookups extend. A record that fails its digest stops the upgrade with nothing changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from ledger import create_app
from ledger.config import Settings
from ledger.domain import chain
from ledger.domain.decisions import audit_row_hash, lookup_commitment
from ledger.services import platforms as platform_service
from ledger.services import verification
from ledger.services.runtime import Runtime
from ledger.storage.db import apply_schema
from ledger.storage.upgrade import UpgradeRefused
from tests.support import PG_SERVER, integrate, run_ledger

OLD_SCHEMA = Path(__file__).parent.parent / "data" / "upgrade" / "schema-cd1333a.sql"
WHEN = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def old_database() -> Iterator[str]:
    name = f"ledger_upgrade_inq_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_SERVER.rpartition("/")[0] + "/" + name
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(OLD_SCHEMA.read_text())
    yield url
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def old_lookup(conn: psycopg.Connection[Any], platform: int, n: int, **overrides: Any) -> uuid.UUID:
    """A lookup record as the previous release wrote it (ledger/storage/audit.py of cd1333a)."""
    lookup_id, salt = uuid.uuid4(), os.urandom(16)
    tokens = [hashlib.sha256(f"token-{n}".encode()).hexdigest()]
    refund_ref, at = f"R-{n}", WHEN + timedelta(minutes=5 - n)  # inserted newest first
    commitment = lookup_commitment(salt, tokens, refund_ref)
    operator_ref = overrides.get("operator_ref")
    response = {"lookup_id": str(lookup_id), "decision": {"tier": "clear", "reasons": []}, "stale": False}
    row_hash = audit_row_hash(
        str(lookup_id),
        platform,
        "k_old",
        "refund_review",
        commitment,
        "clear",
        [],
        chain.format_time(at),
        operator_ref=operator_ref,
    )
    conn.execute(
        """INSERT INTO lookups (id, platform_id, key_id, purpose, refund_ref, tokens, salt, tokens_commitment,
                                tier, reasons, response, at, row_hash, operator_ref)
           VALUES (%s, %s, 'k_old', 'refund_review', %s, %s, %s, %s, 'clear', '{}', %s, %s, %s, %s)""",
        (
            lookup_id,
            platform,
            refund_ref,
            tokens,
            salt,
            commitment,
            json.dumps(response),
            at,
            overrides.get("row_hash", row_hash),
            operator_ref,
        ),
    )
    return lookup_id


def build_old_trail(url: str, bad: int | None = None) -> list[uuid.UUID]:
    """Four lookup records, one with an operator reference and one erased by retention; oldest last."""
    with psycopg.connect(url, autocommit=True) as conn:
        platform = conn.execute(
            "INSERT INTO platforms (slug, name) VALUES ('legacy', 'Legacy') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        ids = [
            old_lookup(
                conn,
                int(platform),
                n,
                operator_ref="agent-7" if n == 1 else None,
                **({"row_hash": "0" * 64} if n == bad else {}),
            )
            for n in range(4)
        ]
        conn.execute("SET ledger.erasure = 'on'")
        conn.execute(
            "UPDATE lookups SET tokens = NULL, refund_ref = NULL, salt = NULL WHERE id = %s", (ids[3],)
        )
    return ids


def test_the_old_trail_becomes_the_inquiry_logs_first_leaves(old_database: str, settings: Settings) -> None:
    ids = build_old_trail(old_database)

    apply_schema(old_database)
    upgraded = settings.with_(database_url=old_database)
    again = run_ledger(upgraded, "db", "init", "--json")
    assert again.returncode == 0, again.stderr

    with psycopg.connect(old_database, row_factory=dict_row) as conn:
        columns = {
            r["column_name"]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'lookups'"
            ).fetchall()
        }
        pending = conn.execute("SELECT lookup_id FROM inquiry_pending ORDER BY seq").fetchall()
    assert "row_hash" not in columns
    assert "leaf_hash" in columns
    # Every record queued once, oldest first (they were written newest first), the second init adding none.
    assert [r["lookup_id"] for r in pending] == list(reversed(ids))

    rt = Runtime(upgraded)
    try:
        assert integrate(rt) == 4
        result = verification.verify(rt)
        assert result.ok, result
        assert (result.lookups, result.inquiry_tree_size, result.inquiry_pending) == (4, 4, 0)

        # New lookups follow as the next leaves.
        app = create_app(upgraded)
        try:
            issued = platform_service.create_platform(rt, "newcomer", "Newcomer", "lookup")
            response = app.test_client().post(
                "/v1/lookups",
                json={"identifiers": [{"type": "phone", "value": "13800138000"}], "purpose": "refund_review"},
                headers={"Authorization": f"Bearer {issued.key}"},
            )
            assert response.status_code == 200, response.get_json()
        finally:
            app.extensions["ledger.runtime"].close()
        assert integrate(rt) == 1
        with psycopg.connect(old_database) as conn:
            last = conn.execute("SELECT lookup_id::text FROM inquiry_leaves WHERE idx = 4").fetchone()
        assert last == (response.get_json()["lookup_id"],)
        assert verification.verify(rt).ok
        cli = run_ledger(upgraded, "verify")
        assert cli.returncode == 0, cli.stdout + cli.stderr
    finally:
        rt.close()


def test_a_record_that_fails_its_digest_is_not_upgraded(old_database: str) -> None:
    ids = build_old_trail(old_database, bad=2)

    with pytest.raises(UpgradeRefused, match=str(ids[2])):
        apply_schema(old_database)

    with psycopg.connect(old_database) as conn:
        assert conn.execute("SELECT count(*) FROM lookups WHERE row_hash IS NOT NULL").fetchone() == (4,)
        assert conn.execute("SELECT to_regclass('inquiry_pending')").fetchone() == (None,)
