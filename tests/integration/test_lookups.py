"""Refund-time lookups end to end: decisions, isolation between members, the audit trail, bad input.

Everything runs on the real PostgreSQL and Redis of the test session; scores come from a real Celery
worker. The lookup answer is what a refund system acts on and what a consumer may later contest, so
these tests pin the decision a lookup returns, that it never leaks which members reported, and that
every answered lookup (and only an answered one) leaves exactly one tamper-evident audit record.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pytest

from ledger.api import schemas
from ledger.services import platforms as platform_service
from ledger.services import verification
from ledger.services.runtime import Runtime
from tests.support import Member, lookup, post_lookup, report, stored_token, wait_for

PHONE = {"type": "phone", "value": "13800138000"}
OTHER_PHONE = {"type": "phone", "value": "13900139000"}
EMAIL = {"type": "email", "value": "Buyer.One@Example.com"}
UNKNOWN = {"type": "phone", "value": "13700137000"}
PROBLEM = "application/problem+json"
# 4,500 yuan, fabricated evidence, confirmed by the police: `return_required` under the default policy
# (and HIGH_VALUE). One platform alone reaches it only with a confirmation exempt from the fairness cap.
SERIOUS = {"amount": {"value": 450_000, "currency": "CNY"}, "confirmation": "court_or_police"}
# 2,000 yuan of refund-only abuse: `review` (until its decay, from 2026-11-01, takes it below).
MINOR = {"category": "refund_only_abuse", "amount": {"value": 200_000, "currency": "CNY"}}


def scored(client: Any, member: Member, *identifiers: dict[str, str], incidents: int = 1) -> dict[str, Any]:
    """Poll until the worker's score for these identifiers is in place and no recompute is pending."""
    return wait_for(
        lambda: (
            (r := lookup(client, member, *identifiers))["summary"]["incidents"] == incidents
            and not r["stale"]
            and r
        )
    )


def audit_rows(rt: Runtime) -> list[dict[str, Any]]:
    with rt.db.transaction() as conn:
        return conn.execute("SELECT * FROM lookups ORDER BY at, id").fetchall()


def reason_codes(result: dict[str, Any]) -> list[str]:
    return [r["code"] for r in result["decision"]["reasons"]]


# -- decisions -----------------------------------------------------------------------------------------
def test_unknown_consumer_is_clear_with_score_zero(client: Any, alpha: Member, rt: Runtime) -> None:
    result = lookup(client, alpha, UNKNOWN, EMAIL)

    assert result["decision"] == {"tier": "clear", "restrictions": [], "score": 0, "reasons": []}
    assert result["summary"] == {"incidents": 0, "platforms": 0, "last_incident_at": None}
    assert result["stale"] is False
    assert result["policy_version"] == rt.policy.version
    assert uuid.UUID(result["lookup_id"])


def test_known_consumer_gets_tier_restrictions_and_explained_reasons(
    client: Any, alpha: Member, beta: Member, rt: Runtime, worker: Any
) -> None:
    assert lookup(client, beta, PHONE)["decision"]["tier"] == "clear"
    report(client, alpha, "order-1", **SERIOUS)

    result = scored(client, beta, PHONE)

    decision = result["decision"]
    assert decision["tier"] == "return_required"
    assert decision["restrictions"] == list(rt.policy.tier("return_required").restrictions)
    assert 50 <= decision["score"] < 80
    codes = reason_codes(result)
    assert {"FABRICATED_EVIDENCE_RECENT", "HIGH_VALUE"} <= set(codes)
    for reason in decision["reasons"]:
        zh, en = rt.policy.reasons[reason["code"]]
        assert reason == {"code": reason["code"], "text_zh": zh, "text_en": en}
        assert zh != en
    assert result["summary"]["incidents"] == 1
    assert result["summary"]["platforms"] == 1
    assert result["summary"]["last_incident_at"].startswith("2026-11-01")
    assert result["computed_at"] is not None
    # The reporter looking up its own consumer sees the same shared decision.
    assert lookup(client, alpha, PHONE)["decision"] == decision


