"""Scoring jobs: link incidents into subjects, recompute scores, refresh the Redis cache.

Every job is idempotent and safe to run twice or out of order:
- linking only touches incidents whose subject is still unknown, under an advisory lock;
- a score is written only if computed from a ledger position at least as new as the stored one, in
  PostgreSQL (`scores.upsert_many`) and in Redis (a compare-and-set script);
- an outbox row is marked done only after both writes succeeded, so a killed worker or a dead Redis
  leaves it pending for the sweep.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from ledger.domain.decisions import SubjectView
from ledger.domain.scoring import Assessment, IncidentFacts, assess
from ledger.errors import Contention, NotFound
from ledger.identity import STRONG_TYPES
from ledger.services import webhooks
from ledger.services.runtime import Runtime
from ledger.storage import events as event_store
from ledger.storage import incidents as incident_store
from ledger.storage import outbox, scores, subjects
from ledger.storage.cache import CacheUnavailable
from ledger.storage.decision_cache import CachedDecision, DeviceSignal, subject_view
from ledger.storage.queue import PROCESS_OUTBOX

log = logging.getLogger(__name__)

CHUNK = 1000


def link_incidents(rt: Runtime, incident_ids: Sequence[UUID]) -> set[int]:
    """Give every incident a subject, merging subjects its strong identifiers connect. Returns the roots."""
    with rt.db.transaction() as conn:
        subjects.lock_linking(conn)
        rows = incident_store.subjects_of(conn, incident_ids)
        unlinked = [r["id"] for r in rows if r["subject_id"] is None]
        tokens_by_incident: dict[UUID, list[tuple[str, str]]] = {}
        for t in incident_store.tokens_of(conn, unlinked):
            if t["id_type"] in STRONG_TYPES:
                tokens_by_incident.setdefault(t["incident_id"], []).append((t["token"], t["id_type"]))
        for incident_id in unlinked:
            pairs = tokens_by_incident.get(incident_id, [])
            known = subjects.subjects_of_tokens(conn, [p[0] for p in pairs]) if pairs else {}
            found = sorted(set(known.values()))
            if not found:
                root = subjects.new_subject(conn)
            elif len(found) == 1:
                root = found[0]
            else:
                size = subjects.sizes(conn, found)
                root = max(found, key=lambda s: (size.get(s, 0), -s))
                subjects.merge(conn, root, [s for s in found if s != root])
            subjects.link_tokens(conn, root, pairs)
            incident_store.set_subject(conn, [incident_id], root)
        return incident_store.subject_ids_of(conn, incident_ids)


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


def process_outbox(rt: Runtime, outbox_id: int) -> str:
    """The body of the `ledger.process_outbox` task. Safe to run any number of times."""
    with rt.db.transaction() as conn:
        row = outbox.get(conn, outbox_id)
    if row is None:
        return "missing"
    if row["done_at"] is not None:
        return "already-done"
    _apply(rt, [row])
    return "done"


def process_outbox_batch(rt: Runtime, outbox_ids: Sequence[int]) -> int:
    """The body of the `ledger.process_outbox_batch` task the relay sends: the rows not yet done, a group
    at a time (one linking transaction and one recompute per group). Safe to run any number of times.
    Returns how many rows it did."""
    with rt.db.transaction() as conn:
        rows = [r for r in outbox.get_many(conn, list(outbox_ids)) if r["done_at"] is None]
    group: list[dict[str, Any]] = []
    size = 0
    for row in rows:
        incidents = len(row["args"].get("incidents", ())) or 1
        if group and size + incidents > CHUNK:  # a linking transaction as large as one batch report's
            _apply(rt, group)
            group, size = [], 0
        group.append(row)
        size += incidents
    if group:
        _apply(rt, group)
    return len(rows)


def _apply(rt: Runtime, rows: Sequence[dict[str, Any]]) -> None:
    """Do the work of some outbox rows together, then mark them done. A row is marked done only after
    every write succeeded, so a failure leaves all of them to a redelivery or the sweep."""
    incident_ids = [UUID(i) for row in rows for i in row["args"].get("incidents", ())]
    affected: set[int] = set()
    if incident_ids:
        affected |= link_incidents(rt, incident_ids)
    for row in rows:
        affected |= {int(s) for s in row["args"].get("subjects", ())}
        if "platform" in row["args"]:
            rescore_platform(rt, int(row["args"]["platform"]))
    rescore(rt, affected)
    forget = [t for row in rows for t in row["args"].get("forget") or ()]
    if forget:
        rt.cache.forget(forget)
    events = [e for row in rows for e in row["args"].get("webhooks", ())]
    if events:
        webhooks.fan_out(rt, events)
    with rt.db.transaction() as conn:
        outbox.mark_done(conn, [int(row["id"]) for row in rows])


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


def link_pending(rt: Runtime, limit: int = 5000) -> set[int]:
    """Link incidents that never got a subject (e.g. reports accepted while the broker was down)."""
    with rt.db.transaction() as conn:
        ids = incident_store.unlinked(conn, limit)
    return link_incidents(rt, ids) if ids else set()


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


def sweep_outbox(rt: Runtime, limit: int = 500) -> int:
    """Re-send outbox rows not done within the grace period after their last send (or their creation, if
    no relay ever sent them). The beat task and `ledger outbox flush --send` call this."""
    with rt.db.transaction() as conn:
        rows = outbox.due(conn, rt.settings.outbox_grace_seconds, limit)
        ids = [int(r["id"]) for r in rows]
        if ids:
            outbox.mark_sent(conn, ids)
    return sum(1 for i in ids if rt.queue.send(PROCESS_OUTBOX, i))


def flush_outbox(rt: Runtime, limit: int = 10_000) -> int:
    """Process every pending outbox row synchronously in this process (no broker needed)."""
    with rt.db.transaction() as conn:
        ids = outbox.pending_ids(conn, limit)
    done = 0
    for outbox_id in ids:
        try:
            if process_outbox(rt, outbox_id) == "done":
                done += 1
        except CacheUnavailable:
            log.warning("redis unavailable; outbox row %s stays pending", outbox_id)
    return done


def warm_cache(rt: Runtime) -> int:
    """Rebuild the cache if Redis came back empty (no `ccl:warm`). The beat sweep calls this, so a Redis
    restart heals without an operator; meanwhile lookups that saw it warm answer from PostgreSQL."""
    try:
        if rt.cache.is_warm() or not rt.cache.lock_rebuild(600):
            return 0
    except CacheUnavailable:
        return 0
    try:
        return rebuild_cache(rt)
    finally:
        with contextlib.suppress(CacheUnavailable):
            rt.cache.unlock_rebuild()


def rebuild_cache(rt: Runtime, chunk: int = 5000) -> int:
    """Write every stored score back into Redis (`ledger cache rebuild`), then mark the cache warm."""
    marker = rt.cache.begin_rebuild()
    written, after = 0, 0
    while True:
        with rt.db.transaction(isolation="REPEATABLE READ") as conn:
            seq = event_store.head_seq(conn)
            rows = scores.iter_all(conn, after, chunk)
            if not rows:
                rt.cache.finish_rebuild(marker)
                return written
            ids = [int(r["subject_id"]) for r in rows]
            tokens = subjects.strong_tokens(conn, ids)
            devices = subjects.device_subject_counts(conn, subjects.device_tokens(conn, ids))
        # Each score goes in at the ledger position it was computed from, not the current head: stamped
        # newer, a rebuilt entry could hide a recompute that commits while the rebuild runs.
        by_seq: dict[int, dict[str, CachedDecision]] = {}
        for row in rows:
            entry = scores.cached_decision(row)
            group = by_seq.setdefault(int(row["computed_from_seq"]), {})
            for token in tokens.get(int(row["subject_id"]), []):
                group[token] = entry
        device_entries = by_seq.setdefault(seq, {})
        for token, count in devices.items():
            device_entries[token] = DeviceSignal(count, rt.policy.version, datetime.now(UTC).isoformat())
        for group_seq, by_token in sorted(by_seq.items()):
            rt.cache.put_decisions(group_seq, by_token)
            written += len(by_token)
        after = ids[-1]
