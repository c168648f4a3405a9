"""The application's database role (schema.sql, LEDGER_DB_ROLE): triggers alone do not stop a table's
owner, who can disable them. The service's connections act as `ledger_app`, which owns nothing and
holds neither UPDATE nor DELETE on the history. The whole suite runs as it (tests/conftest.py); these
are the attacks a compromised application, or an SQL injection, would try.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from ledger.services.runtime import Runtime
from tests.support import Member, incident_body

ATTACKS = [
    "UPDATE ledger_events SET payload = '{}'",
    "DELETE FROM ledger_events",
    "TRUNCATE ledger_events",
    "ALTER TABLE ledger_events DISABLE TRIGGER ledger_events_append_only",
    "UPDATE lookups SET response = '{}'",
    "UPDATE lookups SET tier = 'clear'",
    "DELETE FROM lookups",
    "ALTER TABLE lookups DISABLE TRIGGER lookups_append_only",
    "DELETE FROM subject_reports",
    "UPDATE subject_reports SET key_id = 'x'",
    "DROP TABLE ledger_events",
]


@pytest.fixture
def history(client: Any, alpha: Member) -> None:
    assert (
        client.post("/v1/incidents", json=incident_body("order-1"), headers=alpha.headers).status_code == 201
    )
    looked = client.post(
        "/v1/lookups",
        json={"identifiers": [{"type": "phone", "value": "13800138000"}], "purpose": "refund_review"},
        headers=alpha.headers,
    )
    assert looked.status_code == 200


def test_the_application_runs_as_its_restricted_role(rt: Runtime) -> None:
    with rt.db.transaction() as conn:
        row = conn.execute("SELECT current_user AS who").fetchone()
    assert row is not None
    assert row["who"] == "ledger_app"


@pytest.mark.parametrize("statement", ATTACKS)
def test_the_application_cannot_rewrite_history(rt: Runtime, history: None, statement: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused, rt.db.transaction() as conn:
        conn.execute(statement)
    # Refused by the privilege system itself, not only by a trigger the owner could disable.
    message = str(refused.value)
    assert "permission denied" in message or "must be owner" in message
