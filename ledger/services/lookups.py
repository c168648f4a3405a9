"""Refund-time lookups: the hot path.

One Redis round trip fetches the key's quota, every token's cached decision and pending flags; no scoring
and no scan of incidents happen here. If Redis fails, an indexed PostgreSQL join over `risk_scores`
gives the same decision, slower. The audit record is committed before the answer is returned, in a
commit shared with the process's concurrent lookups (docs/audit.md says why this path was chosen over a
Redis stream), together with its pending leaf in the inquiry log. Evidence hashes, when a request has
any, are matched against the process's in-memory index (docs/evidence.md); without evidence nothing of
that runs.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from ledger import metrics
from ledger.domain import chain, merkle
from ledger.domain.decisions import (
    Decision,
    SubjectView,
    decide,
    inquiry_leaf,
    lookup_commitment,
    response_text,
)
from ledger.domain.notices import adverse_action
from ledger.errors import CacheUnavailable, InvalidInput, LedgerError, NotFound, QuotaExceeded
from ledger.services import evidence
from ledger.services.identifiers import tokenize_all
from ledger.services.platforms import Principal
from ledger.services.runtime import Runtime
from ledger.storage import audit, scores, subjects
from ledger.storage import incidents as incident_store
from ledger.storage.decision_cache import CachedDecision, DeviceSignal
from ledger.storage.quota import Quota

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    purpose: str
    refund_ref: str | None
    kind: str | None
    tokens: list[tuple[str, str]]
    evidence: tuple[evidence.Submitted, ...] = ()
    operator_ref: str | None = None  # the agent behind a manual review (征信业管理条例 Art. 22)
    delivered_at: datetime | None = None  # the claim's delivery: a photo taken before it is a finding


@dataclass(frozen=True)
class Outcome:
    """One lookup's outcome: an answer, or refused with `error` (nothing recorded). The API picks the
    status."""

    body: dict[str, Any]
    error: LedgerError | None = None
    quota: Quota | None = None  # the key's bucket after this call, for RateLimit headers
    body_json: str = ""  # set on every answer: `body` as JSON text, as the audit trail records it


def prepare(rt: Runtime, request: Mapping[str, Any]) -> Prepared:
    refund = request.get("refund") or {}
    return Prepared(
        purpose=request["purpose"],
        refund_ref=refund.get("reference"),
        kind=refund.get("kind"),
        tokens=tokenize_all(request["identifiers"], rt.identity_key, token_key=rt.token_key),
        evidence=evidence.submitted(request),
        operator_ref=request.get("operator_ref"),
        delivered_at=refund.get("delivered_at"),
    )


def _from_postgres(rt: Runtime, tokens: Sequence[str]) -> tuple[dict[str, CachedDecision], set[str]]:
    """The fallback: the same entries the cache would hold, read from risk_scores."""
    with rt.db.transaction() as conn:
        entries: dict[str, CachedDecision] = {
            r["token"]: scores.cached_decision(r) for r in scores.for_tokens(conn, tokens)
        }
        for token, count in subjects.device_subject_counts(conn, tokens).items():
            if count and token not in entries:
                entries[token] = DeviceSignal(count)
        pending = incident_store.pending_tokens(conn, tokens)
    return entries, pending


def response_body(rt: Runtime, lookup_id: UUID, decision: Decision, stale: bool) -> dict[str, Any]:
    texts = rt.policy.reasons
    return {
        "lookup_id": str(lookup_id),
        "decision": {
            "tier": decision.tier,
            "restrictions": list(decision.restrictions),
            "score": decision.score,
            "reasons": [
                {
                    "code": code,
                    "text_zh": texts.get(code, (code, code))[0],
                    "text_en": texts.get(code, (code, code))[1],
                }
                for code in decision.reasons
            ],
        },
        "summary": {
            "incidents": decision.incidents,
            "platforms": decision.platforms,
            "last_incident_at": decision.last_incident_at,
        },
        "policy_version": decision.policy_version,
        "computed_at": decision.computed_at,
        "stale": stale,
        "consumer_statement": "CONSUMER_STATEMENT_PRESENT" in decision.reasons,
        "adverse_action": adverse_action(
            decision.tier,
            rt.settings.dispute_days,
            photo_check=any(code in rt.policy.evidence_min_tiers for code in decision.reasons),
        )
        if decision.restrictions
        else None,
    }


def lookup_many(
    rt: Runtime, principal: Principal, requests: Sequence[Mapping[str, Any] | LedgerError]
) -> list[Outcome]:
    """Answer lookups; each answered one gets a durable audit record before this returns."""
    outcomes: list[Outcome | None] = [None] * len(requests)
    prepared: dict[int, Prepared] = {}
    for index, request in enumerate(requests):
        if isinstance(request, LedgerError):
            outcomes[index] = Outcome({}, request)
            continue
        try:
            prepared[index] = prepare(rt, request)
        except InvalidInput as exc:
            outcomes[index] = Outcome({}, exc)
    if not prepared:
        return [o for o in outcomes if o is not None]

    all_tokens = sorted({tok for p in prepared.values() for _, tok in p.tokens})
    try:
        cached = rt.cache.lookup(
            all_tokens,
            quota_key=str(principal.platform_id),
            rate=principal.rate_per_second,
            burst=principal.burst,
            # One unit per identifier, not per request: the bucket bounds how many identifiers a platform
            # can test for presence in the ledger (docs/operations.md, "The existence oracle").
            cost=sum(max(1, len(p.tokens)) for p in prepared.values()),
        )
        entries, pending, quota = cached.entries, cached.pending, cached.quota
        if not cached.quota.allowed:
            metrics.RATE_LIMITED.inc()
            raise QuotaExceeded(
                "rate limit exceeded for this platform", cached.quota.retry_after, cached.quota.limit
            )
    except CacheUnavailable:
        entries, pending = _from_postgres(rt, all_tokens)
        quota = None  # quotas live in Redis; while it is down they are not enforced
        metrics.FALLBACKS.inc()

    now = datetime.now(UTC)
    records = []
    for index, p in prepared.items():
        found = [entries[tok] for _, tok in p.tokens if tok in entries]
        views = [e for e in found if isinstance(e, SubjectView)]
        devices = [e.subjects for e in found if isinstance(e, DeviceSignal)]
        checked = (
            evidence.check(rt, principal.platform_id, p.evidence, p.delivered_at) if p.evidence else None
        )
        decision = decide(
            views,
            devices,
            p.kind,
            rt.policy,
            checked is not None and checked.reused,
            checked.findings if checked is not None else (),
        )
        matches = checked.matches if checked is not None else []
        stale = any(tok in pending for _, tok in p.tokens) or any(
            v.policy_version != rt.policy.version for v in views
        )
        lookup_id = uuid.uuid4()
        body = response_body(rt, lookup_id, decision, stale)
        body["evidence_matches"] = matches
        # The answer's bytes as sent (UTF-8, so the reasons' Chinese text is readable), encoded by the one
        # function that also re-derives them from the stored answer, so the inquiry leaf's digest matches.
        response = response_text(body)
        body_json = response.decode()
        tokens = [tok for _, tok in p.tokens]
        salt = os.urandom(16)
        commitment = lookup_commitment(salt, tokens, p.refund_ref)
        records.append(
            {
                "id": lookup_id,
                "platform_id": principal.platform_id,
                "key_id": principal.key_id,
                "purpose": p.purpose,
                "refund_ref": p.refund_ref,
                "operator_ref": p.operator_ref,
                "tokens": tokens,
                "salt": salt,
                "tokens_commitment": commitment,
                "tier": decision.tier,
                "reasons": list(decision.reasons),
                "response": body_json,
                "at": now,
                "leaf_hash": merkle.leaf_hash(
                    inquiry_leaf(
                        str(lookup_id),
                        principal.platform_id,
                        principal.key_id,
                        p.purpose,
                        commitment,
                        decision.tier,
                        decision.reasons,
                        chain.format_time(now),
                        p.operator_ref,
                        response,
                    )
                ),
            }
        )
        outcomes[index] = Outcome(body, quota=quota, body_json=body_json)
    # Durable before the answer: one autocommit INSERT shared with the process's concurrent lookups
    # (group commit, docs/audit.md).
    rt.audit.write(records)
    # Counted only once recorded: a lookup whose audit record failed was never answered.
    for record in records:
        metrics.count_lookup(str(record["tier"]), str(record["purpose"]), bool(record["refund_ref"]))
    return [o for o in outcomes if o is not None]


def get(rt: Runtime, principal: Principal, lookup_id: UUID) -> dict[str, Any]:
    with rt.db.transaction() as conn:
        row = audit.get_for_platform(conn, lookup_id, principal.platform_id)
    if row is None:
        raise NotFound("no such lookup")
    return dict(row["response"])


def fishing_report(rt: Runtime, days: int = 30) -> list[dict[str, Any]]:
    """Per platform, over every purpose: lookups, and those naming no refund (purpose limitation).

    Every purpose counts: a platform that fishes under `account_review` instead of `refund_review` shows
    up the same way, and `by_purpose` shows where its lookups went. Most unreferenced first."""
    with rt.db.transaction() as conn:
        rows = audit.fishing_report(conn, datetime.now(UTC) - timedelta(days=days))
    platforms: dict[str, dict[str, Any]] = {}
    for r in rows:
        entry = platforms.setdefault(
            r["slug"], {"slug": r["slug"], "lookups": 0, "without_reference": 0, "by_purpose": {}}
        )
        entry["lookups"] += r["lookups"]
        entry["without_reference"] += r["without_reference"]
        entry["by_purpose"][r["purpose"]] = {
            "lookups": r["lookups"],
            "without_reference": r["without_reference"],
        }
    report = [
        {
            **e,
            "share_without_reference": round(e["without_reference"] / e["lookups"], 4)
            if e["lookups"]
            else 0.0,
        }
        for e in platforms.values()
    ]
    return sorted(report, key=lambda e: (-e["without_reference"], e["slug"]))
