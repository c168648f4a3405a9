"""The consumer-rights surface, attacked (M3, M4, L2, L3).

A subject report names every platform that reported or looked a consumer up, and `all_entries` disputes
touch every entry about them: the review found both open to any platform given the scope, unrecorded and
unlimited, and found that a device id, shared by many people, pulled other consumers into them. These
tests are the attacks, and the two races it found in disputes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest

from ledger import create_app
from ledger.config import Settings
from ledger.errors import Conflict
from ledger.identity import tokenize
from ledger.services import access, disputes, retention
from ledger.services.platforms import Principal
from ledger.services.runtime import Runtime
from tests.support import IDENTITY_KEY, Member, report, stored_token, wait_for

PHONE_A = {"type": "phone", "value": "13800138000"}
PHONE_B = {"type": "phone", "value": "13900139000"}
DEVICE = {"type": "device_id", "value": "shared-family-tablet"}


@pytest.fixture
def operator(make_platform: Any) -> Member:
    return make_platform("operator", "dispute", operator=True)  # type: ignore[no-any-return]


def test_a_device_id_never_pulls_in_another_consumer(
    client: Any, alpha: Member, beta: Member, operator: Member
) -> None:
    mine = report(client, alpha, "order-a", identifiers=[PHONE_A, DEVICE])["id"]
    # Someone else on the same device:
    theirs = report(client, beta, "order-b", identifiers=[PHONE_B, DEVICE])["id"]
    # The subject report for A, asked with A's phone and the shared device.
    body = client.post(
        "/v1/subjects/report", json={"identifiers": [PHONE_A, DEVICE]}, headers=operator.headers
    ).get_json()
    assert [i["id"] for i in body["incidents"]] == [mine]
    assert theirs not in str(body)
    assert beta.slug not in str(body)
    # An all_entries dispute for A disputes A's entry only.
    opened = client.post(
        "/v1/disputes", json={"identifiers": [PHONE_A, DEVICE], "all_entries": True}, headers=operator.headers
    )
    assert opened.status_code == 201, opened.get_json()
    assert [d["incident_id"] for d in opened.get_json()["disputes"]] == [mine]
    untouched = client.get(f"/v1/incidents/{theirs}", headers=beta.headers).get_json()
    assert untouched["status"] == "active"
    # A device alone identifies nobody: refused, naming the field.
    for path, extra in (("/v1/subjects/report", {}), ("/v1/disputes", {"all_entries": True})):
        alone = client.post(path, json={"identifiers": [DEVICE], **extra}, headers=operator.headers)
        assert alone.status_code == 422
        assert "identifiers" in alone.get_json()["errors"]


def test_every_subject_report_is_recorded_without_identifiers(
    client: Any, alpha: Member, operator: Member, rt: Runtime, database_url: str
) -> None:
    report(client, alpha, "order-a", identifiers=[PHONE_A])
    for _ in range(2):
        answered = client.post(
            "/v1/subjects/report", json={"identifiers": [PHONE_A]}, headers=operator.headers
        )
        assert answered.status_code == 200
    tokens = [stored_token("phone", PHONE_A["value"])]
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            """SELECT r.key_id, p.slug, r.salt, r.tokens_commitment, r.at, r::text AS whole
               FROM subject_reports r JOIN platforms p ON p.id = r.platform_id ORDER BY r.at"""
        ).fetchall()
    assert len(rows) == 2
    for key_id, slug, salt, commitment, at, whole in rows:
        assert (key_id, slug) == (operator.key_id, "operator")
        assert datetime.now(UTC) - at < timedelta(minutes=1)
        assert commitment == access.commitment(bytes(salt), tokens)  # checkable given the identifiers
        assert PHONE_A["value"] not in whole  # never a raw identifier
        assert tokenize("phone", PHONE_A["value"], IDENTITY_KEY) not in whole  # nor a member's token
    # Append-only: even the tables' owner is refused by the trigger, except erasing the tokens.
    with psycopg.connect(database_url) as conn:
        for statement in ("UPDATE subject_reports SET key_id = 'x'", "DELETE FROM subject_reports"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
            conn.rollback()
        conn.execute("UPDATE subject_reports SET tokens = NULL")


@pytest.fixture
def strict_client(settings: Settings, clean: None) -> Iterator[Any]:
    application = create_app(settings.with_(consumer_rights_per_minute=3))
    application.config["TESTING"] = True
    yield application.test_client()
    application.extensions["ledger.runtime"].close()


def test_subject_reports_and_disputes_are_rate_limited(
    strict_client: Any, make_platform: Any, alpha: Member
) -> None:
    operator = make_platform("operator", "dispute", operator=True)
    report(strict_client, alpha, "order-a", identifiers=[PHONE_A])
    statuses = [
        strict_client.post(
            "/v1/subjects/report",
            json={"identifiers": [{"type": "phone", "value": f"1380013{n:04d}"}]},
            headers=operator.headers,
        ).status_code
        for n in range(3)
    ]
    assert statuses == [200, 200, 200]
    walked = strict_client.post(
        "/v1/subjects/report", json={"identifiers": [PHONE_A]}, headers=operator.headers
    )
    assert walked.status_code == 429
    assert int(walked.headers["Retry-After"]) > 0
    # Disputes draw on the same bucket.
    dispute = strict_client.post(
        "/v1/disputes", json={"identifiers": [PHONE_A], "all_entries": True}, headers=operator.headers
    )
    assert dispute.status_code == 429


def test_upholding_a_dispute_never_revives_an_expired_entry(
    client: Any, alpha: Member, operator: Member, rt: Runtime
) -> None:
    incident = report(client, alpha, "order-a", identifiers=[PHONE_A])["id"]
    opened = client.post(
        "/v1/disputes", json={"identifiers": [PHONE_A], "incident_id": incident}, headers=operator.headers
    )
    assert opened.status_code == 201
    [dispute] = opened.get_json()["disputes"]
    later = datetime.now(UTC) + timedelta(days=rt.settings.retention_days + 400)
    # The session's worker may still hold the row (linking it): retention skips locked rows (SKIP
    # LOCKED) and takes them on its next run, as the daily job would.
    assert wait_for(lambda: retention.expire_incidents(rt, now=later)["expired"] == 1, timeout=20)
    upheld = client.post(
        f"/v1/disputes/{dispute['id']}/response",
        json={"outcome": "upheld", "basis": "merchant_evidence"},
        headers=alpha.headers,
    )
    assert upheld.status_code == 200
    assert client.get(f"/v1/incidents/{incident}", headers=alpha.headers).get_json()["status"] == "expired"
    # Nor does the SLA job touch it.
    assert disputes.expire_overdue(rt, now=datetime.now(UTC) + timedelta(days=400)) == 0


def test_a_retraction_committed_during_open_dispute_wins(
    client: Any, alpha: Member, operator: Member, rt: Runtime, database_url: str
) -> None:
    incident = report(client, alpha, "order-a", identifiers=[PHONE_A])["id"]
    with rt.db.transaction() as conn:
        row = conn.execute("SELECT id FROM platforms WHERE slug = 'operator'").fetchone()
        assert row is not None
    who = Principal(int(row["id"]), "operator", operator.key_id, frozenset({"dispute"}), 100, 100, True)
    outcome: list[Any] = []

    def dispute() -> None:
        try:
            outcome.append(
                disputes.open_dispute(rt, who, {"identifiers": [PHONE_A], "incident_id": UUID(incident)})
            )
        except Conflict as exc:
            outcome.append(exc)

    with psycopg.connect(database_url) as holder:
        holder.execute("SELECT 1 FROM incidents WHERE id = %s FOR UPDATE", (incident,))
        thread = threading.Thread(target=dispute)
        thread.start()
        # Wait until open_dispute has read the incident as active and is waiting for its lock.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            waiting = holder.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            ).fetchone()
            if waiting and waiting[0]:
                break
            time.sleep(0.02)
        holder.execute(
            "UPDATE incidents SET status = 'retracted', status_reason = 'reported_in_error' WHERE id = %s",
            (incident,),
        )
        holder.commit()
        thread.join(20)
    [result] = outcome
    assert isinstance(result, Conflict)
    assert client.get(f"/v1/incidents/{incident}", headers=alpha.headers).get_json()["status"] == "retracted"
