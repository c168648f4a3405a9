"""Disputes: the consumer's way to correct the ledger (FCRA §611, PIPL Art. 46).

Opening a dispute marks the incident `disputed` (half weight) and starts an SLA clock; the reporting
platform must uphold it with a confirmation basis or retract it before `respond_by`, or the SLA job
retracts it with reason DISPUTE_SLA_EXPIRED. Every action is a ledger event (a log leaf) and feeds the
reporter's reliability.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from ledger.errors import Conflict, InvalidInput, NotFound
from ledger.identity import WEAK_TYPES
from ledger.services import reliability, webhooks
from ledger.services.identifiers import tokenize_all
from ledger.services.incidents import after_commit, change_status, notify_resolved, notify_retracted
from ledger.services.platforms import Principal, charge_consumer_rights
from ledger.services.runtime import Runtime
from ledger.storage import disputes as store
from ledger.storage import incidents as incident_store
from ledger.storage import subjects

REDISPUTE_COOLDOWN = timedelta(days=90)
SLA_REASON = "DISPUTE_SLA_EXPIRED"


def selecting_tokens(tokenized: list[tuple[str, str]]) -> list[str]:
    """The tokens that may select a consumer's entries. A device id never does: many people share a
    device, and the model never links people by one, so it must not pull another consumer's incidents
    into this consumer's report or dispute."""
    return [token for id_type, token in tokenized if id_type not in WEAK_TYPES]


def open_dispute(rt: Runtime, principal: Principal, request: Mapping[str, Any]) -> list[dict[str, Any]]:
    tokens = selecting_tokens(tokenize_all(request["identifiers"], rt.identity_key, token_key=rt.token_key))
    return open_dispute_for_tokens(rt, principal, tokens, request)


