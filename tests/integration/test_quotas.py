"""Quotas and purpose limitation on the lookup API.

Each API key has a token bucket in Redis, sized per platform by the operator. Over it, a refund system
gets 429 problem+json with headers it can act on. Separately, a member that looks consumers up for
refund review without naming a refund is fishing, which purpose limitation (PIPL Art. 6) forbids: the
operator sees it in a metric and in `ledger lookups fishing`. Real Redis and PostgreSQL throughout.
"""

from __future__ import annotations

import time
from typing import Any

from ledger.config import Settings
from ledger.services import platforms as platform_service
from ledger.services.runtime import Runtime
from tests.support import Member, audit_count, ledger_json, metric, post_report

PHONE = {"type": "phone", "value": "13800138000"}
PROBLEM = "application/problem+json"


def post_lookup(client: Any, member: Member, **extra: Any) -> Any:
    body = {"identifiers": [PHONE], "purpose": "refund_review", **extra}
    return client.post("/v1/lookups", json=body, headers=member.headers)


# -- rate limits ---------------------------------------------------------------------------------------
def test_over_the_limit_is_429_with_retry_after_and_ratelimit_headers(
    client: Any, alpha: Member, rt: Runtime
) -> None:
    platform_service.set_rate_limit(rt, "alpha", 1, 3)
    refused_before = metric(client, "ledger_rate_limited_total")

    statuses = [post_lookup(client, alpha).status_code for _ in range(3)]
    refused = post_lookup(client, alpha)

    assert statuses == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.mimetype == PROBLEM
    problem = refused.get_json()
    assert problem["status"] == 429
    assert problem["type"].endswith("/rate-limited")
    retry_after = int(refused.headers["Retry-After"])
    assert retry_after >= 1
    assert refused.headers["RateLimit-Limit"] == "3"
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert metric(client, "ledger_rate_limited_total") == refused_before + 1
    # A refused lookup was not answered, so it leaves no audit record.
    assert audit_count(rt) == 3
    # Retry-After tells the truth: waiting that long is enough.
    time.sleep(retry_after)
    assert post_lookup(client, alpha).status_code == 200


def test_the_limit_is_per_platform_across_its_keys(
    client: Any, alpha: Member, beta: Member, rt: Runtime
) -> None:
    """A platform cannot multiply its quota by asking for more keys (the existence oracle, M5)."""
    platform_service.set_rate_limit(rt, "alpha", 1, 2)
    rotated = platform_service.rotate_key(rt, "alpha")  # the old key stays valid
    second = Member("alpha", rotated.key, rotated.key_id)

    first_key = [post_lookup(client, alpha).status_code for _ in range(3)]
    second_key = [post_lookup(client, second).status_code for _ in range(3)]
    other_platform = [post_lookup(client, beta).status_code for _ in range(3)]

    assert first_key == [200, 200, 429]
    assert second_key == [429, 429, 429]
    assert other_platform == [200, 200, 200]
    with rt.db.transaction() as conn:
        keys = conn.execute("SELECT key_id, count(*) AS n FROM lookups GROUP BY key_id").fetchall()
    assert {r["key_id"]: r["n"] for r in keys} == {alpha.key_id: 2, beta.key_id: 3}


def test_the_quota_counts_identifiers_not_requests(
    client: Any, alpha: Member, beta: Member, rt: Runtime
) -> None:
    """One lookup of ten identifiers used to cost what one of a single identifier did."""
    platform_service.set_rate_limit(rt, "alpha", 1, 10)
    ten = [{"type": "phone", "value": f"1380013{n:04d}"} for n in range(10)]
    first = client.post(
        "/v1/lookups", json={"identifiers": ten, "purpose": "refund_review"}, headers=alpha.headers
    )
    assert first.status_code == 200
    assert first.headers["RateLimit-Remaining"] == "0"
    assert post_lookup(client, alpha).status_code == 429
    # A batch is charged for every identifier of every item. Beta's fresh bucket of 20 keeps 10 after a
    # lookup of ten identifiers; a batch of 4 items of 5 identifiers costs 20, where a charge per item (4)
    # would pass. Only a 10-second stall between the two requests could refill the difference.
    platform_service.set_rate_limit(rt, "beta", 1, 20)
    spent = client.post(
        "/v1/lookups", json={"identifiers": ten, "purpose": "refund_review"}, headers=beta.headers
    )
    assert spent.headers["RateLimit-Remaining"] == "10"
    batch = {"lookups": [{"identifiers": ten[:5], "purpose": "refund_review"}] * 4}
    answered = client.post("/v1/lookups/batch", json=batch, headers=beta.headers)
    assert answered.status_code == 429


def test_the_operator_sets_the_limit_from_the_cli(
    client: Any, settings: Settings, alpha: Member, beta: Member
) -> None:
    shown = ledger_json(settings, "platforms", "rate-limit", "beta", "--per-second", "1", "--burst", "2")
    assert shown == {"platform": "beta", "per_second": 1, "burst": 2}

    statuses = [post_lookup(client, beta).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]
    assert post_lookup(client, alpha).status_code == 200


def test_a_batch_spends_one_token_per_item(client: Any, alpha: Member, rt: Runtime) -> None:
    platform_service.set_rate_limit(rt, "alpha", 1, 5)
    items = [
        {"identifiers": [PHONE], "purpose": "refund_review", "refund": {"reference": f"R-{i}"}}
        for i in range(4)
    ]

    accepted = client.post("/v1/lookups/batch", json={"lookups": items}, headers=alpha.headers)
    refused = client.post("/v1/lookups/batch", json={"lookups": items[:3]}, headers=alpha.headers)

    assert accepted.status_code == 200
    assert refused.status_code == 429
    assert refused.mimetype == PROBLEM
    assert "Retry-After" in refused.headers
    assert audit_count(rt) == 4


