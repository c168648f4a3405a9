"""The risk model: a pure function from a subject's incidents to a score, tier, restrictions and reasons.

It has no I/O so it can be property-tested and reasoned about alone (see tests/unit). Its guarantees:
the score stays in 0..100, adding an incident never lowers it, retracting one never raises it, it
never rises as time passes, and one platform alone cannot push a consumer past the fairness cap.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ledger.domain.policy import Policy

COUNTING_STATUSES = ("active", "disputed")


@dataclass(frozen=True)
class IncidentFacts:
    """What the model needs to know of one incident; nothing that identifies a person."""

    platform_id: int
    category: str
    confirmation: str
    amount_minor: int
    currency: str
    occurred_at: datetime
    status: str = "active"
    platform_trust: float = 1.0
    has_statement: bool = False


@dataclass(frozen=True)
class Assessment:
    score: int
    tier: str
    restrictions: tuple[str, ...]
    reasons: tuple[str, ...]
    incidents: int
    platforms: int
    last_incident_at: datetime | None
    raw_sum: float = 0.0
    # When the tier can next drop through decay alone; the daily decay job rescans only these subjects.
    review_at: datetime | None = None
    contributions: tuple[float, ...] = field(default=(), compare=False)


def amount_in_yuan(amount_minor: int, currency: str, policy: Policy) -> float:
    spec = policy.currencies[currency]
    return amount_minor / (10**spec.exponent) * spec.rate_to_cny


def amount_factor(yuan: float, policy: Policy) -> float:
    return min(policy.amount_cap, 1.0 + math.log10(1.0 + max(0.0, yuan) / policy.amount_divisor_yuan))


def decay(age_days: float, policy: Policy) -> float:
    return 0.5 ** (max(0.0, age_days) / policy.half_life_days)


def clamp_trust(trust: float, policy: Policy) -> float:
    return min(policy.trust_max, max(policy.trust_min, trust))


def contribution(incident: IncidentFacts, now: datetime, policy: Policy) -> float:
    weight = policy.status_weight.get(incident.status, 0.0)
    if weight == 0.0:
        return 0.0
    age_days = (now - incident.occurred_at).total_seconds() / 86400.0
    return (
        policy.severity[incident.category]
        * policy.confirmation[incident.confirmation]
        * amount_factor(amount_in_yuan(incident.amount_minor, incident.currency, policy), policy)
        * decay(age_days, policy)
        * clamp_trust(incident.platform_trust, policy)
        * weight
    )


def corroboration(platforms: int, policy: Policy) -> float:
    if platforms <= 1:
        return 1.0
    return min(policy.corroboration_cap, 1.0 + policy.corroboration_step * (platforms - 1))


def score_from_sum(total: float, policy: Policy) -> int:
    return round(100.0 * (1.0 - math.exp(-max(0.0, total) / policy.score_scale)))


def _sum_for_score(score: int, policy: Policy) -> float:
    """The smallest raw sum whose rounded score reaches `score`."""
    fraction = (score - 0.5) / 100.0
    return -policy.score_scale * math.log(1.0 - fraction)


def assess(incidents: Sequence[IncidentFacts], now: datetime, policy: Policy) -> Assessment:
    counting = [i for i in incidents if i.status in COUNTING_STATUSES]
    contributions = [contribution(i, now, policy) for i in counting]
    platforms = {i.platform_id for i in counting}
    k = len(platforms)
    raw_sum = sum(contributions) * corroboration(k, policy)
    raw_score = score_from_sum(raw_sum, policy)
    tier = policy.tier_for_score(raw_score)
    score = raw_score

    reasons: list[str] = []
    by_category: dict[str, float] = defaultdict(float)
    latest: dict[str, datetime] = {}
    for incident, part in zip(counting, contributions, strict=True):
        by_category[incident.category] += part
        if incident.category not in latest or incident.occurred_at > latest[incident.category]:
            latest[incident.category] = incident.occurred_at
    recent = timedelta(days=policy.recent_days)
    ranked = sorted(by_category.items(), key=lambda item: (-item[1], item[0]))
    for category, _ in ranked[: policy.max_category_reasons]:
        code = category.upper()
        reasons.append(code + "_RECENT" if now - latest[category] <= recent else code)

    strong = any(i.status == "active" and i.confirmation in policy.cap_exempt_confirmations for i in counting)
    cap = policy.tier(policy.single_platform_max_tier)
    if k == 1 and not strong and policy.rank(tier.name) > policy.rank(cap.name):
        tier = cap
        above = [t for t in policy.tiers if policy.rank(t.name) == policy.rank(cap.name) + 1]
        score = min(score, above[0].min_score - 1) if above else score
        reasons.append("SINGLE_PLATFORM_CAP")
    if k >= 2:
        reasons.append("MULTIPLE_PLATFORMS")
    if strong:
        reasons.append("STRONG_CONFIRMATION")
    if any(amount_in_yuan(i.amount_minor, i.currency, policy) >= policy.high_value_yuan for i in counting):
        reasons.append("HIGH_VALUE")
    if len(counting) >= policy.repeated_incidents:
        reasons.append("REPEATED_INCIDENTS")
    if any(i.status == "disputed" for i in counting):
        reasons.append("DISPUTED_ENTRY_PRESENT")
    if any(i.has_statement for i in counting):
        reasons.append("CONSUMER_STATEMENT_PRESENT")

    review_at = None
    if tier.min_score > 0 and raw_sum > 0:
        # Every contribution decays at the same rate, so the sum does too: solve for the crossing time.
        threshold = _sum_for_score(tier.min_score, policy)
        days = policy.half_life_days * math.log2(raw_sum / threshold) if raw_sum > threshold else 0.0
        review_at = now + timedelta(days=days)

    return Assessment(
        score=score,
        tier=tier.name,
        restrictions=tier.restrictions,
        reasons=tuple(reasons) if counting else (),
        incidents=len(counting),
        platforms=k,
        last_incident_at=max((i.occurred_at for i in counting), default=None),
        raw_sum=raw_sum,
        review_at=review_at,
        contributions=tuple(contributions),
    )


def combine_tiers(tiers: Sequence[str], policy: Policy) -> str:
    """The most restrictive of several tiers (used when a lookup matches several subjects)."""
    return max(tiers, key=policy.rank, default=policy.tiers[-1].name)
