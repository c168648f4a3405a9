"""Consumer rights end to end: disputes and their SLA clock, subject access, expiry, reporter reliability.

Real PostgreSQL, Redis and a real Celery worker; clock-driven jobs run through their CLI twins with a
frozen `--now`, never a real 30-day wait.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from ledger.config import Settings
from ledger.services import outbox_work, reliability, verification
from ledger.services.runtime import Runtime
from tests.support import Member, lookup, report, run_ledger, wait_for

PHONE = {"type": "phone", "value": "13800138000"}
OTHER_PHONE = {"type": "phone", "value": "13900139000"}


@pytest.fixture
def operator(make_platform: Any) -> Member:
    return make_platform("operator", "dispute", operator=True)  # type: ignore[no-any-return]


def score_of(client: Any, member: Member, *identifiers: dict[str, str]) -> int:
    return int(lookup(client, member, *identifiers)["decision"]["score"])


def settled_score(client: Any, member: Member, expected: Any, *identifiers: dict[str, str]) -> dict[str, Any]:
    """Wait until the worker has brought the cached decision to a state `expected(result)` accepts."""
    return wait_for(
        lambda: (r := lookup(client, member, *identifiers)) and not r["stale"] and expected(r) and r
    )  # type: ignore[no-any-return]


def open_dispute(client: Any, operator: Member, **body: Any) -> Any:
    payload = {
        "identifiers": [PHONE],
        "statement": "我收到的商品确实有破损",
        "contact_ref": "ticket-1",
        **body,
    }
    return client.post("/v1/disputes", json=payload, headers=operator.headers)


def counts(database_url: str) -> tuple[int, int]:
    with psycopg.connect(database_url) as conn:
        disputes = conn.execute("SELECT count(*) FROM disputes").fetchone()
        events = conn.execute("SELECT count(*) FROM ledger_events").fetchone()
    assert disputes is not None
    assert events is not None
    return int(disputes[0]), int(events[0])


def test_dispute_lifecycle_open_upheld(
    client: Any, alpha: Member, beta: Member, operator: Member, worker: Any
) -> None:
    incident_id = report(client, alpha, "order-1")["id"]
    before = settled_score(client, beta, lambda r: r["decision"]["score"] > 0, PHONE)["decision"]["score"]

    opened = open_dispute(client, operator, incident_id=incident_id)
    assert opened.status_code == 201, opened.get_json()
    [dispute] = opened.get_json()["disputes"]
    assert dispute["status"] == "open"
    respond_by = datetime.fromisoformat(dispute["respond_by"])
    # 征信业管理条例 Art. 25: answered within 20 days under the default `cn` profile.
    assert timedelta(days=19) < respond_by - datetime.now(UTC) <= timedelta(days=20)

    during = settled_score(client, beta, lambda r: r["decision"]["score"] < before, PHONE)
    codes = [r["code"] for r in during["decision"]["reasons"]]
    assert "DISPUTED_ENTRY_PRESENT" in codes
    assert during["consumer_statement"] is True
    assert "破损" not in str(during)  # the statement's existence travels, never its text

    listed = client.get("/v1/disputes?status=open", headers=alpha.headers).get_json()["disputes"]
    assert [d["id"] for d in listed] == [dispute["id"]]
    assert listed[0]["statement"] == "我收到的商品确实有破损"
    assert client.get("/v1/disputes?status=open", headers=beta.headers).get_json()["disputes"] == []

    upheld = client.post(
        f"/v1/disputes/{dispute['id']}/response",
        json={"outcome": "upheld", "basis": "merchant_evidence"},
        headers=alpha.headers,
    )
    assert upheld.status_code == 200, upheld.get_json()
    assert upheld.get_json()["status"] == "upheld"
    settled_score(client, beta, lambda r: r["decision"]["score"] == before, PHONE)

    again = open_dispute(client, operator, incident_id=incident_id)
    assert again.status_code == 409
    assert "90 days" in str(again.get_json()["errors"])


def test_dispute_retracted_drops_to_remaining_incidents(
    client: Any, alpha: Member, beta: Member, operator: Member, worker: Any
) -> None:
    kept = report(client, alpha, "order-1")["id"]
    disputed = report(client, beta, "order-2", category="false_damage_claim")["id"]
    both = settled_score(client, alpha, lambda r: r["summary"]["incidents"] == 2, PHONE)["decision"]["score"]
    dispute = open_dispute(client, operator, incident_id=disputed).get_json()["disputes"][0]
    response = client.post(
        f"/v1/disputes/{dispute['id']}/response", json={"outcome": "retracted"}, headers=beta.headers
    )
    assert response.status_code == 200
    after = settled_score(client, alpha, lambda r: r["summary"]["incidents"] == 1, PHONE)
    assert after["decision"]["score"] < both
    assert client.get(f"/v1/incidents/{disputed}", headers=beta.headers).get_json()["status"] == "retracted"
    assert client.get(f"/v1/incidents/{kept}", headers=alpha.headers).get_json()["status"] == "active"


def test_all_entries_dispute_covers_every_incident_about_the_consumer(
    client: Any, alpha: Member, beta: Member, operator: Member, database_url: str
) -> None:
    report(client, alpha, "order-1")
    report(client, beta, "order-2")
    report(client, beta, "order-3", identifiers=[OTHER_PHONE])
    outbox_work.flush_outbox(client.application.extensions["ledger.runtime"])
    opened = open_dispute(client, operator, all_entries=True)
    assert opened.status_code == 201, opened.get_json()
    assert len(opened.get_json()["disputes"]) == 2


def test_sla_expiry_retracts_with_reason(
    client: Any, alpha: Member, beta: Member, operator: Member, settings: Settings, rt: Runtime
) -> None:
    incident_id = report(client, alpha, "order-1")["id"]
    outbox_work.flush_outbox(rt)
    open_dispute(client, operator, incident_id=incident_id)

    not_yet = run_ledger(
        settings,
        "disputes",
        "expire",
        "--json",
        "--now",
        (datetime.now(UTC) + timedelta(days=settings.dispute_days - 1)).isoformat(),
    )
    assert not_yet.returncode == 0, not_yet.stderr
    assert '"expired": 0' in not_yet.stdout

    late = run_ledger(
        settings,
        "disputes",
        "expire",
        "--json",
        "--now",
        (datetime.now(UTC) + timedelta(days=settings.dispute_days + 1)).isoformat(),
    )
    assert late.returncode == 0, late.stderr
    assert '"expired": 1' in late.stdout
    incident = client.get(f"/v1/incidents/{incident_id}", headers=alpha.headers).get_json()
    assert incident["status"] == "retracted"
    assert incident["status_reason"] == "DISPUTE_SLA_EXPIRED"
    assert (
        client.get("/v1/disputes?status=expired", headers=alpha.headers).get_json()["disputes"][0]["status"]
        == "expired"
    )
    outbox_work.flush_outbox(rt)
    assert lookup(client, beta, PHONE)["decision"]["score"] == 0
    assert verification.verify(rt).ok


def test_access_control_and_bad_input_change_nothing(
    client: Any, alpha: Member, beta: Member, operator: Member, database_url: str, rt: Runtime
) -> None:
    incident_id = report(client, alpha, "order-1")["id"]
    foreign = report(client, alpha, "order-2", identifiers=[OTHER_PHONE])["id"]
    outbox_work.flush_outbox(rt)
    dispute = open_dispute(client, operator, incident_id=incident_id).get_json()["disputes"][0]
    baseline = counts(database_url)

    cases = [
        (open_dispute(client, operator, incident_id=incident_id, statement="x" * 501), 422, "statement"),
        (open_dispute(client, operator, incident_id="00000000-0000-4000-8000-000000000000"), 404, None),
        (open_dispute(client, operator, incident_id=foreign), 404, None),  # about somebody else
        (open_dispute(client, operator, incident_id=incident_id), 409, "incident_id"),  # second open dispute
        (open_dispute(client, operator), 422, "incident_id"),  # neither incident_id nor all_entries
        (open_dispute(client, alpha, incident_id=incident_id), 403, None),  # no dispute scope
        (
            client.post(
                f"/v1/disputes/{dispute['id']}/response", json={"outcome": "retracted"}, headers=beta.headers
            ),
            404,
            None,
        ),
        (
            client.post(
                f"/v1/disputes/{dispute['id']}/response", json={"outcome": "upheld"}, headers=alpha.headers
            ),
            422,
            "basis",
        ),
        (client.post("/v1/subjects/report", json={"identifiers": [PHONE]}, headers=alpha.headers), 403, None),
    ]
    for response, status, field in cases:
        assert response.status_code == status, (status, response.get_json())
        assert response.headers["Content-Type"].startswith("application/problem+json")
        if field:
            assert field in response.get_json()["errors"]
    assert counts(database_url) == baseline


def test_subject_report_shows_incidents_reporters_and_lookups(
    client: Any, alpha: Member, beta: Member, operator: Member, rt: Runtime
) -> None:
    report(client, alpha, "order-1")
    outbox_work.flush_outbox(rt)
    lookup(client, beta, PHONE)
    client.post(
        "/v1/lookups", json={"identifiers": [PHONE], "purpose": "account_review"}, headers=alpha.headers
    )
    result = client.post("/v1/subjects/report", json={"identifiers": [PHONE]}, headers=operator.headers)
    assert result.status_code == 200, result.get_json()
    body = result.get_json()
    [incident] = body["incidents"]
    assert incident["platform"]["slug"] == "alpha"
    assert incident["category"] == "fabricated_evidence"
    assert body["scores"][0]["tier"] in ("review", "return_required")
    assert sorted((lk["platform"]["slug"], lk["purpose"]) for lk in body["lookups"]) == [
        ("alpha", "account_review"),
        ("beta", "refund_review"),
    ]
    html = client.post("/v1/subjects/report/html", json={"identifiers": [PHONE]}, headers=operator.headers)
    assert html.status_code == 200
    assert html.mimetype == "text/html"
    page = html.get_data(as_text=True)
    assert "个人信用记录报告" in page
    assert "Alpha" in page
    assert "Beta" in page
    # The JSON operation answers JSON whatever the Accept header asks: a generated client parses every 200
    # of an operation alike, so the page has its own route.
    negotiated = client.post(
        "/v1/subjects/report",
        json={"identifiers": [PHONE]},
        headers={**operator.headers, "Accept": "text/html"},
    )
    assert negotiated.mimetype == "application/json"
    assert negotiated.get_json()["incidents"] == body["incidents"]


def test_expiry_shreds_the_link_and_the_chain_still_verifies(
    client: Any,
    alpha: Member,
    beta: Member,
    operator: Member,
    settings: Settings,
    rt: Runtime,
    database_url: str,
) -> None:
    report(client, alpha, "order-1", identifiers=[PHONE, {"type": "device_id", "value": "dev-42"}])
    outbox_work.flush_outbox(rt)
    assert lookup(client, beta, PHONE)["decision"]["score"] > 0
    lookup_count = len(
        client.post(
            "/v1/subjects/report", json={"identifiers": [PHONE]}, headers=operator.headers
        ).get_json()["lookups"]
    )
    assert lookup_count == 1

    future = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(days=5 * 365 + 2)

    def retention_expired_it() -> bool:
        result = run_ledger(settings, "retention", "run", "--json", "--now", future.isoformat())
        assert result.returncode == 0, result.stderr
        return '"expired": 1' in result.stdout

    # The session's worker may still be linking the incident: retention skips rows that are locked (SKIP
    # LOCKED) and takes them on its next run, as the daily job would, so run it until the row was free.
    assert wait_for(retention_expired_it, timeout=20)
    outbox_work.flush_outbox(rt)

    with psycopg.connect(database_url) as conn:
        for table in ("incident_identifiers", "identity_links", "incident_evidence"):
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            assert row == (0,), table
        salt = conn.execute("SELECT salt, status, subject_id FROM incidents").fetchone()
        assert salt == (None, "expired", None)  # nor does the subject tie it to the person (L4)
        leftovers = conn.execute("SELECT count(*) FROM outbox WHERE done_at IS NOT NULL AND args ? 'forget'")
        assert leftovers.fetchone() == (0,)  # erased tokens leave the outbox once the cache dropped them
    assert lookup(client, beta, PHONE)["decision"] == {
        "tier": "clear",
        "restrictions": [],
        "score": 0,
        "reasons": [],
    }
    assert (
        client.post(
            "/v1/subjects/report", json={"identifiers": [PHONE]}, headers=operator.headers
        ).get_json()["incidents"]
        == []
    )
    check = run_ledger(settings, "verify", "--json")
    assert check.returncode == 0, check.stdout + check.stderr


def test_lookup_tokens_erased_after_audit_retention(
    client: Any, alpha: Member, settings: Settings, rt: Runtime, database_url: str
) -> None:
    lookup(client, alpha, PHONE)
    future = datetime.now(UTC) + timedelta(days=2 * 365 + 1)
    result = run_ledger(settings, "retention", "run", "--json", "--now", future.isoformat())
    assert '"lookups_erased": 1' in result.stdout, result.stdout + result.stderr
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT tokens, salt, tier FROM lookups").fetchone()
    assert row == (None, None, "clear")
    assert verification.verify(rt).ok


def test_overturned_reports_lower_trust_and_then_scores(
    client: Any, alpha: Member, beta: Member, operator: Member, rt: Runtime
) -> None:
    kept = report(client, alpha, "keep-1")["id"]
    outbox_work.flush_outbox(rt)
    before = score_of(client, beta, PHONE)
    for n in range(6):  # alpha's reports about other consumers keep being overturned
        phone = {"type": "phone", "value": f"1390013{n:04d}"}
        incident_id = report(client, alpha, f"bad-{n}", identifiers=[phone])["id"]
        outbox_work.flush_outbox(rt)
        dispute = client.post(
            "/v1/disputes",
            json={"identifiers": [phone], "incident_id": incident_id},
            headers=operator.headers,
        ).get_json()["disputes"][0]
        client.post(
            f"/v1/disputes/{dispute['id']}/response", json={"outcome": "retracted"}, headers=alpha.headers
        )
    stats = {row["slug"]: row for row in reliability.stats(rt)}
    assert stats["alpha"]["disputed"] == 6
    assert stats["alpha"]["overturned"] == 6
    assert stats["alpha"]["effective_trust"] < 1.0
    assert stats["beta"]["effective_trust"] == 1.0
    outbox_work.flush_outbox(rt)
    assert score_of(client, beta, PHONE) < before
    assert client.get(f"/v1/incidents/{kept}", headers=alpha.headers).get_json()["status"] == "active"
    cli = run_ledger(client.application.extensions["ledger.runtime"].settings, "platforms", "stats", "--json")
    assert cli.returncode == 0
    assert '"overturn_rate"' in cli.stdout


def test_adverse_action_notice_accompanies_restrictions(
    client: Any, alpha: Member, beta: Member, rt: Runtime
) -> None:
    assert lookup(client, beta, PHONE)["adverse_action"] is None
    for n in range(3):
        report(client, alpha, f"order-{n}", amount={"value": 900_000, "currency": "CNY"})
    outbox_work.flush_outbox(rt)
    result = lookup(client, beta, PHONE)
    assert result["decision"]["restrictions"]
    notice = result["adverse_action"]
    assert "did not make the refund decision" in notice["text_en"]
    assert "申诉" in notice["how_to_dispute_zh"]
