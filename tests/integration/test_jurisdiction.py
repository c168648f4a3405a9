"""The `cn` jurisdiction profile end to end (征信业管理条例; docs/legal.md): the notice before a report
(Art. 15), the free subject reports counted per calendar year (Art. 17), the operator reference kept in
the inquiry trail (Art. 22), and the `us` profile for comparison. The 20-day dispute deadline (Art. 25)
is pinned in test_disputes.py; retention from `occurred_at` (Art. 16) in test_disputes.py and below.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from ledger import create_app
from ledger.config import Settings
from ledger.services import platforms as platform_service
from ledger.services import verification
from ledger.services.runtime import Runtime
from tests.support import Member, incident_body, reset_state

PROBLEM = "application/problem+json"
PHONE = {"type": "phone", "value": "13800138000"}


def _problem(response: Any, field: str) -> dict[str, Any]:
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body: dict[str, Any] = json.loads(response.get_data(as_text=True))
    assert body["status"] == 422
    assert list(body["errors"]) == [field], body
    return body


def _rows(database_url: str, table: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def test_a_report_without_the_notice_is_refused_naming_the_article(
    client: Any, alpha: Member, database_url: str
) -> None:
    body = incident_body("order-1")
    del body["consumer_notified_at"]
    problem = _problem(client.post("/v1/incidents", json=body, headers=alpha.headers), "consumer_notified_at")
    assert "Art. 15" in problem["errors"]["consumer_notified_at"][0]
    assert _rows(database_url, "incidents") == 0


def test_a_notice_later_than_the_report_is_refused(client: Any, alpha: Member, database_url: str) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    response = client.post(
        "/v1/incidents", json=incident_body("order-1", consumer_notified_at=later), headers=alpha.headers
    )
    problem = _problem(response, "consumer_notified_at")
    assert "later than the report's receipt" in problem["errors"]["consumer_notified_at"][0]
    assert "Art. 15" in problem["errors"]["consumer_notified_at"][0]
    # In a batch the item fails alone, with the same problem.
    good = incident_body("order-2")
    batch = client.post(
        "/v1/incidents/batch",
        json={"incidents": [incident_body("order-3", consumer_notified_at=later), good]},
        headers=alpha.headers,
    ).get_json()
    assert [r["status"] for r in batch["results"]] == [422, 201]
    assert "consumer_notified_at" in batch["results"][0]["problem"]["errors"]
    assert _rows(database_url, "incidents") == 1


def test_the_notice_is_kept_replayed_and_shown_to_the_consumer(
    client: Any, alpha: Member, make_platform: Any, rt: Runtime
) -> None:
    notified = "2026-11-02T09:30:00+08:00"
    body = incident_body("order-1", consumer_notified_at=notified)
    created = client.post("/v1/incidents", json=body, headers=alpha.headers)
    assert created.status_code == 201, created.get_json()
    assert client.post("/v1/incidents", json=body, headers=alpha.headers).status_code == 200
    other_notice = client.post(
        "/v1/incidents",
        json=incident_body("order-1", consumer_notified_at="2026-11-03T09:30:00+08:00"),
        headers=alpha.headers,
    )
    assert other_notice.status_code == 409  # a different notice time is a different report
    incident_id = created.get_json()["id"]
    read = client.get(f"/v1/incidents/{incident_id}", headers=alpha.headers).get_json()
    assert datetime.fromisoformat(read["consumer_notified_at"]) == datetime.fromisoformat(notified)
    operator = make_platform("operator", "dispute")
    report = client.post("/v1/subjects/report", json={"identifiers": [PHONE]}, headers=operator.headers)
    [incident] = report.get_json()["incidents"]
    assert datetime.fromisoformat(incident["consumer_notified_at"]) == datetime.fromisoformat(notified)
    # The notice is in the chained event, so the tamper-evident history shows it was given.
    with rt.db.transaction() as conn:
        row = conn.execute("SELECT payload FROM ledger_events WHERE kind = 'reported'").fetchone()
    assert row is not None
    assert row["payload"]["consumer_notified_at"] == "2026-11-02T01:30:00.000000Z"
    assert verification.verify(rt).ok


def test_free_subject_reports_are_counted_per_consumer_and_year(
    client: Any, make_platform: Any, database_url: str
) -> None:
    operator = make_platform("operator", "dispute")

    def report(*identifiers: dict[str, str]) -> dict[str, Any]:
        response = client.post(
            "/v1/subjects/report", json={"identifiers": list(identifiers)}, headers=operator.headers
        )
        assert response.status_code == 200, response.get_json()
        return response.get_json()["free_reports"]  # type: ignore[no-any-return]

    year = datetime.now(UTC).astimezone(rt_zone()).year
    first, second, third = report(PHONE), report(PHONE), report(PHONE, {"type": "email", "value": "a@b.cn"})
    assert first == {
        "year": year,
        "free_per_year": 2,
        "used": 1,
        "remaining": 1,
        "this_report_free": True,
        "basis": first["basis"],
    }
    assert "Art. 17" in first["basis"]
    assert (second["used"], second["remaining"], second["this_report_free"]) == (2, 0, True)
    # The same consumer under one more identifier: still the same count.
    assert (third["used"], third["remaining"], third["this_report_free"]) == (3, 0, False)
    # Another consumer has their own two.
    assert report({"type": "phone", "value": "13900139000"})["used"] == 1
    # Last year's reports do not count this year.
    with psycopg.connect(database_url) as conn:  # the owner moves time: the record is append-only
        conn.execute("ALTER TABLE subject_reports DISABLE TRIGGER subject_reports_append_only")
        conn.execute("UPDATE subject_reports SET at = at - interval '400 days'")
        conn.execute("ALTER TABLE subject_reports ENABLE TRIGGER subject_reports_append_only")
    assert report(PHONE)["used"] == 1
    page = client.post(
        "/v1/subjects/report/html", json={"identifiers": [PHONE]}, headers=operator.headers
    ).get_data(as_text=True)
    assert "已获取本报告2次" in page
    assert "每年可免费获取2次" in page
    assert "申诉将在20天内复核" in page


def rt_zone() -> Any:
    from ledger.jurisdiction import CN

    return CN.year_zone


def test_operator_ref_is_kept_in_the_inquiry_trail(client: Any, alpha: Member, rt: Runtime) -> None:
    response = client.post(
        "/v1/lookups",
        json={"identifiers": [PHONE], "purpose": "refund_review", "operator_ref": "agent-0042"},
        headers=alpha.headers,
    )
    assert response.status_code == 200, response.get_json()
    assert "agent-0042" not in response.get_data(as_text=True)  # kept, not echoed
    too_long = client.post(
        "/v1/lookups",
        json={"identifiers": [PHONE], "purpose": "refund_review", "operator_ref": "x" * 129},
        headers=alpha.headers,
    )
    _problem(too_long, "operator_ref")
    with rt.db.transaction() as conn:
        rows = conn.execute("SELECT operator_ref FROM lookups").fetchall()
        assert [r["operator_ref"] for r in rows] == ["agent-0042"]
    assert verification.verify(rt).ok
    # The trail refuses a rewrite of the reference, as of every other column.
    with pytest.raises(psycopg.errors.InsufficientPrivilege), rt.db.transaction() as conn:
        conn.execute("UPDATE lookups SET operator_ref = 'agent-0001'")


def test_a_report_older_than_five_years_from_the_act_is_refused(client: Any, alpha: Member) -> None:
    old = (datetime.now(UTC) - timedelta(days=5 * 365 + 1)).isoformat()
    response = client.post(
        "/v1/incidents",
        json=incident_body("order-1", occurred_at=old, consumer_notified_at=old),
        headers=alpha.headers,
    )
    assert "occurred_at" in _problem(response, "occurred_at")["errors"]


@pytest.fixture
def us_client(settings: Settings) -> Iterator[tuple[Any, Member]]:
    reset_state(settings)
    app = create_app(settings.with_(jurisdiction="us"))
    rt: Runtime = app.extensions["ledger.runtime"]
    issued = platform_service.create_platform(rt, "alpha", "Alpha", "report,lookup")
    # The consumer-rights scope is the operator's alone: its own account (the test keeps the name `alpha`
    # for the member's key and reaches the operator's through `us_operator`).
    operator = platform_service.create_platform(rt, "operator", "Operator", "dispute", operator=True)
    app.config["US_OPERATOR"] = Member("operator", operator.key, operator.key_id)
    yield app.test_client(), Member("alpha", issued.key, issued.key_id)
    rt.close()


def test_the_us_profile_keeps_the_fcra_values(us_client: tuple[Any, Member]) -> None:
    client, alpha = us_client
    body = incident_body("order-1")
    del body["consumer_notified_at"]
    created = client.post("/v1/incidents", json=body, headers=alpha.headers)
    assert created.status_code == 201, created.get_json()
    assert (
        client.get(f"/v1/incidents/{created.get_json()['id']}", headers=alpha.headers).get_json()[
            "consumer_notified_at"
        ]
        is None
    )
    opened = client.post(
        "/v1/disputes",
        json={"identifiers": [PHONE], "all_entries": True},
        headers=client.application.config["US_OPERATOR"].headers,
    )
    assert opened.status_code == 201, opened.get_json()
    respond_by = datetime.fromisoformat(opened.get_json()["disputes"][0]["respond_by"])
    assert timedelta(days=29) < respond_by - datetime.now(UTC) <= timedelta(days=30)
    report = client.post(
        "/v1/subjects/report",
        json={"identifiers": [PHONE]},
        headers=client.application.config["US_OPERATOR"].headers,
    )
    assert report.get_json()["free_reports"]["free_per_year"] == 1
    assert report.get_json()["jurisdiction"] == "us"