def test_several_subjects_take_the_most_restrictive_tier_and_every_reason(
    client: Any, alpha: Member, beta: Member, worker: Any
) -> None:
    report(client, alpha, "order-serious", **SERIOUS)
    report(client, alpha, "order-minor", identifiers=[OTHER_PHONE], **MINOR)
    serious = scored(client, beta, PHONE)
    minor = scored(client, beta, OTHER_PHONE)
    assert (serious["decision"]["tier"], minor["decision"]["tier"]) == ("return_required", "review")

    both = lookup(client, beta, OTHER_PHONE, PHONE)

    assert both["decision"]["tier"] == "return_required"
    assert both["decision"]["restrictions"] == serious["decision"]["restrictions"]
    assert both["decision"]["score"] == serious["decision"]["score"]
    codes = reason_codes(both)
    assert set(reason_codes(serious)) | set(reason_codes(minor)) | {"MULTIPLE_SUBJECTS_MATCHED"} == set(codes)
    assert len(codes) == len(set(codes))
    assert both["summary"]["incidents"] == 2
    # Two identifiers of one subject are not "several subjects".
    report(client, alpha, "order-email", identifiers=[PHONE, EMAIL], **MINOR)
    same = scored(client, beta, PHONE, EMAIL, incidents=2)
    assert "MULTIPLE_SUBJECTS_MATCHED" not in reason_codes(same)


def test_return_and_refund_drops_restrictions_a_return_already_satisfies(
    client: Any, alpha: Member, beta: Member, worker: Any
) -> None:
    report(client, alpha, "order-1", **SERIOUS)
    plain = scored(client, beta, PHONE)
    assert plain["decision"]["restrictions"] == ["no_refund_only", "require_return"]

    refund_only = lookup(client, beta, PHONE, refund={"reference": "R-1", "kind": "refund_only"})
    with_return = lookup(client, beta, PHONE, refund={"reference": "R-2", "kind": "return_and_refund"})

    assert refund_only["decision"] == plain["decision"]
    assert with_return["decision"]["tier"] == "return_required"
    assert with_return["decision"]["restrictions"] == []
    assert with_return["decision"]["reasons"] == plain["decision"]["reasons"]


# -- isolation -----------------------------------------------------------------------------------------
def test_lookup_ids_are_readable_only_by_the_platform_that_made_them(
    client: Any, alpha: Member, beta: Member
) -> None:
    made = lookup(
        client, alpha, PHONE, refund={"reference": "R-1", "amount": {"value": 1999, "currency": "CNY"}}
    )

    own = client.get(f"/v1/lookups/{made['lookup_id']}", headers=alpha.headers)
    other = client.get(f"/v1/lookups/{made['lookup_id']}", headers=beta.headers)
    unknown = client.get(f"/v1/lookups/{uuid.uuid4()}", headers=alpha.headers)

    assert own.status_code == 200
    assert own.get_json() == made
    assert other.status_code == 404
    assert other.mimetype == PROBLEM
    assert made["lookup_id"] not in other.get_data(as_text=True)
    # Indistinguishable from a lookup that never existed.
    assert other.get_json() == unknown.get_json()


def test_the_answer_is_the_documented_schema_and_the_recorded_response(
    client: Any, alpha: Member, beta: Member, rt: Runtime, worker: Any
) -> None:
    """The view sends the JSON text the service encoded once (not a schema dump): it must still be exactly
    what LookupResultSchema would produce, and exactly what the audit trail holds, for a clear answer
    and for a restricted one with an adverse-action notice."""
    report(client, alpha, "order-1", **SERIOUS)
    restricted = scored(client, beta, PHONE)
    clear = lookup(client, beta, UNKNOWN, refund={"reference": "R-9", "kind": "refund_only"})
    assert restricted["adverse_action"] is not None
    assert clear["adverse_action"] is None

    stored = {str(r["id"]): r["response"] for r in audit_rows(rt)}
    for answer in (restricted, clear):
        assert schemas.LookupResultSchema().dump(answer) == answer
        assert stored[answer["lookup_id"]] == answer


