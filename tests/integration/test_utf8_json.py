"""JSON responses carry Chinese as UTF-8 characters, so a person reading them with curl can read them;
the canonical encoding the hash chain and the audit digests hash stays ASCII-escaped, byte for byte.
"""

from __future__ import annotations

from typing import Any

from ledger.domain.chain import canonical
from ledger.services import outbox_work
from tests.support import Member, incident_body

PHONE = {"type": "phone", "value": "13800138000"}
STATEMENT = "商品到货时外箱破损"


def test_chinese_comes_as_utf8_not_escapes(client: Any, make_platform: Any, rt: Any) -> None:
    shop: Member = make_platform("shop", "report,lookup")
    operator: Member = make_platform("operator", "dispute")
    created = client.post("/v1/incidents", json=incident_body("u-1"), headers=shop.headers)
    assert created.status_code == 201
    outbox_work.flush_outbox(rt)

    looked = client.post(
        "/v1/lookups", json={"identifiers": [PHONE], "purpose": "refund_review"}, headers=shop.headers
    )
    raw = looked.get_data()
    assert looked.get_json()["adverse_action"] is not None
    assert looked.get_json()["adverse_action"]["text_zh"].encode() in raw
    assert "需人工审核".encode() in raw
    assert b"\\u" not in raw
    lookup_id = looked.get_json()["lookup_id"]
    assert b"\\u" not in client.get(f"/v1/lookups/{lookup_id}", headers=shop.headers).get_data()

    opened = client.post(
        "/v1/disputes",
        json={"identifiers": [PHONE], "all_entries": True, "statement": STATEMENT},
        headers=operator.headers,
    )
    assert opened.status_code == 201
    listed = client.get("/v1/disputes", headers=shop.headers).get_data()
    assert STATEMENT.encode() in listed
    assert b"\\u" not in listed

    report = client.post("/v1/subjects/report", json={"identifiers": [PHONE]}, headers=operator.headers)
    assert "伪造".encode() in report.get_data()
    assert b"\\u" not in report.get_data()
    assert report.mimetype == "application/json"


def test_the_canonical_hashing_encoding_still_escapes() -> None:
    # The chain's canonical JSON (ledger/domain/chain.py) is hashed; it must not change with the responses.
    assert canonical({"statement": "破损"}) == b'{"statement":"\\u7834\\u635f"}'


def test_text_utf8_cannot_carry_falls_back_to_escapes(app: Any) -> None:
    # A lone surrogate (refused at the API's doors, but a test client may send one) cannot be UTF-8.
    assert app.json.dumps({"s": "破损"}) == '{"s": "破损"}'
    assert app.json.dumps({"s": "a\ud800"}) == '{"s": "a\\ud800"}'
