"""Scoring through a real Celery worker on real Redis and PostgreSQL."""

from __future__ import annotations

from typing import Any

from tests.conftest import Member, incident_body, wait_for


def lookup(client: Any, member: Member, *identifiers: dict[str, str]) -> dict[str, Any]:
    response = client.post(
        "/v1/lookups", json={"identifiers": list(identifiers), "purpose": "refund_review"}, headers=member.headers
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()  # type: ignore[no-any-return]


PHONE = {"type": "phone", "value": "13800138000"}


def test_report_makes_a_score_appear(client: Any, alpha: Member, beta: Member, worker: Any) -> None:
    assert lookup(client, beta, PHONE)["decision"]["tier"] == "clear"
    created = client.post("/v1/incidents", json=incident_body(), headers=alpha.headers)
    assert created.status_code == 201
    result = wait_for(lambda: (r := lookup(client, beta, PHONE))["decision"]["score"] > 0 and r)
    assert result["decision"]["tier"] in ("review", "return_required")
    assert result["summary"] == {"incidents": 1, "platforms": 1, "last_incident_at": result["summary"]["last_incident_at"]}
    assert result["stale"] is False