def test_answers_never_name_reporters_nor_their_incidents(client: Any, rt: Runtime, worker: Any) -> None:
    names = {
        "zhenxuan-mall-q7": "Zhenxuan Mall Q7",
        "pinduo-bazaar-k3": "Pinduo Bazaar K3",
        "jingyi-outlet-w9": "Jingyi Outlet W9",
    }
    members = []
    for slug, name in names.items():
        issued = platform_service.create_platform(rt, slug, name, "report,lookup")
        members.append(Member(slug, issued.key, issued.key_id))
    secrets = set(names) | set(names.values())
    for index, member in enumerate(members):
        external_id = f"ext-{member.slug}-{index}-secret"
        created = report(client, member, external_id, identifiers=[PHONE], **SERIOUS)
        secrets |= {
            external_id,
            created["id"],
            created["receipt"]["leaf_hash"],
            created["receipt"]["promise"],
        }
    first = scored(client, members[0], PHONE, incidents=3)
    assert first["summary"]["platforms"] == 3
    assert "MULTIPLE_PLATFORMS" in reason_codes(first)

    answers = []
    for member in members:
        single = post_lookup(client, member, PHONE, EMAIL, refund={"reference": "R-9"})
        batch = client.post(
            "/v1/lookups/batch",
            json={"lookups": [{"identifiers": [PHONE], "purpose": "dispute_investigation"}]},
            headers=member.headers,
        )
        read_back = client.get(f"/v1/lookups/{single.get_json()['lookup_id']}", headers=member.headers)
        answers += [single, batch, read_back]

    for answer in answers:
        assert answer.status_code == 200
        text = answer.get_data(as_text=True)
        leaked = sorted(s for s in secrets if s.lower() in text.lower())
        assert leaked == [], leaked


# -- audit trail ---------------------------------------------------------------------------------------
def test_each_answered_lookup_leaves_one_record_with_tokens_not_values(
    client: Any, alpha: Member, rt: Runtime
) -> None:
    result = lookup(
        client,
        alpha,
        PHONE,
        EMAIL,
        purpose="account_review",
        refund={"reference": "REF-77", "amount": {"value": 5000, "currency": "CNY"}, "kind": "refund_only"},
    )

    [row] = audit_rows(rt)
    assert str(row["id"]) == result["lookup_id"]
    with rt.db.transaction() as conn:
        platform = conn.execute("SELECT id FROM platforms WHERE slug = 'alpha'").fetchone()
    assert row["platform_id"] == platform["id"]  # type: ignore[index]
    assert row["key_id"] == alpha.key_id
    assert row["purpose"] == "account_review"
    assert row["refund_ref"] == "REF-77"
    assert row["tokens"] == [
        stored_token("phone", PHONE["value"]),
        stored_token("email", EMAIL["value"]),
    ]
    assert row["tier"] == "clear"
    assert row["reasons"] == []
    assert row["response"] == result
    stored = json.dumps(row, default=str).lower()
    for raw in ("13800138000", "buyer.one", "example.com"):
        assert raw not in stored


def test_recorded_reasons_are_the_reasons_returned(
    client: Any, alpha: Member, beta: Member, rt: Runtime, worker: Any
) -> None:
    report(client, alpha, "order-1", **SERIOUS)
    result = scored(client, beta, PHONE)

    row = next(r for r in audit_rows(rt) if str(r["id"]) == result["lookup_id"])
    assert row["tier"] == "return_required"
    assert row["reasons"] == reason_codes(result)


def test_a_batch_records_every_answered_item_and_nothing_else(
    client: Any, alpha: Member, rt: Runtime
) -> None:
    items = [
        {
            "identifiers": [{"type": "phone", "value": f"1380013{i:04d}"}],
            "purpose": "refund_review",
            "refund": {"reference": f"R-{i}"},
        }
        for i in range(100)
    ]
    items[7] = {"identifiers": [PHONE], "purpose": "curiosity"}
    items[42] = {"identifiers": [{"type": "phone", "value": "12"}], "purpose": "refund_review"}

    response = client.post("/v1/lookups/batch", json={"lookups": items}, headers=alpha.headers)

    assert response.status_code == 200
    results = response.get_json()["results"]
    assert [r["index"] for r in results] == list(range(100))
    assert [r["status"] for r in results] == [422 if i in (7, 42) else 200 for i in range(100)]
    assert "purpose" in results[7]["problem"]["errors"]
    assert "identifiers.0.value" in results[42]["problem"]["errors"]
    answered = {r["lookup"]["lookup_id"] for r in results if r["status"] == 200}
    rows = audit_rows(rt)
    assert len(rows) == 98
    assert {str(r["id"]) for r in rows} == answered
    by_ref = {r["refund_ref"]: r for r in rows}
    assert by_ref["R-3"]["tokens"] == [stored_token("phone", "13800130003")]
    # Each answered item can be read back on its own.
    some = results[99]["lookup"]
    assert client.get(f"/v1/lookups/{some['lookup_id']}", headers=alpha.headers).get_json() == some