def test_reports_are_charged_after_their_work_and_refused_once_the_bucket_is_empty(
    client: Any, alpha: Member, rt: Runtime
) -> None:
    """A report is charged in the Redis call made after its commit; the process then refuses the
    platform's reports itself, with no round trip, until the bucket has a unit again."""
    platform_service.set_rate_limit(rt, "alpha", 1, 2)

    statuses = [post_report(client, alpha, f"quota-{i}").status_code for i in range(2)]
    refused = post_report(client, alpha, "quota-refused")

    assert statuses == [201, 201]
    assert refused.status_code == 429
    assert refused.mimetype == PROBLEM
    assert refused.get_json()["type"].endswith("/rate-limited")
    retry_after = int(refused.headers["Retry-After"])
    assert retry_after >= 1
    with rt.db.transaction() as conn:
        stored = conn.execute(
            "SELECT count(*) AS n FROM incidents WHERE external_id = 'quota-refused'"
        ).fetchone()
    assert stored is not None
    assert stored["n"] == 0  # refused before any work
    # Refused before the body is even read: a flood of invalid batches costs the server no parsing.
    bogus = client.post("/v1/incidents/batch", json={"incidents": "not a list"}, headers=alpha.headers)
    assert bogus.status_code == 429
    time.sleep(retry_after)
    assert post_report(client, alpha, "quota-later").status_code == 201


# -- fishing -------------------------------------------------------------------------------------------
def test_lookups_without_a_reference_are_reported_as_fishing_under_every_purpose(
    client: Any, settings: Settings, make_platform: Any
) -> None:
    fisher = make_platform("fisher-shop")
    honest = make_platform("honest-shop")
    name = "ledger_lookups_without_refund_reference_total"
    before = {p: metric(client, name, purpose=p) for p in ("refund_review", "account_review")}

    for _ in range(4):
        assert post_lookup(client, fisher).status_code == 200
    assert post_lookup(client, fisher, refund={"reference": "R-1"}).status_code == 200
    # Switching purpose does not hide the fishing.
    for _ in range(3):
        assert post_lookup(client, fisher, purpose="account_review").status_code == 200
    batch = [{"identifiers": [PHONE], "purpose": "refund_review"}] * 2
    assert (
        client.post("/v1/lookups/batch", json={"lookups": batch}, headers=fisher.headers).status_code == 200
    )
    for i in range(3):
        assert post_lookup(client, honest, refund={"reference": f"H-{i}"}).status_code == 200

    report = {row["slug"]: row for row in ledger_json(settings, "lookups", "fishing")}

    assert set(report) == {"fisher-shop", "honest-shop"}
    assert report["fisher-shop"]["lookups"] == 10
    assert report["fisher-shop"]["without_reference"] == 9
    assert report["fisher-shop"]["share_without_reference"] == 0.9
    assert report["fisher-shop"]["by_purpose"] == {
        "refund_review": {"lookups": 7, "without_reference": 6},
        "account_review": {"lookups": 3, "without_reference": 3},
    }
    assert report["honest-shop"]["lookups"] == 3
    assert report["honest-shop"]["without_reference"] == 0
    assert metric(client, name, purpose="refund_review") == before["refund_review"] + 6
    assert metric(client, name, purpose="account_review") == before["account_review"] + 3
    # /metrics never names a member (L5).
    text = client.get("/metrics").get_data(as_text=True)
    assert "fisher-shop" not in text
    assert "honest-shop" not in text


def test_a_batch_larger_than_the_burst_goes_through_and_is_paid_back(
    client: Any, alpha: Member, rt: Runtime
) -> None:
    platform_service.set_rate_limit(rt, "alpha", 1, 2)
    items = [
        {"identifiers": [PHONE], "purpose": "refund_review", "refund": {"reference": f"R-{i}"}}
        for i in range(3)
    ]

    batch = client.post("/v1/lookups/batch", json={"lookups": items}, headers=alpha.headers)
    refused = post_lookup(client, alpha)

    # Refusing it would be for ever: a bucket never holds more than its burst.
    assert batch.status_code == 200, batch.get_json()
    assert refused.status_code == 429
    # The third item left the bucket one token in debt, so the wait is longer than for one lookup.
    retry_after = int(refused.headers["Retry-After"])
    assert retry_after >= 2
    time.sleep(retry_after)
    assert post_lookup(client, alpha).status_code == 200
    assert audit_count(rt) == 4


def test_successful_lookups_carry_ratelimit_headers(client: Any, alpha: Member, rt: Runtime) -> None:
    platform_service.set_rate_limit(rt, "alpha", 1, 20)  # a slow refill, so the counts below are exact
    body = {"identifiers": [{"type": "phone", "value": "13800138000"}], "purpose": "refund_review"}
    first = client.post("/v1/lookups", json=body, headers=alpha.headers)
    second = client.post("/v1/lookups", json=body, headers=alpha.headers)
    assert first.status_code == 200
    assert first.headers["RateLimit-Limit"] == "20"
    assert first.headers["RateLimit-Remaining"] == "19"
    assert second.headers["RateLimit-Remaining"] == "18"
    batch = client.post("/v1/lookups/batch", json={"lookups": [body] * 3}, headers=alpha.headers)
    assert batch.headers["RateLimit-Remaining"] == "15"
