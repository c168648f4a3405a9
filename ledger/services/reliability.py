"""Reporter reliability: a platform whose reports keep being overturned loses weight automatically.

overturn_rate = (overturned + a) / (disputed + a + b) over a rolling window, a Beta(a, b) prior so a
handful of disputes cannot swing it. Effective trust is the operator's trust scaled by how much worse
than the prior the platform does:

    effective = operator_trust * (1 - overturn_rate) / (1 - prior_mean), at most operator_trust, at least 0.2

so a platform with no disputes keeps exactly the operator's trust, and one whose reports are mostly
overturned sinks to the floor. A change triggers a rescore of that platform's subjects via the outbox.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from ledger.errors import CacheUnavailable
from ledger.services.runtime import Runtime
from ledger.storage import outbox
from ledger.storage import platforms as platform_store
from ledger.storage.queue import PROCESS_OUTBOX


def effective_trust(
    operator_trust: float, disputed: int, overturned: int, a: float, b: float, floor: float
) -> float:
    rate = (overturned + a) / (disputed + a + b)
    prior = a / (a + b)
    value = operator_trust * (1.0 - rate) / (1.0 - prior)
    return round(max(floor, min(operator_trust, value)), 4)


def stats(rt: Runtime) -> list[dict[str, Any]]:
    policy = rt.policy
    with rt.db.transaction() as conn:
        rows = platform_store.reliability_counts(conn, policy.trust_window_days)
    out = []
    for r in rows:
        rate = (r["overturned"] + policy.trust_prior_a) / (
            r["disputed"] + policy.trust_prior_a + policy.trust_prior_b
        )
        out.append(
            {
                **r,
                "dispute_rate": round(r["disputed"] / r["reported"], 4) if r["reported"] else 0.0,
                "overturn_rate": round(rate, 4),
                "computed_trust": effective_trust(
                    r["operator_trust"],
                    r["disputed"],
                    r["overturned"],
                    policy.trust_prior_a,
                    policy.trust_prior_b,
                    policy.trust_min,
                ),
            }
        )
    return out


def refresh(rt: Runtime, platform_ids: Sequence[int] | None = None) -> list[str]:
    """Recompute effective trust; queue a rescore for each platform whose trust changed."""
    changed: list[tuple[str, int]] = []
    with rt.db.transaction() as conn:
        for row in stats(rt):
            if platform_ids is not None and row["id"] not in platform_ids:
                continue
            if platform_store.set_effective_trust(conn, row["id"], row["computed_trust"]):
                changed.append((row["slug"], outbox.add(conn, PROCESS_OUTBOX, {"platform": row["id"]})))
    if changed:
        with contextlib.suppress(CacheUnavailable):  # the outbox row is the guarantee; the relay polls too
            rt.pending.mark_pending_and_wake([])
    return [slug for slug, _ in changed]
