"""Combining cached subject scores into one refund-time decision. Pure: no I/O.

A lookup may name identifiers of several subjects (or none). The decision takes the most restrictive
tier and the union of reasons; device identifiers are a weak signal that never merges subjects and on
their own raise the tier at most to the policy's device tier.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ledger.domain import chain
from ledger.domain.policy import Policy

SATISFIED_BY_RETURN = frozenset({"no_refund_only", "require_return"})


@dataclass(frozen=True)
class SubjectView:
    subject_id: int
    score: int
    tier: str
    reasons: tuple[str, ...]
    incidents: int
    platforms: int
    last_incident_at: str | None
    policy_version: str
    computed_at: str


@dataclass(frozen=True)
class Decision:
    tier: str
    restrictions: tuple[str, ...]
    score: int
    reasons: tuple[str, ...]
    incidents: int
    platforms: int
    last_incident_at: str | None
    policy_version: str
    computed_at: str | None


def decide(
    subjects: Sequence[SubjectView],
    device_subjects: Sequence[int],
    kind: str | None,
    policy: Policy,
    evidence_matched: bool = False,
    evidence_findings: Sequence[str] = (),
) -> Decision:
    """The decision for one lookup. `evidence_findings` are the claim photos' own reason codes
    (EVIDENCE_AI_LABELLED, ...): each raises the tier to the policy's `evidence.min_tiers` entry for it
    (the reuse tier when the policy names none), like a reuse match, even without any record."""
    unique = {s.subject_id: s for s in subjects}
    views = sorted(unique.values(), key=lambda s: (-policy.rank(s.tier), -s.score, s.subject_id))
    clear = policy.tiers[-1].name
    tier = views[0].tier if views else clear
    reasons: list[str] = []
    for view in views:
        reasons.extend(r for r in view.reasons if r not in reasons)
    if len(views) > 1:
        reasons.append("MULTIPLE_SUBJECTS_MATCHED")
    if any(n >= policy.device_min_subjects for n in device_subjects):
        reasons.append("DEVICE_LINKED")
        if not views and policy.rank(tier) < policy.rank(policy.device_max_tier):
            tier = policy.device_max_tier
    if evidence_matched:
        reasons.append("EVIDENCE_REUSED")
        if policy.rank(tier) < policy.rank(policy.evidence_min_tier):
            tier = policy.evidence_min_tier
    for code in dict.fromkeys(evidence_findings):
        reasons.append(code)
        floor = policy.evidence_min_tiers.get(code, policy.evidence_min_tier)
        if policy.rank(tier) < policy.rank(floor):
            tier = floor
    restrictions = policy.tier(tier).restrictions
    if kind == "return_and_refund":
        restrictions = tuple(r for r in restrictions if r not in SATISFIED_BY_RETURN)
    lasts = [v.last_incident_at for v in views if v.last_incident_at]
    return Decision(
        tier=tier,
        restrictions=restrictions,
        score=max((v.score for v in views), default=0),
        reasons=tuple(reasons),
        incidents=sum(v.incidents for v in views),
        platforms=max((v.platforms for v in views), default=0),
        last_incident_at=max(lasts) if lasts else None,
        policy_version=views[0].policy_version if views else policy.version,
        computed_at=min(v.computed_at for v in views) if views else None,
    )


def inquiry_leaf(
    lookup_id: str,
    platform_id: int,
    key_id: str,
    purpose: str,
    tokens_commitment: str,
    tier: str,
    reasons: Sequence[str],
    at: str,
    operator_ref: str | None,
    response: bytes,
) -> bytes:
    """The inquiry log's leaf for one lookup record: canonical JSON of the parts never erased, the salted
    commitment to its tokens and refund reference (never the tokens), and the SHA-256 of the answer's
    bytes as sent (`response`: the JSON text the client got, which the trail stores). Hashed as an RFC 9162
    leaf (ledger/domain/merkle.py `leaf_hash`); `ledger verify` re-derives it from the stored row."""
    return chain.canonical(
        {
            "at": at,
            "id": lookup_id,
            "key_id": key_id,
            "operator_ref": operator_ref,
            "platform_id": platform_id,
            "purpose": purpose,
            "reasons": list(reasons),
            "response": hashlib.sha256(response).hexdigest(),
            "tier": tier,
            "tokens": tokens_commitment,
        }
    )


def record_leaf(record: Mapping[str, Any]) -> bytes:
    """`inquiry_leaf` of a stored lookup record (the columns of `lookups`, the answer as stored)."""
    return inquiry_leaf(
        str(record["id"]),
        record["platform_id"],
        record["key_id"],
        record["purpose"],
        record["tokens_commitment"],
        record["tier"],
        record["reasons"],
        chain.format_time(record["at"]),
        record["operator_ref"],
        response_text(record["response"]),
    )


def response_text(response: object) -> bytes:
    """The bytes of a lookup's answer as the service sends it: sorted keys, no whitespace, UTF-8 (not
    \\u escapes). The trail stores the answer as jsonb, which keeps neither key order nor spacing; encoding
    the stored value this way gives back the bytes sent, so the leaf's digest can be re-derived."""
    return json.dumps(response, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def audit_row_hash(
    lookup_id: str,
    platform_id: int,
    key_id: str,
    purpose: str,
    tokens_commitment: str,
    tier: str,
    reasons: Sequence[str],
    at: str,
    operator_ref: str | None = None,
) -> str:
    """The per-row digest the trail kept before the inquiry log; `ledger db init` checks it once on an
    older database before it turns the row into a leaf (ledger/storage/upgrade.py). The operator reference
    is part of it only when a lookup carried one."""
    body: dict[str, object] = {
        "id": lookup_id,
        "platform_id": platform_id,
        "key_id": key_id,
        "purpose": purpose,
        "tokens": tokens_commitment,
        "tier": tier,
        "reasons": list(reasons),
        "at": at,
    }
    if operator_ref is not None:
        body["operator_ref"] = operator_ref
    return hashlib.sha256(chain.canonical(body)).hexdigest()


def lookup_commitment(salt: bytes, tokens: Sequence[str], refund_ref: str | None) -> str:
    return chain.identifiers_commitment(salt + b"\0" + (refund_ref or "").encode(), tokens)
