"""The subject access report covers the whole consumer, not only the identifiers typed in.

A consumer reported with a phone and an ID card, looked up by phone, asks for their report with the ID
card alone: the lookup, the evidence and the disputes made through the phone are all in it
(《征信业管理条例》 Art. 22, FCRA §609). Checked both before the worker has linked the incidents into a
subject and after, on a database the session worker never touches, so "before" really is before.
A device id shared with somebody else never pulls that person's records in.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ledger import create_app
from ledger.config import Settings
from ledger.identity import id_card_check_digit
from ledger.services import platforms as platform_service
from ledger.services import scoring
from tests.conftest import Member, incident_body

PHONE = {"type": "phone", "value": "13800138000"}
ID_CARD = {"type": "id_card", "value": "11010519491231002" + id_card_check_digit("11010519491231002")}
DEVICE = {"type": "device_id", "value": "tablet-shared-with-a-neighbour"}
NEIGHBOUR_PHONE = {"type": "phone", "value": "13900139000"}
FORGED_PDQ = "f" * 32 + "0" * 32


@pytest.fixture
def stack(isolated_settings: Settings) -> Iterator[tuple[Any, Any]]:
    app = create_app(isolated_settings)
    app.config["TESTING"] = True
    yield app, app.extensions["ledger.runtime"]
    app.extensions["ledger.runtime"].close()


def member(rt: Any, slug: str, scopes: str) -> Member:
    issued = platform_service.create_platform(rt, slug, slug.title(), scopes)
    return Member(slug, issued.key, issued.key_id)


def post(client: Any, path: str, body: dict[str, Any], who: Member, status: int = 200) -> Any:
    response = client.post(path, json=body, headers=who.headers)
    assert response.status_code == status, response.get_json()
    return response.get_json()


@pytest.mark.parametrize("linked", [False, True], ids=["before-linking", "after-linking"])
def test_report_by_id_card_lists_what_was_done_through_the_phone(
    stack: tuple[Any, Any], linked: bool
) -> None:
    app, rt = stack
    client = app.test_client()
    shop = member(rt, "shop", "report,lookup")
    market = member(rt, "market", "report,lookup")
    operator = member(rt, "operator", "dispute")

    # Phone + ID card together, once: that is what links them.
    post(client, "/v1/incidents", incident_body("both-1", identifiers=[PHONE, ID_CARD]), shop, 201)
    # Phone only, with evidence: reachable from the ID card only through the link.
    by_phone = post(
        client,
        "/v1/incidents",
        incident_body("phone-1", identifiers=[PHONE, DEVICE], evidence={"pdq": [FORGED_PDQ]}),
        market,
        201,
    )
    # Somebody else on the same device: must never appear.
    post(
        client,
        "/v1/incidents",
        incident_body("neighbour-1", identifiers=[NEIGHBOUR_PHONE, DEVICE]),
        shop,
        201,
    )
    post(client, "/v1/lookups", {"identifiers": [PHONE], "purpose": "refund_review"}, market)
    post(client, "/v1/lookups", {"identifiers": [NEIGHBOUR_PHONE], "purpose": "account_review"}, market)
    post(client, "/v1/lookups", {"identifiers": [DEVICE], "purpose": "account_review"}, shop)
    post(
        client,
        "/v1/disputes",
        {"identifiers": [PHONE], "incident_id": by_phone["id"], "statement": "商品到货时确实破损"},
        operator,
        201,
    )
    if linked:
        scoring.flush_outbox(rt)

    body = post(client, "/v1/subjects/report", {"identifiers": [ID_CARD]}, operator)

    assert [(lk["platform"]["slug"], lk["purpose"]) for lk in body["lookups"]] == [
        ("market", "refund_review")
    ]
    incidents = {i["id"]: i for i in body["incidents"]}
    assert len(incidents) == 2, body["incidents"]
    phone_incident = incidents[by_phone["id"]]
    assert phone_incident["evidence_images"] == 1
    assert [(d["status"], d["statement_filed"]) for d in phone_incident["disputes"]] == [("open", True)]
    assert phone_incident["status"] == "disputed"

    page = client.post(
        "/v1/subjects/report?format=html", json={"identifiers": [ID_CARD]}, headers=operator.headers
    ).get_data(as_text=True)
    assert "Market" in page
    assert page.count("<tr") - 1 >= 3  # header rows aside, the lookup and both incidents are rows

    # A dispute opened with the ID card alone reaches the phone-only incident as well.
    opened = post(client, "/v1/disputes", {"identifiers": [ID_CARD], "all_entries": True}, operator, 201)
    assert {d["incident_id"] for d in opened["disputes"]} == set(incidents) - {by_phone["id"]}
