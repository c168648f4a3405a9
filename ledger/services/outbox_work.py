"""The work an outbox row asks for: the bodies of the `ledger.process_outbox*` tasks, and the sweep that
re-sends rows not done in time.

A row names incidents to link, subjects or a platform to rescore, tokens to forget and webhook events to
fan out. A row is marked done only after every write succeeded, so a killed worker or a dead Redis leaves
it pending for a redelivery or the sweep; every step is idempotent, so doing a row twice is harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from ledger.errors import CacheUnavailable
from ledger.services import webhooks
from ledger.services.linking import link_incidents
from ledger.services.runtime import Runtime
from ledger.services.scoring import CHUNK, rescore, rescore_platform
from ledger.storage import outbox
from ledger.storage.queue import PROCESS_OUTBOX

log = logging.getLogger(__name__)


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
