"""The pure risk model (`ledger.domain.scoring.assess`) against the guarantees issue 3 asks for.

Property tests (hypothesis) cover what must hold for every ledger: the score stays in 0..100, adding an
incident never lowers it, a retraction never raises it, time never raises it, and one platform alone
never passes the fairness cap. Example tests pin the formulas of the policy file (amount factor,
currency conversion, disputed weight, corroboration) and the decay review time the daily job relies on.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from ledger.domain.policy import load_policy
from ledger.domain.scoring import (
    IncidentFacts,
    amount_factor,
    amount_in_yuan,
    assess,
    combine_tiers,
    contribution,
    corroboration,
    score_from_sum,
)

POLICY = load_policy()
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
COUNTING = ("active", "disputed")
TIER_NAMES = [t.name for t in POLICY.tiers]

ANY_PLATFORM = st.integers(1, 4)
ANY_STATUS = st.sampled_from(("active", "active", "disputed", "retracted", "expired"))

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def rank(tier: str) -> int:
    return POLICY.rank(tier)


def facts(**overrides: object) -> IncidentFacts:
    base: dict[str, object] = {
        "platform_id": 1,
        "category": "fabricated_evidence",
        "confirmation": "platform_review",
        "amount_minor": 45_000,
        "currency": "CNY",
        "occurred_at": NOW - timedelta(days=10),
    }
    base.update(overrides)
    return IncidentFacts(**base)  # type: ignore[arg-type]


@st.composite
def incidents(
    draw: st.DrawFn,
    platforms: st.SearchStrategy[int] = ANY_PLATFORM,
    statuses: st.SearchStrategy[str] = ANY_STATUS,
) -> IncidentFacts:
    return IncidentFacts(
        platform_id=draw(platforms),
        category=draw(st.sampled_from(sorted(POLICY.severity))),
        confirmation=draw(st.sampled_from(sorted(POLICY.confirmation))),
        amount_minor=draw(st.integers(0, 10**9)),
        currency=draw(st.sampled_from(sorted(POLICY.currencies))),
        occurred_at=NOW - timedelta(seconds=draw(st.integers(0, 6 * 365 * 86400))),
        status=draw(statuses),
        platform_trust=draw(st.floats(0.0, 1.5, allow_nan=False)),
        has_statement=draw(st.booleans()),
    )


ledgers = st.lists(incidents(), max_size=12)


# -- properties --------------------------------------------------------------------------------------
@PROPERTY
@given(ledgers)
def test_score_stays_between_0_and_100_and_matches_its_tier(ledger: list[IncidentFacts]) -> None:
    result = assess(ledger, NOW, POLICY)
    assert 0 <= result.score <= 100
    assert result.tier in TIER_NAMES
    assert result.restrictions == POLICY.tier(result.tier).restrictions
    assert result.incidents == sum(1 for i in ledger if i.status in COUNTING)
    assert result.platforms == len({i.platform_id for i in ledger if i.status in COUNTING})
    # The tier follows the (possibly capped) score: never a tier the score does not reach.
    assert POLICY.tier_for_score(result.score).name == result.tier
    if result.incidents == 0:
        assert (result.score, result.tier, result.reasons) == (0, "clear", ())


@PROPERTY
@given(ledgers, incidents(), st.integers(0, 12))
def test_adding_an_incident_never_lowers_the_score(
    ledger: list[IncidentFacts], extra: IncidentFacts, position: int
) -> None:
    before = assess(ledger, NOW, POLICY)
    grown = [*ledger]
    grown.insert(min(position, len(grown)), extra)
    after = assess(grown, NOW, POLICY)
    assert after.score >= before.score
    assert rank(after.tier) >= rank(before.tier)


@PROPERTY
@given(ledgers.filter(bool), st.data())
def test_retracting_an_incident_never_raises_the_score(
    ledger: list[IncidentFacts], data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(ledger) - 1))
    before = assess(ledger, NOW, POLICY)
    retracted = [*ledger]
    retracted[index] = replace(ledger[index], status="retracted")
    after = assess(retracted, NOW, POLICY)
    assert after.score <= before.score
    assert rank(after.tier) <= rank(before.tier)


@PROPERTY
@given(ledgers.filter(bool), st.data())
def test_disputing_an_incident_never_raises_the_score(
    ledger: list[IncidentFacts], data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(ledger) - 1))
    assume(ledger[index].status == "active")
    disputed = [*ledger]
    disputed[index] = replace(ledger[index], status="disputed")
    assert assess(disputed, NOW, POLICY).score <= assess(ledger, NOW, POLICY).score


@PROPERTY
@given(ledgers, st.integers(1, 3 * 365 * 86400))
def test_the_score_never_rises_as_time_passes(ledger: list[IncidentFacts], seconds: int) -> None:
    earlier = assess(ledger, NOW, POLICY)
    later = assess(ledger, NOW + timedelta(seconds=seconds), POLICY)
    assert later.score <= earlier.score
    assert rank(later.tier) <= rank(earlier.tier)
    assert later.raw_sum <= earlier.raw_sum


@PROPERTY
@given(st.lists(incidents(platforms=st.just(7)), min_size=1, max_size=25))
def test_one_platform_never_passes_the_cap_without_strong_confirmation(ledger: list[IncidentFacts]) -> None:
    strong = any(i.status == "active" and i.confirmation in POLICY.cap_exempt_confirmations for i in ledger)
    result = assess(ledger, NOW, POLICY)
    event(f"strong={strong} tier={result.tier}")
    if strong:
        assert "SINGLE_PLATFORM_CAP" not in result.reasons
        assert "STRONG_CONFIRMATION" in result.reasons
        return
    assert rank(result.tier) <= rank(POLICY.single_platform_max_tier)
    assert result.score < POLICY.tier("hold").min_score
    raw_tier = POLICY.tier_for_score(score_from_sum(result.raw_sum, POLICY)).name
    assert ("SINGLE_PLATFORM_CAP" in result.reasons) == (
        rank(raw_tier) > rank(POLICY.single_platform_max_tier)
    )


@PROPERTY
@given(
    st.lists(incidents(platforms=st.just(7), statuses=st.sampled_from(("active", "disputed"))), max_size=25),
    st.sampled_from(sorted(POLICY.confirmation)),
)
def test_a_disputed_strong_incident_does_not_lift_the_cap(
    ledger: list[IncidentFacts], confirmation: str
) -> None:
    """Only an *active* court/police or admission confirmation exempts a subject from the cap."""
    weak = [
        replace(i, confirmation="platform_review") if i.confirmation in POLICY.cap_exempt_confirmations else i
        for i in ledger
    ]
    ledger = [*weak, *(facts(platform_id=7, status="disputed", confirmation=confirmation) for _ in range(30))]
    result = assess(ledger, NOW, POLICY)
    assert rank(result.tier) <= rank(POLICY.single_platform_max_tier)


@PROPERTY
@given(ledgers)
def test_the_assessment_does_not_depend_on_incident_order(ledger: list[IncidentFacts]) -> None:
    forward = assess(ledger, NOW, POLICY)
    backward = assess(list(reversed(ledger)), NOW, POLICY)
    assert (forward.score, forward.tier, set(forward.reasons)) == (
        backward.score,
        backward.tier,
        set(backward.reasons),
    )


@PROPERTY
@given(st.lists(incidents(statuses=st.sampled_from(COUNTING)), min_size=1, max_size=12))
def test_review_at_is_when_decay_alone_drops_the_tier(ledger: list[IncidentFacts]) -> None:
    result = assess(ledger, NOW, POLICY)
    event(f"tier {result.tier}")
    if result.tier == "clear":
        assert result.review_at is None
        return
    assert result.review_at is not None
    assert result.review_at >= NOW
    assume(result.review_at - NOW > timedelta(minutes=2))  # an entry already on the threshold is due now
    little = timedelta(minutes=1)
    before = assess(ledger, result.review_at - little, POLICY)
    after = assess(ledger, result.review_at + little, POLICY)
    assert before.tier == result.tier
    assert rank(after.tier) == rank(result.tier) - 1


# -- formulas and examples ---------------------------------------------------------------------------
@given(st.floats(0, 10**9, allow_nan=False))
def test_amount_factor_is_the_documented_formula(yuan: float) -> None:
    factor = amount_factor(yuan, POLICY)
    assert factor == pytest.approx(min(3.0, 1.0 + math.log10(1.0 + yuan / 100.0)))
    assert 1.0 <= factor <= 3.0


@given(st.floats(0, 10**7, allow_nan=False), st.floats(0, 10**7, allow_nan=False))
def test_amount_factor_grows_with_the_amount(a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert amount_factor(low, POLICY) <= amount_factor(high, POLICY)


@pytest.mark.parametrize(
    ("yuan", "factor"),
    [(0, 1.0), (100, 1 + math.log10(2)), (450, 1 + math.log10(5.5)), (9_900, 3.0), (10**8, 3.0)],
)
def test_amount_factor_examples(yuan: float, factor: float) -> None:
    assert amount_factor(yuan, POLICY) == pytest.approx(factor)


@pytest.mark.parametrize(
    ("amount_minor", "currency", "yuan"),
    [
        (45_000, "CNY", 450.0),
        (10_000, "USD", 720.0),
        (10_000, "EUR", 780.0),
        (10_000, "HKD", 92.0),
        (1_000, "JPY", 48.0),
    ],
)
def test_currency_conversion_uses_the_rate_table(amount_minor: int, currency: str, yuan: float) -> None:
    assert amount_in_yuan(amount_minor, currency, POLICY) == pytest.approx(yuan)
    foreign = contribution(facts(amount_minor=amount_minor, currency=currency), NOW, POLICY)
    domestic = contribution(facts(amount_minor=round(yuan * 100), currency="CNY"), NOW, POLICY)
    assert foreign == pytest.approx(domestic)


def test_high_value_uses_the_converted_amount() -> None:
    # 500 USD = 3,600 yuan is above the 3,000 yuan threshold; 500 HKD = 460 yuan is not.
    assert "HIGH_VALUE" in assess([facts(amount_minor=50_000, currency="USD")], NOW, POLICY).reasons
    assert "HIGH_VALUE" not in assess([facts(amount_minor=50_000, currency="HKD")], NOW, POLICY).reasons


def test_one_incident_contribution_is_the_product_of_its_factors() -> None:
    incident = facts(
        category="false_damage_claim",
        confirmation="merchant_evidence",
        amount_minor=90_000,
        occurred_at=NOW - timedelta(days=90),
        platform_trust=0.6,
    )
    expected = 0.8 * 0.8 * (1 + math.log10(1 + 900 / 100)) * 0.5 ** (90 / 180) * 0.6
    assert contribution(incident, NOW, POLICY) == pytest.approx(expected)
    result = assess([incident], NOW, POLICY)
    assert result.raw_sum == pytest.approx(expected)
    assert result.score == round(100 * (1 - math.exp(-expected / POLICY.score_scale)))


def test_trust_is_clamped_to_the_policy_range() -> None:
    low = contribution(facts(platform_trust=0.0), NOW, POLICY)
    floor = contribution(facts(platform_trust=0.2), NOW, POLICY)
    high = contribution(facts(platform_trust=5.0), NOW, POLICY)
    full = contribution(facts(platform_trust=1.0), NOW, POLICY)
    assert (low, high) == (pytest.approx(floor), pytest.approx(full))


def test_decay_halves_an_incident_every_half_life() -> None:
    fresh = contribution(facts(occurred_at=NOW), NOW, POLICY)
    assert contribution(facts(occurred_at=NOW - timedelta(days=180)), NOW, POLICY) == pytest.approx(fresh / 2)
    assert contribution(facts(occurred_at=NOW - timedelta(days=360)), NOW, POLICY) == pytest.approx(fresh / 4)


@pytest.mark.parametrize(
    ("status", "weight"), [("active", 1.0), ("disputed", 0.5), ("retracted", 0.0), ("expired", 0.0)]
)
def test_status_weights(status: str, weight: float) -> None:
    active = contribution(facts(), NOW, POLICY)
    assert contribution(facts(status=status), NOW, POLICY) == pytest.approx(weight * active)


def test_a_disputed_incident_counts_half_and_is_named() -> None:
    active = assess([facts(), facts()], NOW, POLICY)
    one_disputed = assess([facts(), facts(status="disputed")], NOW, POLICY)
    assert one_disputed.raw_sum == pytest.approx(active.raw_sum * 0.75)
    assert one_disputed.score < active.score
    assert "DISPUTED_ENTRY_PRESENT" in one_disputed.reasons
    assert "DISPUTED_ENTRY_PRESENT" not in active.reasons


def test_retracted_and_expired_incidents_count_for_nothing() -> None:
    result = assess([facts(status="retracted"), facts(status="expired", platform_id=2)], NOW, POLICY)
    assert (result.score, result.tier, result.incidents, result.platforms, result.reasons) == (
        0,
        "clear",
        0,
        0,
        (),
    )
    assert result.review_at is None


@pytest.mark.parametrize(
    ("k", "factor"), [(0, 1.0), (1, 1.0), (2, 1.5), (3, 2.0), (4, 2.5), (5, 2.5), (9, 2.5)]
)
def test_corroboration_factor(k: int, factor: float) -> None:
    assert corroboration(k, POLICY) == pytest.approx(factor)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6])
def test_corroboration_multiplies_the_sum_of_distinct_platforms(k: int) -> None:
    ledger = [facts(platform_id=p) for p in range(1, k + 1)]
    single = contribution(facts(), NOW, POLICY)
    result = assess(ledger, NOW, POLICY)
    assert result.platforms == k
    assert result.raw_sum == pytest.approx(single * k * min(2.5, 1 + 0.5 * (k - 1)))
    assert ("MULTIPLE_PLATFORMS" in result.reasons) == (k >= 2)


def test_corroboration_counts_platforms_not_incidents() -> None:
    same = assess([facts(platform_id=1), facts(platform_id=1)], NOW, POLICY)
    two = assess([facts(platform_id=1), facts(platform_id=2)], NOW, POLICY)
    assert two.raw_sum == pytest.approx(same.raw_sum * 1.5)
    assert same.platforms == 1
    assert two.platforms == 2


def test_a_retracted_report_does_not_corroborate() -> None:
    result = assess([facts(platform_id=1), facts(platform_id=2, status="retracted")], NOW, POLICY)
    assert result.platforms == 1
    assert "MULTIPLE_PLATFORMS" not in result.reasons


def test_many_incidents_from_one_platform_stop_at_the_cap() -> None:
    ledger = [facts(amount_minor=500_000) for _ in range(10)]
    result = assess(ledger, NOW, POLICY)
    assert score_from_sum(result.raw_sum, POLICY) >= 80  # uncapped, this would be a hold
    cap = POLICY.tier(POLICY.single_platform_max_tier)
    above = next(t for t in reversed(POLICY.tiers) if t.min_score > cap.min_score)
    assert result.tier == cap.name
    assert result.score == above.min_score - 1
    assert "SINGLE_PLATFORM_CAP" in result.reasons
    assert "REPEATED_INCIDENTS" in result.reasons
    assert "HIGH_VALUE" in result.reasons


@pytest.mark.parametrize("confirmation", ["court_or_police", "consumer_admission"])
def test_strong_confirmation_lifts_the_single_platform_cap(confirmation: str) -> None:
    ledger = [facts(amount_minor=500_000) for _ in range(9)] + [facts(confirmation=confirmation)]
    result = assess(ledger, NOW, POLICY)
    assert result.tier == "hold"
    assert result.score >= 80
    assert "SINGLE_PLATFORM_CAP" not in result.reasons
    assert "STRONG_CONFIRMATION" in result.reasons


def test_a_second_platform_lifts_the_cap() -> None:
    ledger = [facts(amount_minor=500_000) for _ in range(10)] + [facts(platform_id=2)]
    result = assess(ledger, NOW, POLICY)
    assert result.tier == "hold"
    assert "SINGLE_PLATFORM_CAP" not in result.reasons
    assert "MULTIPLE_PLATFORMS" in result.reasons


def test_category_reasons_are_ranked_and_marked_recent() -> None:
    ledger = [
        facts(category="refund_only_abuse", occurred_at=NOW - timedelta(days=400)),
        facts(category="fabricated_evidence", occurred_at=NOW - timedelta(days=5)),
        facts(category="fabricated_evidence", occurred_at=NOW - timedelta(days=300)),
    ]
    result = assess(ledger, NOW, POLICY)
    assert result.reasons[:2] == ("FABRICATED_EVIDENCE_RECENT", "REFUND_ONLY_ABUSE")
    assert all(code in POLICY.reasons for code in result.reasons)


@pytest.mark.parametrize(
    ("score", "tier"),
    [
        (0, "clear"),
        (19, "clear"),
        (20, "review"),
        (49, "review"),
        (50, "return_required"),
        (79, "return_required"),
        (80, "hold"),
        (100, "hold"),
    ],
)
def test_tier_boundaries(score: int, tier: str) -> None:
    assert POLICY.tier_for_score(score).name == tier


def test_tier_restrictions_match_the_issue() -> None:
    assert POLICY.tier("clear").restrictions == ()
    assert POLICY.tier("review").restrictions == ("manual_review",)
    assert POLICY.tier("return_required").restrictions == ("no_refund_only", "require_return")
    assert set(POLICY.tier("hold").restrictions) == {
        "no_refund_only",
        "require_return",
        "no_auto_refund",
        "manual_review",
    }


@pytest.mark.parametrize("tier", ["review", "return_required", "hold"])
def test_review_at_examples(tier: str) -> None:
    """Grow a two-platform ledger (so no cap) until it reaches the tier; check just before and after."""
    small = facts(category="refund_only_abuse", amount_minor=0)
    for n in range(2, 30):
        ledger = [replace(small, platform_id=p % 2 + 1) for p in range(n)]
        result = assess(ledger, NOW, POLICY)
        if result.tier == tier:
            break
    else:
        pytest.fail(f"no ledger reaches {tier}")
    assert result.review_at is not None
    expected_days = POLICY.half_life_days * math.log2(
        result.raw_sum / (-POLICY.score_scale * math.log(1 - (POLICY.tier(tier).min_score - 0.5) / 100))
    )
    assert (result.review_at - NOW).total_seconds() / 86400 == pytest.approx(expected_days)
    assert assess(ledger, result.review_at - timedelta(seconds=30), POLICY).tier == tier
    assert rank(assess(ledger, result.review_at + timedelta(seconds=30), POLICY).tier) == rank(tier) - 1


def test_combine_tiers_picks_the_most_restrictive() -> None:
    assert combine_tiers(["review", "hold", "clear"], POLICY) == "hold"
    assert combine_tiers([], POLICY) == "clear"