def test_a_batch_of_101_is_refused_whole(client: Any, alpha: Member, rt: Runtime) -> None:
    items = [{"identifiers": [PHONE], "purpose": "refund_review"}] * 101

    response = client.post("/v1/lookups/batch", json={"lookups": items}, headers=alpha.headers)

    assert response.status_code == 422
    assert response.mimetype == PROBLEM
    assert "lookups" in response.get_json()["errors"]
    assert audit_rows(rt) == []


def test_the_audit_trail_refuses_update_and_delete(client: Any, alpha: Member, rt: Runtime) -> None:
    lookup_id = lookup(client, alpha, PHONE)["lookup_id"]

    for statement in (
        "UPDATE lookups SET tier = 'hold' WHERE id = %s",
        "UPDATE lookups SET refund_ref = 'rewritten' WHERE id = %s",
        "DELETE FROM lookups WHERE id = %s",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), rt.db.transaction() as conn:
            conn.execute(statement, (lookup_id,))

    [row] = audit_rows(rt)
    assert (str(row["id"]), row["tier"], row["refund_ref"]) == (lookup_id, "clear", None)


@pytest.mark.parametrize(
    "rewrite",
    [
        "UPDATE lookups SET tier = 'hold' WHERE id = %s",
    ],
    ids=["tier"],
)
def test_verify_passes_then_names_a_tampered_lookup(
    client: Any, alpha: Member, rt: Runtime, database_url: str, rewrite: str
) -> None:
    lookup(client, alpha, PHONE)
    target = lookup(client, alpha, EMAIL, refund={"reference": "R-1"})["lookup_id"]
    lookup(client, alpha, UNKNOWN)
    before = verification.verify(rt)
    assert (before.ok, before.lookups, before.bad_lookup) == (True, 3, None)

    # As the tables' owner: the service's own role can neither disable the trigger nor update the row.
    with psycopg.connect(database_url) as conn:
        conn.execute("ALTER TABLE lookups DISABLE TRIGGER lookups_append_only")
        conn.execute(rewrite, (target,))
        conn.execute("ALTER TABLE lookups ENABLE TRIGGER lookups_append_only")

    after = verification.verify(rt)
    assert after.ok is False
    assert after.bad_lookup == target
    assert target in (after.problem or "")


# -- bad input -----------------------------------------------------------------------------------------
BAD_INPUT = {
    "no purpose": ({"identifiers": [PHONE]}, "purpose"),
    "no identifiers": ({"identifiers": [], "purpose": "refund_review"}, "identifiers"),
    "11 identifiers": (
        {
            "identifiers": [{"type": "phone", "value": f"1380013800{i}"} for i in range(10)] + [EMAIL],
            "purpose": "refund_review",
        },
        "identifiers",
    ),
    "unknown purpose": ({"identifiers": [PHONE], "purpose": "marketing"}, "purpose"),
    "malformed token": (
        {"identifiers": [{"type": "phone", "token": "ABC123"}], "purpose": "refund_review"},
        "identifiers.0.token",
    ),
    "negative amount": (
        {
            "identifiers": [PHONE],
            "purpose": "refund_review",
            "refund": {"reference": "R-1", "amount": {"value": -100, "currency": "CNY"}},
        },
        "refund.amount.value",
    ),
}


@pytest.mark.parametrize(("body", "field"), list(BAD_INPUT.values()), ids=list(BAD_INPUT))
def test_bad_input_is_422_naming_the_field_and_leaves_no_record(
    client: Any, alpha: Member, rt: Runtime, body: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/lookups", json=body, headers=alpha.headers)

    assert response.status_code == 422, response.get_json()
    assert response.mimetype == PROBLEM
    problem = response.get_json()
    assert problem["status"] == 422
    assert field in problem["errors"], problem
    assert audit_rows(rt) == []
