"""Retention and erasure: entries expire, and expiry erases the link to the person.

An incident older than the retention period (5 years by default, from occurred_at) gets an `expired`
event (a log leaf) and status; its token references, its commitment salt, its evidence hashes and any dispute
statement are deleted, and identity links no longer backed by a live incident are deleted too. That is
crypto-shredding: the log's leaves keep only a salted commitment whose salt is gone, so every leaf still
re-derives and every proof still verifies, but they link to nobody. Lookup audit records lose their tokens after 2 years the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ledger.services import references, webhooks
from ledger.services.incidents import after_commit
from ledger.services.runtime import Runtime
from ledger.storage import access, audit, disputes, outbox, scores
from ledger.storage import events as event_store
from ledger.storage import incidents as incident_store
from ledger.storage import subjects as subject_store
from ledger.storage import webhooks as webhook_store
from ledger.storage.events import NewEvent
from ledger.storage.queue import PROCESS_OUTBOX

WEBHOOK_LOG_DAYS = 30


def expire_incidents(rt: Runtime, now: datetime | None = None, chunk: int = 500) -> dict[str, Any]:
    at = now or datetime.now(UTC)
    before = at - timedelta(days=rt.settings.retention_days)
    expired = 0
    forgotten: list[str] = []
    while True:
        with rt.db.transaction() as conn:
            rows = incident_store.expired_candidates(conn, before, chunk)
            if not rows:
                break
            ids = [r["id"] for r in rows]
            subjects = sorted({int(r["subject_id"]) for r in rows if r["subject_id"] is not None})
            tokens = [t["token"] for t in incident_store.tokens_of(conn, ids)]
            event_store.append(
                conn,
                [
                    NewEvent(
                        "expired",
                        r["id"],
                        {"incident_id": str(r["id"]), "status": "expired"},
                        r["platform_id"],
                    )
                    for r in rows
                ],
            )
            _notify_cleared(conn, subjects, ids, at)
            gone = incident_store.shred(conn, ids, tokens)
            disputes.erase_personal(conn, ids)
            # The worker drops the erased tokens from Redis (retried until it succeeds) and rescores.
            outbox.add(conn, PROCESS_OUTBOX, {"subjects": subjects, "forget": gone})
        expired += len(ids)
        forgotten.extend(gone)
        after_commit(rt, [])
        if len(rows) < chunk:
            break
    return {"expired": expired, "tokens_erased": len(forgotten)}


def _notify_cleared(conn: Any, subject_ids: list[int], expiring: list[Any], at: datetime) -> None:
    """subject.cleared for the consumers whose last counting entries expire now and who were restricted,
    while their tokens still exist to find the lookups by (the rescore after shredding could not)."""
    cleared = scores.restricted_without_live_incidents(conn, subject_ids, expiring)
    for tokens in subject_store.strong_tokens(conn, cleared).values():
        webhooks.emit_cleared(conn, tokens, at)


def erase_old_lookups(rt: Runtime, now: datetime | None = None, chunk: int = 5000) -> int:
    at = now or datetime.now(UTC)
    before = at - timedelta(days=rt.settings.audit_retention_days)
    total = 0
    while True:
        with rt.db.transaction() as conn:
            count = audit.erase_before(conn, before, chunk)
        total += count
        if count < chunk:
            break
    with rt.db.transaction() as conn:
        access.erase_before(conn, before)  # the subject reports' tokens go with the lookup trail's
    return total


def run(rt: Runtime, now: datetime | None = None) -> dict[str, Any]:
    """The daily retention job (`ledger retention run` is its CLI twin)."""
    result = expire_incidents(rt, now)
    result["lookups_erased"] = erase_old_lookups(rt, now)
    result["shipping_references_expired"] = references.expire(rt, now)  # hashes past their 180 days
    with rt.db.transaction() as conn:
        result["outbox_purged"] = outbox.purge_done(conn)  # work finished more than a week ago
        # Webhook deliveries finished more than 30 days ago, with their log and events.
        result["webhook_deliveries_purged"] = webhook_store.purge(conn, WEBHOOK_LOG_DAYS)
    return result
