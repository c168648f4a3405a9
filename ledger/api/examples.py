"""One worked example per operation: what to send, and what comes back.

The OpenAPI document carries them (request and response `example`s) and `/docs/reference` shows each as
a `curl` line and a response body. They are not decoration: tests/integration/test_api_reference.py
sends every example request to a real app and requires the documented status and the same shape of
answer, so an example that stops working fails the build.

Identifiers in URLs are fixed sample UUIDs; the test replaces them with ones it created.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

INCIDENT_ID = "0a60b9d2-eb83-4198-a61a-efe1e78074ab"
LOOKUP_ID = "9e2f5661-8080-47c9-a9b6-805438b35ffa"
DISPUTE_ID = "45a4e5ba-0c94-4bc4-bb2c-0caaa3df48ac"
BASE_URL = "http://127.0.0.1:8000"
KEY_VARIABLE = "LEDGER_KEY"


@dataclass(frozen=True)
class Example:
    status: int
    response: Any
    body: Any = None  # JSON request body
    query: str = ""
    multipart: dict[str, str] = field(default_factory=dict)  # curl -F parts
    scope: str | None = None  # which key the test uses; None: no key
    media: str = "application/json"  # of the response; a text/html example is the page's beginning

    def curl(self, method: str, path: str) -> str:
        """The example as one `curl` command a member can paste (with LEDGER_KEY exported)."""
        import json
        import shlex

        parts = ["curl", "-sS"]
        if method != "GET":
            parts += ["-X", method]
        parts.append(shlex.quote(BASE_URL + path + (f"?{self.query}" if self.query else "")))
        if self.scope:
            parts += ["-H", f'"Authorization: Bearer ${KEY_VARIABLE}"']
        if self.body is not None:
            parts += ["-H", "'Content-Type: application/json'"]
            parts += ["-d", shlex.quote(json.dumps(self.body, ensure_ascii=False, separators=(",", ":")))]
        for name, value in self.multipart.items():
            parts += ["-F", shlex.quote(f"{name}={value}")]
        return " ".join(parts)


PHONE = {"type": "phone", "value": "13800138000"}
INCIDENT = {
    "external_id": "order-20261101-0001",
    "category": "fabricated_evidence",
    "confirmation": "platform_review",
    "amount": {"value": 45000, "currency": "CNY"},
    "occurred_at": "2026-11-01T10:00:00+08:00",
    "consumer_notified_at": "2026-11-01T10:00:00+08:00",
    "identifiers": [PHONE, {"type": "device_id", "value": "a1b2c3d4"}],
}
# The log examples are real: signed with the demo log key (`demo_log_key` in ledger/config.py) over two
# leaves, so every hash, note and signature in them verifies.
LEAF_HASH = "13f085038fb34cca98056f163ab99a948848f5a10d817e01f268544bc0432041"
SECOND_LEAF = "16478416044576c3a9050054f29f9a130c3a3c06509ed9fe138b0f789dde6cae"
ROOT_HASH = "a6dce13411b1c3ca56dc2240f0fd99a318ef8eac72703df1e33ba275aff4bdee"
LOG_ORIGIN = "consumer-credit-ledger.invalid/log"
CHECKPOINT_NOTE = (
    f"{LOG_ORIGIN}\n2\nptzhNBGxw8pW3CJA8P2ZoxjvjqxycD3x4zuida/0ve4=\n\n\u2014 {LOG_ORIGIN} "
    "G2TQUzjA05fGTEhe1xJZO0xP7vniNBE6gf+5/xp+7MUwUIOd8hTikuW3MrKceyUJbncNKco3kCOYdN0vvE/L++V+RQY=\n"
)
FIRST_CHECKPOINT_NOTE = (
    f"{LOG_ORIGIN}\n1\nE/CFA4+zTMqYBW8WOrmalIhI9aENgX4B8mhUS8BDIEE=\n\n\u2014 {LOG_ORIGIN} "
    "G2TQU7LMgHStw7FE6YLWKyj3W6MeUjlEGlvRV/kOnflLxlLRXNphdoxa+LaTjG7f6G0NIgjuAlD5uZ7w12hywTotYAU=\n"
)
# The inquiry log's, likewise: the demo key under the inquiry origin, over the leaf of the lookup example.
INQUIRY_ORIGIN = f"{LOG_ORIGIN}/inquiries"
INQUIRY_LEAF = (
    '{"at":"2026-12-07T19:37:37.803681Z","id":"9e2f5661-8080-47c9-a9b6-805438b35ffa","key_id":"k_3f9a1c2e",'
    '"operator_ref":null,"platform_id":2,"purpose":"refund_review","reasons":["FABRICATED_EVIDENCE_RECENT"],'
    '"response":"11ce66a0809332596815cdeb1269608595ccfdace84c13570f53feb2d42b99d8","tier":"return_required",'
    '"tokens":"b13a389dcb5abf1de1d86087b669bcef6b12f3116b97b28f98df7a64dd755fcc"}'
)
INQUIRY_LEAF_HASH = "15ec99b797a78f6fa628046e68845e13b03080368af8e928e4de8e016e843b66"
INQUIRY_SECOND_LEAF = "1e54ecddb2a998087fcbb94813e74f7382373b913ee3d5ff26cfe8c859d421d9"
INQUIRY_ROOT_HASH = "1238d11513bc56f007848e011f63560719b0484108614c19ecc0d39f114043e7"
INQUIRY_CHECKPOINT_NOTE = (
    f"{INQUIRY_ORIGIN}\n2\nEjjRFRO8VvAHhI4BH2NWBxmwSEEIYUwZ7MDTnxFAQ+c=\n\n\u2014 {INQUIRY_ORIGIN} "
    "Cli4rGL8N5SQIWoUyA4juhiEO49+eFqbZsowgXWBUa/SxQFstbwAtVRtaedoAfH8G6A3O8fp3oUyXjGFJLZ9y42yRgo=\n"
)
INQUIRY_FIRST_CHECKPOINT_NOTE = (
    f"{INQUIRY_ORIGIN}\n1\nFeyZt5enj2+mKARuaIReE7AwgDaK+Oko5N6OAW6EO2Y=\n\n\u2014 {INQUIRY_ORIGIN} "
    "Cli4rHsX954MTeMppZrHZ3z9QUYvOAjA0uztuS+eZZPRy5dnVP3dK/SzZArs165N/17qKBg+2w7ksxlfM2mZAetwYgA=\n"
)
RECEIPT = {
    "id": INCIDENT_ID,
    "external_id": "order-20261101-0001",
    "status": "active",
    "receipt": {
        "leaf_hash": LEAF_HASH,
        "received_at": "2026-12-07T19:37:37.512204Z",
        "log_origin": LOG_ORIGIN,
        "integrate_by": "2026-12-07T19:37:47.512204Z",
        "promise": "G2TQUymKh0WkQ0cXL3ZuvG1V2DU68hDpWjNnJkzPKfKOuQUC57/+ZrS1u04OnEm92levrMIalYbttK68z2jpuSgrmwk=",
    },
}
REASON = {
    "code": "FABRICATED_EVIDENCE_RECENT",
    "text_zh": "近期被确认使用伪造的售后凭证",
    "text_en": "Recently confirmed use of fabricated refund evidence",
}
LOOKUP_REQUEST = {
    "identifiers": [PHONE],
    "purpose": "refund_review",
    "refund": {"reference": "refund-778899", "kind": "refund_only"},
}
LOOKUP_ANSWER = {
    "lookup_id": LOOKUP_ID,
    "decision": {
        "tier": "return_required",
        "restrictions": ["no_refund_only", "require_return"],
        "score": 65,
        "reasons": [REASON],
    },
    "summary": {"incidents": 2, "platforms": 2, "last_incident_at": "2026-11-01T02:00:00+00:00"},
    "consumer_statement": False,
    "stale": False,
    "policy_version": "2026-12-07.1",
    "computed_at": "2026-12-07T19:37:37.664899+00:00",
    "evidence_matches": [],
    "adverse_action": {
        "text_zh": "您的退款申请处理方式受到了消费信用联盟共享记录的影响（等级：需先退货）。……",
        "text_en": "A record shared through the Consumer Credit Ledger consortium influenced how your refund "
        "request is handled (tier: Return required). …",
        "decided_by": "platform",
        "how_to_get_report_zh": "通过平台客服或联盟消费者服务渠道申请个人记录报告。",
        "how_to_get_report_en": "Ask the platform's customer service or the consortium's consumer channel for "
        "your record report.",
        "how_to_dispute_zh": "通过联盟消费者服务渠道提交申诉，可附上不超过500字的说明。",
        "how_to_dispute_en": "File a dispute through the consortium's consumer channel, with a statement of "
        "up to 500 characters.",
    },
}
VALIDATION_PROBLEM = {
    "type": "https://ledger.example/problems/validation",
    "title": "Unprocessable content",
    "status": 422,
    "detail": "the incident is invalid",
    "errors": {"amount.value": ["Not a valid integer."]},
}
DISPUTE = {
    "id": DISPUTE_ID,
    "incident_id": INCIDENT_ID,
    "status": "open",
    "respond_by": "2026-12-27T19:37:37+00:00",
}
PLATFORM = {"slug": "demo-shop", "name": "Demo Shop"}

# (method, OpenAPI path) -> its example.
EXAMPLES: dict[tuple[str, str], Example] = {
    ("POST", "/v1/incidents"): Example(201, RECEIPT, body=INCIDENT, scope="report"),
    ("POST", "/v1/incidents/batch"): Example(
        200,
        {
            "results": [
                {"kind": "incident", "index": 0, "status": 201, "incident": RECEIPT},
                {"kind": "problem", "index": 1, "status": 422, "problem": VALIDATION_PROBLEM},
            ]
        },
        body={
            "incidents": [
                {**INCIDENT, "external_id": "order-20261101-0002"},
                {
                    **INCIDENT,
                    "external_id": "order-20261101-0003",
                    "amount": {"value": 1.5, "currency": "CNY"},
                },
            ]
        },
        scope="report",
    ),
    ("GET", "/v1/incidents/{incident_id}"): Example(
        200,
        {
            **RECEIPT,
            "category": "fabricated_evidence",
            "confirmation": "platform_review",
            "amount": {"value": 45000, "currency": "CNY"},
            "occurred_at": "2026-11-01T02:00:00+00:00",
            "consumer_notified_at": "2026-11-01T02:00:00+00:00",
            "reported_at": "2026-12-07T19:37:37.343047+00:00",
            "status_reason": None,
            "evidence": {"pdq": []},
        },
        scope="report",
    ),
    ("POST", "/v1/incidents/{incident_id}/retract"): Example(
        200, {**RECEIPT, "status": "retracted"}, body={"reason": "reported_in_error"}, scope="report"
    ),
    ("POST", "/v1/incidents/{incident_id}/evidence"): Example(
        201,
        {
            "incident_id": INCIDENT_ID,
            "evidence": [
                {
                    "hash": "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22",
                    "displayed_hash": None,
                    "quality": 100,
                    "low_quality": False,
                    "added": True,
                }
            ],
            "stored": 1,
        },
        multipart={"images": "@claim-photo.jpg"},
        scope="report",
    ),
    ("POST", "/v1/references"): Example(
        200,
        {
            "results": [
                {
                    "kind": "listing",
                    "reference": "sku-10086",
                    "added": 2,
                    "removed": 0,
                    "held": 2,
                    "expires_at": None,
                }
            ]
        },
        body={
            "references": [
                {
                    "kind": "listing",
                    "reference": "sku-10086",
                    "pdq": [
                        "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22",
                        "0d6c2e1f3b5a79880c4e2a1f6b3d5e7f9a1c3e5f7092b4d6f8a0c2e4a6b8d0f1",
                    ],
                }
            ]
        },
        scope="report",
    ),
    ("POST", "/v1/references/replace"): Example(
        200,
        {
            "results": [
                {
                    "kind": "shipping",
                    "reference": "order-20261120-77",
                    "added": 1,
                    "removed": 0,
                    "held": 1,
                    "expires_at": "2027-05-19T10:00:00+00:00",
                }
            ]
        },
        body={
            "references": [
                {
                    "kind": "shipping",
                    "reference": "order-20261120-77",
                    "pdq": ["9a1c3e5f7092b4d6f8a0c2e4a6b8d0f10d6c2e1f3b5a79880c4e2a1f6b3d5e7f"],
                }
            ]
        },
        scope="report",
    ),
    ("POST", "/v1/references/remove"): Example(
        200,
        {"results": [{"kind": "shipping", "reference": "order-20261120-77", "removed": 1}]},
        body={"references": [{"kind": "shipping", "reference": "order-20261120-77"}]},
        scope="report",
    ),
    ("POST", "/v1/references/images"): Example(
        201,
        {
            "kind": "listing",
            "reference": "sku-10087",
            "added": 1,
            "removed": 0,
            "held": 1,
            "expires_at": None,
            "hashes": [
                {
                    "hash": "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22",
                    "displayed_hash": None,
                    "quality": 100,
                }
            ],
        },
        multipart={
            "request": '{"kind":"listing","reference":"sku-10087"};type=application/json',
            "images": "@listing-photo.jpg",
        },
        scope="report",
    ),
    ("POST", "/v1/lookups"): Example(200, LOOKUP_ANSWER, body=LOOKUP_REQUEST, scope="lookup"),
    ("POST", "/v1/lookups/batch"): Example(
        200,
        {"results": [{"kind": "lookup", "index": 0, "status": 200, "lookup": LOOKUP_ANSWER}]},
        body={"lookups": [LOOKUP_REQUEST]},
        scope="lookup",
    ),
    ("POST", "/v1/lookups/evidence"): Example(
        200,
        {
            **LOOKUP_ANSWER,
            "evidence_matches": [
                {
                    "hash": "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22",
                    "displayed_hash": None,
                    "quality": 100,
                    "low_quality": False,
                    "matched": True,
                    "best_distance": 0,
                    "category": "fabricated_evidence",
                    "platforms": 1,
                    "derived_from_reference": {"kind": "listing", "distance": 10},
                    "findings": {
                        "labels": [],
                        "capture_time": "2026-11-20T10:12:03+08:00",
                        "software": None,
                        "malformed": [],
                        "predates_delivery": False,
                    },
                }
            ],
        },
        multipart={
            "request": '{"identifiers":[{"type":"phone","value":"13800138000"}],"purpose":"refund_review"};type=application/json',
            "images": "@claim-photo.jpg",
        },
        scope="lookup",
    ),
    ("GET", "/v1/lookups/{lookup_id}"): Example(200, LOOKUP_ANSWER, scope="lookup"),
    ("POST", "/v1/disputes"): Example(
        201,
        {"disputes": [DISPUTE]},
        body={
            "identifiers": [PHONE],
            "incident_id": INCIDENT_ID,
            "statement": "商品到货时外箱破损",
            "contact_ref": "ticket-4711",
        },
        scope="dispute",
    ),
    ("GET", "/v1/disputes"): Example(
        200,
        {
            "disputes": [
                {
                    **DISPUTE,
                    "external_id": "order-20261101-0001",
                    "statement": "商品到货时外箱破损",
                    "opened_at": "2026-12-07T19:37:37+00:00",
                    "resolved_at": None,
                    "basis": None,
                }
            ]
        },
        query="status=open",
        scope="report",
    ),
    ("POST", "/v1/disputes/{dispute_id}/response"): Example(
        200,
        {**DISPUTE, "status": "upheld"},
        body={"outcome": "upheld", "basis": "merchant_evidence"},
        scope="report",
    ),
    ("POST", "/v1/subjects/report"): Example(
        200,
        {
            "generated_at": "2026-12-07T19:37:37.965608+00:00",
            "jurisdiction": "cn",
            "dispute_days": 20,
            "free_reports": {
                "year": 2026,
                "free_per_year": 2,
                "used": 1,
                "remaining": 1,
                "this_report_free": True,
                "basis": "征信业管理条例 Art. 17: two free reports of one's own record a year",
            },
            "incidents": [
                {
                    "id": INCIDENT_ID,
                    "category": "fabricated_evidence",
                    "confirmation": "platform_review",
                    "amount": {"value": 45000, "currency": "CNY"},
                    "occurred_at": "2026-11-01T02:00:00+00:00",
                    "consumer_notified_at": "2026-11-01T02:00:00+00:00",
                    "reported_at": "2026-12-07T19:37:37.343047+00:00",
                    "status": "disputed",
                    "status_reason": "consumer_dispute",
                    "platform": PLATFORM,
                    "disputes": [
                        {
                            "id": DISPUTE_ID,
                            "status": "open",
                            "opened_at": "2026-12-07T19:37:37+00:00",
                            "respond_by": "2026-12-27T19:37:37+00:00",
                            "resolved_at": None,
                            "statement_filed": True,
                        }
                    ],
                    "evidence_images": 0,
                }
            ],
            "scores": [
                {
                    "score": 65,
                    "tier": "return_required",
                    "restrictions": ["no_refund_only", "require_return"],
                    "reasons": [REASON],
                    "policy_version": "2026-12-07.1",
                    "computed_at": "2026-12-07T19:37:37.664899+00:00",
                }
            ],
            "lookups": [
                {"platform": PLATFORM, "at": "2026-12-07T19:37:37.803681+00:00", "purpose": "refund_review"}
            ],
        },
        body={"identifiers": [PHONE]},
        scope="dispute",
    ),
    ("POST", "/v1/subjects/report/html"): Example(
        200,
        '<!doctype html>\n<html lang="zh-CN">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        "<title>个人信用记录报告 · 消费信用联盟账本</title>\n…",
        body={"identifiers": [PHONE]},
        query="lang=zh",
        scope="dispute",
        media="text/html",
    ),
    ("GET", "/v1/log/key"): Example(
        200,
        {
            "origin": LOG_ORIGIN,
            "vkey": f"{LOG_ORIGIN}+1b64d053+AVgC8dcRUgItFdyWpu9tmdpxJ7aZgVQmxBSWvogs5QEv",
            "key_id": "1b64d053",
            "public_key": "WALx1xFSAi0V3Jam722Z2nEntpmBVCbEFJa+iCzlAS8=",
            "algorithm": "Ed25519",
            "mmd_seconds": 10,
        },
    ),
    ("GET", "/v1/log/checkpoint"): Example(
        200,
        {
            "tree_size": 2,
            "root_hash": ROOT_HASH,
            "note": CHECKPOINT_NOTE,
            "cosignatures": 0,
            "signed_at": "2026-12-07T19:37:37.713308+00:00",
        },
    ),
    ("GET", "/v1/log/checkpoints/{tree_size}"): Example(
        200,
        {
            "tree_size": 1,
            "root_hash": LEAF_HASH,
            "note": FIRST_CHECKPOINT_NOTE,
            "cosignatures": 0,
            "signed_at": "2026-12-07T19:37:37.713308+00:00",
        },
    ),
    ("GET", "/v1/log/inclusion"): Example(
        200,
        {
            "leaf_index": 0,
            "leaf_hash": LEAF_HASH,
            "tree_size": 2,
            "root_hash": ROOT_HASH,
            "proof": [SECOND_LEAF],
            "checkpoint": CHECKPOINT_NOTE,
        },
        query="index=0",
        scope="report",
    ),
    ("GET", "/v1/log/consistency"): Example(
        200,
        {"from": 1, "to": 2, "proof": [SECOND_LEAF]},
        query="from=1&to=2",
    ),
    ("GET", "/v1/log/inquiries/key"): Example(
        200,
        {
            "origin": INQUIRY_ORIGIN,
            "vkey": f"{INQUIRY_ORIGIN}+0a58b8ac+AVgC8dcRUgItFdyWpu9tmdpxJ7aZgVQmxBSWvogs5QEv",
            "key_id": "0a58b8ac",
            "public_key": "WALx1xFSAi0V3Jam722Z2nEntpmBVCbEFJa+iCzlAS8=",
            "algorithm": "Ed25519",
            "mmd_seconds": 10,
        },
    ),
    ("GET", "/v1/log/inquiries/checkpoint"): Example(
        200,
        {
            "tree_size": 2,
            "root_hash": INQUIRY_ROOT_HASH,
            "note": INQUIRY_CHECKPOINT_NOTE,
            "cosignatures": 0,
            "signed_at": "2026-12-07T19:37:38.012114+00:00",
        },
    ),
    ("GET", "/v1/log/inquiries/checkpoints/{tree_size}"): Example(
        200,
        {
            "tree_size": 1,
            "root_hash": INQUIRY_LEAF_HASH,
            "note": INQUIRY_FIRST_CHECKPOINT_NOTE,
            "cosignatures": 0,
            "signed_at": "2026-12-07T19:37:38.012114+00:00",
        },
    ),
    ("GET", "/v1/log/inquiries/inclusion"): Example(
        200,
        {
            "lookup_id": LOOKUP_ID,
            "leaf": INQUIRY_LEAF,
            "leaf_index": 0,
            "leaf_hash": INQUIRY_LEAF_HASH,
            "tree_size": 2,
            "root_hash": INQUIRY_ROOT_HASH,
            "proof": [INQUIRY_SECOND_LEAF],
            "checkpoint": INQUIRY_CHECKPOINT_NOTE,
        },
        query="index=0",
        scope="lookup",
    ),
    ("GET", "/v1/log/inquiries/consistency"): Example(
        200,
        {"from": 1, "to": 2, "proof": [INQUIRY_SECOND_LEAF]},
        query="from=1&to=2",
    ),
    ("GET", "/healthz"): Example(200, {"status": "ok"}),
    ("GET", "/readyz"): Example(
        200,
        {
            "status": "ok",
            "checks": {
                "postgres": "ok",
                "redis": "ok",
                "lookup_path": "redis",
                "log": "ok (lag 0.0s, mmd 10s)",
            },
        },
    ),
}