def open_dispute_for_tokens(
    rt: Runtime, principal: Principal, tokens: list[str], request: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """As `open_dispute`, for identifiers already tokenised (the console's desk keeps only tokens); strong
    tokens only (`selecting_tokens`)."""
    wanted: UUID | None = request.get("incident_id")
    if (wanted is None) == (not request.get("all_entries", False)):
        raise InvalidInput(
            "give either incident_id or all_entries=true",
            {"incident_id": ["give incident_id or all_entries"]},
        )
    if not tokens:
        raise InvalidInput(
            "a device id alone does not identify a consumer; give a phone, e-mail, ID card or payment account",
            {"identifiers": ["needs at least one identifier other than device_id"]},
        )
    charge_consumer_rights(rt, principal)
    now = datetime.now(UTC)
    respond_by = now + timedelta(days=rt.settings.dispute_days)
    created: list[dict[str, Any]] = []
    with rt.db.transaction() as conn:
        tokens = subjects.linked_tokens(conn, tokens)
        about = incident_store.about_tokens(conn, tokens)
        if wanted is not None:
            about = [i for i in about if i["id"] == wanted]
            if not about:
                # The same answer for an unknown incident and one about somebody else.
                raise NotFound("no incident with that id concerns this consumer")
        candidates = [i for i in about if i["status"] in ("active", "disputed")]
        if wanted is not None and not candidates:
            raise Conflict(f"the incident is {about[0]['status']} and cannot be disputed")
        for incident in candidates:
            # Re-read under the lock: a retraction or expiry committed since the read above wins.
            locked = incident_store.get(conn, incident["id"], lock=True)
            if locked is None or locked["status"] not in ("active", "disputed"):
                if wanted is not None:
                    status = locked["status"] if locked else "gone"
                    raise Conflict(f"the incident is {status} and cannot be disputed")
                continue
            if store.open_for_incident(conn, incident["id"]) is not None:
                if wanted is not None:
                    raise Conflict(
                        "this incident already has an open dispute", {"incident_id": ["already disputed"]}
                    )
                continue
            upheld = store.last_upheld(conn, incident["id"])
            if upheld is not None and now - upheld < REDISPUTE_COOLDOWN:
                if wanted is not None:
                    until = (upheld + REDISPUTE_COOLDOWN).date().isoformat()
                    raise Conflict(
                        f"a dispute of this incident was upheld recently; it can be disputed again from {until}",
                        {"incident_id": ["upheld within the last 90 days"]},
                    )
                continue
            dispute_id = uuid.uuid4()
            store.insert(
                conn,
                dispute_id,
                incident["id"],
                incident["platform_id"],
                principal.platform_id,
                request.get("statement") or None,
                request.get("contact_ref"),
                respond_by,
            )
            change_status(
                incident["id"],
                "disputed",
                "consumer_dispute",
                "disputed",
                {
                    "dispute_id": str(dispute_id),
                    "respond_by": respond_by.isoformat(),
                    "statement": bool(request.get("statement")),
                },
                conn=conn,
            )
            webhooks.emit(
                conn,
                "dispute.opened",
                int(incident["platform_id"]),
                {
                    "dispute_id": str(dispute_id),
                    "incident_id": str(incident["id"]),
                    "external_id": incident["external_id"],
                    "respond_by": respond_by.isoformat(),
                    "statement_filed": bool(request.get("statement")),
                },
            )
            created.append(
                {"id": dispute_id, "incident_id": incident["id"], "status": "open", "respond_by": respond_by}
            )
        if not created:
            raise Conflict("no entry about this consumer can be disputed now")
    after_commit(rt, tokens)
    return created


def list_for_platform(
    rt: Runtime, principal: Principal, status: str | None, limit: int = 500
) -> list[dict[str, Any]]:
    with rt.db.transaction() as conn:
        return store.for_platform(conn, principal.platform_id, status, limit)


def respond(
    rt: Runtime, principal: Principal, dispute_id: UUID, outcome: str, basis: str | None
) -> dict[str, Any]:
    if outcome == "upheld" and not basis:
        raise InvalidInput(
            "an upheld dispute needs the confirmation basis", {"basis": ["required when upheld"]}
        )
    now = datetime.now(UTC)
    with rt.db.transaction() as conn:
        dispute = store.get(conn, dispute_id, lock=True)
        if dispute is None or dispute["platform_id"] != principal.platform_id:
            raise NotFound("no such dispute")
        if dispute["status"] != "open":
            raise Conflict(f"the dispute is already {dispute['status']}")
        incident = incident_store.get(conn, dispute["incident_id"], lock=True)
        assert incident is not None
        notify_resolved(
            conn, dispute_id, dispute["incident_id"], principal.platform_id, incident["external_id"], outcome
        )
        if incident["status"] != "disputed":
            # Expired (or retracted) meanwhile: the answer is recorded, but nothing brings the entry back.
            store.resolve(conn, dispute_id, outcome, basis if outcome == "upheld" else None, now)
        elif outcome == "upheld":
            store.resolve(conn, dispute_id, "upheld", basis, now)
            change_status(
                dispute["incident_id"],
                "active",
                "dispute_upheld",
                "dispute_upheld",
                {"dispute_id": str(dispute_id), "basis": basis},
                conn=conn,
            )
        else:
            store.resolve(conn, dispute_id, "retracted", None, now)
            change_status(
                dispute["incident_id"],
                "retracted",
                "dispute_retracted",
                "dispute_retracted",
                {"dispute_id": str(dispute_id)},
                conn=conn,
            )
            notify_retracted(
                conn,
                dispute["incident_id"],
                principal.platform_id,
                incident["external_id"],
                "dispute_retracted",
            )
        resolved = store.get(conn, dispute_id)
    after_commit(rt, [])
    reliability.refresh(rt, platform_ids=[principal.platform_id])
    assert resolved is not None
    return resolved


def expire_overdue(rt: Runtime, now: datetime | None = None, limit: int = 1000) -> int:
    """The SLA job: retract every incident whose dispute passed respond_by with no response."""
    at = now or datetime.now(UTC)
    expired = 0
    platforms: set[int] = set()
    with rt.db.transaction() as conn:
        for dispute in store.overdue(conn, at, limit):
            store.resolve(conn, dispute["id"], "expired", None, at)
            incident = incident_store.get(conn, dispute["incident_id"], lock=True)
            if incident is None or incident["status"] != "disputed":
                continue  # expired or retracted meanwhile: nothing to retract
            change_status(
                dispute["incident_id"],
                "retracted",
                SLA_REASON,
                "dispute_sla_expired",
                {"dispute_id": str(dispute["id"])},
                conn=conn,
            )
            incident = incident_store.get(conn, dispute["incident_id"])
            assert incident is not None
            platform_id = int(dispute["platform_id"])
            notify_resolved(
                conn, dispute["id"], dispute["incident_id"], platform_id, incident["external_id"], "expired"
            )
            notify_retracted(conn, dispute["incident_id"], platform_id, incident["external_id"], SLA_REASON)
            platforms.add(platform_id)
            expired += 1
    if expired:
        after_commit(rt, [])
        reliability.refresh(rt, platform_ids=sorted(platforms))
    return expired
