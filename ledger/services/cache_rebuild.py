"""Refilling the decision cache from PostgreSQL: after a Redis restart (the beat sweep's `warm_cache`), or
by hand (`ledger cache rebuild`).

PostgreSQL's `risk_scores` is the truth; Redis is a copy the lookup path reads in one round trip. Each
score goes back at the ledger position it was computed from, so a rebuild never hides a recompute that
commits while it runs, and the warm marker is set only by a rebuild that finished on this very Redis
(ledger/storage/rebuild_markers.py).
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from ledger.errors import CacheUnavailable
from ledger.services.runtime import Runtime
from ledger.storage import events as event_store
from ledger.storage import scores, subjects
from ledger.storage.decision_cache import CachedDecision, DeviceSignal


def warm_cache(rt: Runtime) -> int:
    """Rebuild the cache if Redis came back empty (no `ccl:warm`). The beat sweep calls this, so a Redis
    restart heals without an operator; meanwhile lookups that saw it warm answer from PostgreSQL."""
    try:
        if rt.rebuild.is_warm() or not rt.rebuild.lock_rebuild(600):
            return 0
    except CacheUnavailable:
        return 0
    try:
        return rebuild_cache(rt)
    finally:
        with contextlib.suppress(CacheUnavailable):
            rt.rebuild.unlock_rebuild()


def rebuild_cache(rt: Runtime, chunk: int = 5000) -> int:
    """Write every stored score back into Redis (`ledger cache rebuild`), then mark the cache warm."""
    marker = rt.rebuild.begin_rebuild()
    written, after = 0, 0
    while True:
        with rt.db.transaction(isolation="REPEATABLE READ") as conn:
            seq = event_store.head_seq(conn)
            rows = scores.iter_all(conn, after, chunk)
            if not rows:
                rt.rebuild.finish_rebuild(marker)
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
