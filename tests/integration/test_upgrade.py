"""Upgrading a database of the release before the log (commit 3fcee18, hash chain) in place.

Operators upgrade by running `ledger db init` on the database they have. Every event that release
chained must survive, become the log's first leaves in chain order, and still verify, or an upgrade
would quietly rewrite the history members were promised could never change. A broken chain must stop
the upgrade with nothing changed: signing a forged history into the log would make it permanent.
"""

from __future__ import annotations

import hashlib
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
from ledger.services import platforms as platform_service
from ledger.services import verification
from ledger.services.runtime import Runtime
from ledger.storage.db import apply_schema
from ledger.storage.upgrade import UpgradeRefused
from tests.support import PG_SERVER, check_receipt, incident_body, integrate, run_ledger

OLD_SCHEMA = Path(__file__).parent.parent / "data" / "upgrade" / "schema-3fcee18.sql"
WHEN = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


@pytest.fixture
def old_database() -> Iterator[str]:
    """A fresh database with the previous release's schema."""
    name = f"ledger_upgrade_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_SERVER.rpartition("/")[0] + "/" + name
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(OLD_SCHEMA.read_text())
    yield url
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def old_report(conn: psycopg.Connection[Any], platform: int, n: int) -> uuid.UUID:
    """A report as the previous release made it: its `ledger_report`, with its payload encoding."""
    incident, salt = uuid.uuid4(), os.urandom(16)
    token = hashlib.sha256(f"token-{n}".encode()).hexdigest()
    payload = {
        "incident_id": str(incident),
        "platform_id": platform,
        "external_id": f"old-{n}",
        "category": "fabricated_evidence",
        "confirmation": "platform_review",
        "amount": 1000 + n,
        "currency": "CNY",
        "occurred_at": chain.format_time(WHEN),
        "identifiers": chain.identifiers_commitment(salt, [token]),
        "evidence": None,
    }
    conn.execute(
        """SELECT * FROM ledger_report(%s, %s::uuid[], %s::text[], %s::text[], %s::text[], %s::text[],
               %s::bigint[], %s::text[], %s::timestamptz[], %s::bytea[], %s::text[], %s::int[], %s::text[],
               %s::text[], %s::int[], %s::bytea[], %s)""",
        (
            platform, [incident], [f"old-{n}"], ["d" * 64], ["fabricated_evidence"], ["platform_review"],
            [1000 + n], ["CNY"], [WHEN], [salt], [chain.canonical(payload).decode()], [1], ["phone"], [token],
            [], [], "ledger.process_outbox_batch",
        ),
    )  # fmt: skip
    return incident


def build_old_ledger(url: str) -> int:
    """Five reports and one retraction, through the previous release's SQL; returns the platform id."""
    with psycopg.connect(url, autocommit=True) as conn:
        platform = conn.execute(
            "INSERT INTO platforms (slug, name) VALUES ('legacy', 'Legacy') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        incidents = [old_report(conn, platform, n) for n in range(5)]
        with conn.transaction():
            conn.execute("UPDATE incidents SET status = 'retracted' WHERE id = %s", (incidents[2],))
            payload = {"incident_id": str(incidents[2]), "status": "retracted", "reason": "reported_in_error"}
            conn.execute(
                "SELECT * FROM ledger_append(ARRAY['retracted'], %s::uuid[], %s::text[])",
                ([incidents[2]], [chain.canonical(payload).decode()]),
            )
    return int(platform)


def old_events(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT seq, kind, at, payload, prev_hash, entry_hash FROM ledger_events ORDER BY seq"
        ).fetchall()


def settings_for(url: str, settings: Settings) -> Settings:
    return settings.with_(database_url=url)


def test_the_chain_becomes_the_logs_first_leaves(old_database: str, settings: Settings) -> None:
    platform = build_old_ledger(old_database)
    before = old_events(old_database)
    assert len(before) == 6
    # The previous release's own check passes before the upgrade.
    assert chain.first_bad_seq([chain.ChainEvent(**r) for r in before]) is None

    assert apply_schema(old_database) == 6  # every chained event queued as a leaf
    assert apply_schema(old_database) == 0  # and running it again changes nothing
    upgraded = settings_for(old_database, settings)
    again = run_ledger(upgraded, "db", "init", "--json")
    assert again.returncode == 0, again.stderr

    rt = Runtime(upgraded)
    try:
        assert integrate(rt) == 6
        result = verification.verify(rt)
        assert result.ok, result
        assert (result.leaves, result.pending) == (6, 0)
        with psycopg.connect(old_database, row_factory=dict_row) as conn:
            after = conn.execute(
                "SELECT id, kind, at, payload, prev_hash, entry_hash, platform_id FROM ledger_events ORDER BY id"
            ).fetchall()
            leaves = conn.execute("SELECT idx, event_id FROM log_leaves ORDER BY idx").fetchall()
            assert conn.execute("SELECT to_regclass('ledger_head')").fetchone() == {"to_regclass": None}
        # Nothing lost: every event, with its chain hashes, in chain order as leaves 0..5.
        assert all(r["platform_id"] == platform for r in after)
        kept = [
            {"seq": r["id"], **{k: r[k] for k in ("kind", "at", "payload", "prev_hash", "entry_hash")}}
            for r in after
        ]
        assert kept == before
        assert [(leaf["idx"], leaf["event_id"]) for leaf in leaves] == [
            (i, r["seq"]) for i, r in enumerate(before)
        ]

        # The upgraded ledger takes new reports as the next leaves.
        app = create_app(upgraded)
        try:
            issued = platform_service.create_platform(rt, "newcomer", "Newcomer", "report")
            response = app.test_client().post(
                "/v1/incidents",
                json=incident_body(
                    "after-upgrade", occurred_at=(datetime.now(UTC) - timedelta(days=1)).isoformat()
                ),
                headers={"Authorization": f"Bearer {issued.key}"},
            )
            assert response.status_code == 201, response.get_json()
            check_receipt(rt, response.get_json()["receipt"])
        finally:
            app.extensions["ledger.runtime"].close()
        assert integrate(rt) == 1
        assert verification.verify(rt).ok
        cli = run_ledger(upgraded, "verify")
        assert cli.returncode == 0, cli.stdout + cli.stderr
    finally:
        rt.close()


def test_a_broken_chain_is_not_upgraded(old_database: str) -> None:
    build_old_ledger(old_database)
    with psycopg.connect(old_database, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE ledger_events SET payload = jsonb_set(payload, '{amount}', '1') WHERE seq = 3")
    before = old_events(old_database)
    with pytest.raises(UpgradeRefused, match="broken at seq 3"):
        apply_schema(old_database)
    assert old_events(old_database) == before  # nothing changed: still the old table, still the old head
    with psycopg.connect(old_database) as conn:
        assert conn.execute("SELECT seq FROM ledger_head").fetchone() == (6,)
