"""The scoring policy: every number the model uses, loaded from a versioned TOML file.

Keeping parameters out of code means the operator can review, publish and version them, and every
stored score can say which policy produced it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

DEFAULT_POLICY_PATH = Path(__file__).resolve().parent.parent / "policy" / "default.toml"


@dataclass(frozen=True)
class Tier:
    name: str
    min_score: int
    restrictions: tuple[str, ...]


@dataclass(frozen=True)
class Currency:
    exponent: int
    rate_to_cny: float


@dataclass(frozen=True)
class Policy:
    version: str
    severity: dict[str, float]
    confirmation: dict[str, float]
    amount_divisor_yuan: float
    amount_cap: float
    high_value_yuan: float
    half_life_days: float
    recent_days: float
    trust_min: float
    trust_max: float
    trust_default: float
    trust_prior_a: float
    trust_prior_b: float
    trust_window_days: int
    status_weight: dict[str, float]
    corroboration_step: float
    corroboration_cap: float
    score_scale: float
    max_category_reasons: int
    repeated_incidents: int
    tiers: tuple[Tier, ...]  # most severe first
    single_platform_max_tier: str
    cap_exempt_confirmations: frozenset[str]
    device_min_subjects: int
    device_max_tier: str
    evidence_threshold: int
    evidence_min_quality: int
    evidence_min_tier: str
    evidence_min_tiers: dict[str, str]  # claim-photo finding (reason code) -> the tier it raises to
    shipping_reference_days: int
    currencies: dict[str, Currency]
    reasons: dict[str, tuple[str, str]]  # code -> (zh, en)

    def tier(self, name: str) -> Tier:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise KeyError(name)

    def tier_for_score(self, score: int) -> Tier:
        for tier in self.tiers:
            if score >= tier.min_score:
                return tier
        return self.tiers[-1]

    def rank(self, tier_name: str) -> int:
        """0 for the least severe tier; higher is more restrictive."""
        names = [t.name for t in self.tiers]
        return len(names) - 1 - names.index(tier_name)


def parse_policy(raw: dict[str, Any]) -> Policy:
    tiers = tuple(
        sorted(
            (Tier(t["name"], int(t["min_score"]), tuple(t["restrictions"])) for t in raw["tiers"]),
            key=lambda t: -t.min_score,
        )
    )
    if not tiers or tiers[-1].min_score != 0:
        raise ValueError("policy tiers must include one with min_score = 0")
    return Policy(
        version=str(raw["version"]),
        severity={k: float(v) for k, v in raw["severity"].items()},
        confirmation={k: float(v) for k, v in raw["confirmation"].items()},
        amount_divisor_yuan=float(raw["amount"]["divisor_yuan"]),
        amount_cap=float(raw["amount"]["cap"]),
        high_value_yuan=float(raw["amount"]["high_value_yuan"]),
        half_life_days=float(raw["decay"]["half_life_days"]),
        recent_days=float(raw["decay"]["recent_days"]),
        trust_min=float(raw["trust"]["minimum"]),
        trust_max=float(raw["trust"]["maximum"]),
        trust_default=float(raw["trust"]["default"]),
        trust_prior_a=float(raw["trust"]["prior_a"]),
        trust_prior_b=float(raw["trust"]["prior_b"]),
        trust_window_days=int(raw["trust"]["window_days"]),
        status_weight={k: float(v) for k, v in raw["status"].items()},
        corroboration_step=float(raw["corroboration"]["step"]),
        corroboration_cap=float(raw["corroboration"]["cap"]),
        score_scale=float(raw["score"]["scale"]),
        max_category_reasons=int(raw["score"]["max_category_reasons"]),
        repeated_incidents=int(raw["score"]["repeated_incidents"]),
        tiers=tiers,
        single_platform_max_tier=str(raw["fairness"]["single_platform_max_tier"]),
        cap_exempt_confirmations=frozenset(raw["fairness"]["cap_exempt_confirmations"]),
        device_min_subjects=int(raw["devices"]["min_subjects"]),
        device_max_tier=str(raw["devices"]["max_tier"]),
        evidence_threshold=int(raw["evidence"]["match_threshold"]),
        evidence_min_quality=int(raw["evidence"]["min_quality"]),
        evidence_min_tier=str(raw["evidence"]["min_tier"]),
        evidence_min_tiers={k: str(v) for k, v in raw["evidence"].get("min_tiers", {}).items()},
        shipping_reference_days=int(raw["evidence"].get("shipping_reference_days", 180)),
        currencies={
            code: Currency(int(c["exponent"]), float(c["rate_to_cny"]))
            for code, c in raw["currencies"].items()
        },
        reasons={code: (str(r["zh"]), str(r["en"])) for code, r in raw["reasons"].items()},
    )


@lru_cache(maxsize=8)
def load_policy(path: Path | None = None) -> Policy:
    with (path or DEFAULT_POLICY_PATH).open("rb") as handle:
        return parse_policy(tomllib.load(handle))
