"""The subject access report covers the whole consumer, not only the identifiers typed in.

A consumer reported with a phone and an ID card, looked up by phone, asks for their report with the ID
card alone: the lookup, the evidence and the disputes made through the phone are all in it
(《征信业管理条例》 Art. 22, FCRA §609). Checked both before the worker has linked the incidents into a
subject and after, on a database no worker watches, so "before" really is before.
A device id shared with somebody else never pulls that person's records in.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from ledger import create_app
from ledger.config import Settings
from ledger.domain import labels
from ledger.identity import id_card_check_digit
from ledger.services import outbox_work
from ledger.services import platforms as platform_service
from tests.support import Member, incident_body

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


def member(rt: Any, slug: str, scopes: str, name: str | None = None) -> Member:
    operator = scopes == "dispute"  # the consumer-rights scope is the operator's alone
    issued = platform_service.create_platform(rt, slug, name or slug.title(), scopes, operator=operator)
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
        outbox_work.flush_outbox(rt)

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
        "/v1/subjects/report/html", json={"identifiers": [ID_CARD]}, headers=operator.headers
    ).get_data(as_text=True)
    assert "Market" in page
    assert page.count("<tr") - 1 >= 3  # header rows aside, the lookup and both incidents are rows

    # A dispute opened with the ID card alone reaches the phone-only incident as well.
    opened = post(client, "/v1/disputes", {"identifiers": [ID_CARD], "all_entries": True}, operator, 201)
    assert {d["incident_id"] for d in opened["disputes"]} == set(incidents) - {by_phone["id"]}


def visible_text(page: str) -> str:
    body = page.split("<body>", 1)[1]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))


def test_page_speaks_chinese_or_english_and_names_the_zone(client: Any, make_platform: Any, rt: Any) -> None:
    """Every code shown as its label; every time in Beijing time, saying so. (tests/e2e/test_report_page.py
    checks the same in a real browser, with its fonts.)"""
    shop = make_platform("shop", "report,lookup")
    operator = make_platform("operator", "dispute", operator=True)
    with rt.db.transaction() as conn:
        conn.execute("UPDATE platforms SET name = '甲商城' WHERE slug = 'shop'")
    incident = post(
        client,
        "/v1/incidents",
        incident_body(
            "c-1", category="chargeback_abuse", confirmation="court_or_police", identifiers=[PHONE]
        ),
        shop,
        201,
    )
    post(client, "/v1/incidents", incident_body("c-2", identifiers=[PHONE]), shop, 201)
    post(client, "/v1/lookups", {"identifiers": [PHONE], "purpose": "refund_review"}, shop)
    post(client, "/v1/disputes", {"identifiers": [PHONE], "incident_id": incident["id"]}, operator, 201)
    outbox_work.flush_outbox(rt)
    disputes = client.get("/v1/disputes", headers=shop.headers).get_json()["disputes"]
    post(client, f"/v1/disputes/{disputes[0]['id']}/response", {"outcome": "retracted"}, shop)
    outbox_work.flush_outbox(rt)

    zh = client.post(
        "/v1/subjects/report/html", json={"identifiers": [PHONE]}, headers=operator.headers
    ).get_data(as_text=True)
    text = visible_text(zh)
    assert not re.search(r"[A-Za-z]", text), text
    for word in (
        "恶意拒付",
        "法院或公安机关认定",
        "已撤销",
        "申诉复核后撤销",
        "复核后撤销记录",
        "退款审核",
        "甲商城",
    ):
        assert word in text, word
    times = re.findall(r"<time>([^<]*)</time>", zh)
    assert len(times) >= 6
    assert all(t.endswith(" 北京时间") for t in times), times
    assert "Noto Sans CJK SC" in zh
    assert "size: A4" in zh

    en = client.post(
        "/v1/subjects/report/html?lang=en", json={"identifiers": [PHONE]}, headers=operator.headers
    ).get_data(as_text=True)
    assert '<html lang="en">' in en
    for word in (
        "Chargeback abuse",
        "Established by a court or the police",
        "Retracted after reinvestigation",
    ):
        assert word in en, word
    assert all(t.endswith(" Beijing time (UTC+8)") for t in re.findall(r"<time>([^<]*)</time>", en))

    # Machines keep the codes.
    body = post(client, "/v1/subjects/report", {"identifiers": [PHONE]}, operator)
    assert {i["category"] for i in body["incidents"]} == {"chargeback_abuse", "fabricated_evidence"}
    assert labels.label("category", "chargeback_abuse") == "恶意拒付"
