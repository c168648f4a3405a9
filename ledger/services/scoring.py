"""Scoring: recompute subjects' scores from their incidents and write them to PostgreSQL, then Redis.

Every recompute is idempotent and safe to run twice or out of order: a score is written only if computed
from a ledger position at least as new as the stored one, in PostgreSQL (`scores.upsert_many`) and in
Redis (the decision cache's compare-and-set, ledger/storage/decision_cache.py). The model itself is the
pure `ledger/domain/scoring.py`; this module feeds it and stores what it says.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from ledger.domain.decisions import SubjectView
from ledger.domain.scoring import Assessment, IncidentFacts, assess
from ledger.errors import Contention, NotFound
from ledger.services import webhooks
from ledger.services.linking import link_pending
from ledger.services.runtime import Runtime
from ledger.storage import events as event_store
from ledger.storage import incidents as incident_store
from ledger.storage import scores, subjects
from ledger.storage.decision_cache import CachedDecision, DeviceSignal, subject_view

CHUNK = 1000


def _facts(row: dict[str, Any]) -> IncidentFacts:
    return IncidentFacts(
        platform_id=int(row["platform_id"]),
        category=row["category"],
        confirmation=row["confirmation"],
        amount_minor=int(row["amount_minor"]),
        currency=row["currency"].strip(),
        occurred_at=row["occurred_at"],
        status=row["status"],
        platform_trust=float(row["effective_trust"]),
        has_statement=bool(row["has_statement"]),
    )


def cached_decision(subject_id: int, a: Assessment, policy_version: str, at: datetime) -> SubjectView:
    """The decision cached under each of the subject's tokens."""
    return subject_view(
        subject_id,
        a.score,
        a.tier,
        a.reasons,
        a.incidents,
        a.platforms,
        a.last_incident_at,
        policy_version,
        at,
    )


def rescore(rt: Runtime, subject_ids: Iterable[int], now: datetime | None = None) -> int:
    """Recompute the given subjects from their incidents; write PostgreSQL, then Redis. Returns how many."""
    ids = sorted(set(subject_ids))
    total = 0
    for start in range(0, len(ids), CHUNK):
        total += _rescore_chunk(rt, ids[start : start + CHUNK], now)
    return total


def _rescore_chunk(rt: Runtime, ids: list[int], now: datetime | None, attempts: int = 5) -> int:
    for attempt in range(attempts):
        try:
            return _rescore_once(rt, ids, now)
        except Contention:
            # Another recompute of the same subjects committed first; ours re-reads a newer snapshot.
            if attempt == attempts - 1:
                raise
            time.sleep(0.01 * (attempt + 1) + random.random() * 0.02)
    return 0


def _rescore_once(rt: Runtime, ids: list[int], now: datetime | None) -> int:
    policy = rt.policy
    at = now or datetime.now(UTC)
    with rt.db.transaction(isolation="REPEATABLE READ") as conn:
        seq = event_store.head_seq(conn)
        live = subjects.share_live(conn, ids)  # a concurrent merge makes this raise Contention
        before = {int(r["subject_id"]): r["tier"] for r in scores.for_subjects(conn, list(live))}
        by_subject: dict[int, list[IncidentFacts]] = {s: [] for s in live}
        for row in incident_store.facts_for_subjects(conn, list(live)):
            by_subject[int(row["subject_id"])].append(_facts(row))
        assessments = {s: assess(facts, at, policy) for s, facts in by_subject.items()}
        written = scores.upsert_many(
            conn,
            [
                {
                    "subject_id": s,
                    "score": a.score,
                    "tier": a.tier,
                    "restrictions": list(a.restrictions),
                    "reasons": list(a.reasons),
                    "incidents": a.incidents,
                    "platforms": a.platforms,
                    "last_incident_at": a.last_incident_at,
                    "policy_version": policy.version,
                    "computed_from_seq": seq,
                    "computed_at": at,
                    "review_at": a.review_at,
                }
                for s, a in assessments.items()
            ],
        )
        tokens = subjects.strong_tokens(conn, list(written))
        for s in sorted(written):
            # FCRA §611(d): a consumer restricted before and clear now; tell the recent recipients.
            if assessments[s].tier == "clear" and before.get(s, "clear") != "clear":
                webhooks.emit_cleared(conn, tokens.get(s, []), at)
        devices = subjects.device_subject_counts(conn, subjects.device_tokens(conn, list(written)))
    by_token: dict[str, CachedDecision] = {}
    for s in written:
        entry = cached_decision(s, assessments[s], policy.version, at)
        for token in tokens.get(s, []):
            by_token[token] = entry
    for token, count in devices.items():
        by_token[token] = DeviceSignal(count, policy.version, at.isoformat())
    rt.cache.put_decisions(seq, by_token)
    return len(written)


def rescore_token(rt: Runtime, token: str) -> int:
    """Recompute the subject holding this identity token (`ledger rescore --subject TOKEN`)."""
    with rt.db.transaction() as conn:
        found = subjects.subjects_of_tokens(conn, [token])
    if not found:
        raise NotFound("no subject holds that token")
    return rescore(rt, found.values())


def rescore_platform(rt: Runtime, platform_id: int) -> int:
    total, after = 0, 0
    while True:
        with rt.db.transaction() as conn:
            ids = incident_store.subjects_reported_by(conn, platform_id, after, CHUNK)
        if not ids:
            return total
        total += rescore(rt, ids)
        after = ids[-1]


def rescore_all(rt: Runtime, chunk: int = CHUNK) -> int:
    """Recompute every subject, in chunks. The CLI twin of a policy change."""
    link_pending(rt, limit=10**9)
    total, after = 0, 0
    while True:
        with rt.db.transaction() as conn:
            ids = subjects.all_subject_ids(conn, after, chunk)
        if not ids:
            return total
        total += rescore(rt, ids)
        after = ids[-1]


def rescore_due(rt: Runtime, now: datetime | None = None, limit: int = 50_000) -> int:
    """The daily decay job: only subjects whose tier can drop by decay alone by now."""
    at = now or datetime.now(UTC)
    with rt.db.transaction() as conn:
        ids = scores.due_for_review(conn, at, limit)
    return rescore(rt, ids, now=at)


def rescore_stale_policy(rt: Runtime, max_chunks: int = 20) -> int:
    """After a policy version change, recompute subjects scored under another version, a few chunks a run."""
    total, after = 0, 0
    for _ in range(max_chunks):
        with rt.db.transaction() as conn:
            ids = scores.stale_policy(conn, rt.policy.version, after, CHUNK)
        if not ids:
            break
        total += rescore(rt, ids)
        after = ids[-1]
    return total
