"""Reporting, reading and retracting incidents.

A report is durable before the API answers 201: the incident, its tokens, its outbox row, its `reported`
event and that event's pending log leaf commit in one transaction, with no log-wide lock. The 201 carries
a receipt: the leaf hash and the log's signed promise to include it within the maximum merge delay
(ledger/services/transparency.py); `ledger sequencer` integrates it after commit. After commit the API only flags the tokens
as pending and wakes the outbox relay (workers/relay.py), which sends the scoring task; the API
publishes nothing itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from ledger.domain import chain
from ledger.errors import CacheUnavailable, Conflict, InvalidInput, LedgerError, NotFound
from ledger.services import transparency, webhooks
from ledger.services.identifiers import tokenize_all
from ledger.services.platforms import Principal
from ledger.services.runtime import Runtime
from ledger.storage import disputes, outbox
from ledger.storage import events as event_store
from ledger.storage import incidents as store
from ledger.storage.events import NewEvent
from ledger.storage.queue import PROCESS_OUTBOX

CLOCK_SKEW = timedelta(seconds=60)


@dataclass(frozen=True)
class Prepared:
    """A validated report: tokens instead of raw identifiers, and a digest for idempotency."""

    external_id: str
    category: str
    confirmation: str
    amount_minor: int
    currency: str
    occurred_at: datetime
    identifiers: list[tuple[str, str]]
    evidence: list[bytes]
    consumer_notified_at: datetime | None
    digest: str


@dataclass(frozen=True)
class Outcome:
    """One item's outcome: a new incident (`created`), a replay of an earlier identical report, or
    refused with `error` (a Conflict or an InvalidInput) and an empty body. The API picks the status."""

    body: dict[str, Any]
    error: LedgerError | None = None
    created: bool = False


def prepare(rt: Runtime, item: Mapping[str, Any], now: datetime) -> Prepared:
    errors: dict[str, list[str]] = {}
    occurred: datetime = item["occurred_at"]
    if occurred.tzinfo is None:
        errors["occurred_at"] = ["must include a time zone offset"]
    elif occurred > now + CLOCK_SKEW:
        errors["occurred_at"] = ["is in the future"]
    elif occurred < now - timedelta(days=rt.settings.retention_days):
        errors["occurred_at"] = [f"is older than the retention period of {rt.settings.retention_days} days"]
    notified: datetime | None = item.get("consumer_notified_at")
    profile = rt.settings.profile
    if notified is None:
        if profile.notice_required:
            errors["consumer_notified_at"] = [
                "is required: tell the consumer before reporting them (" + profile.notice_basis + ")"
            ]
    elif notified.tzinfo is None:
        errors["consumer_notified_at"] = ["must include a time zone offset"]
    elif notified > now + CLOCK_SKEW:
        errors["consumer_notified_at"] = [
            "is later than the report's receipt: the consumer must be told first ("
            + profile.notice_basis
            + ")"
        ]
    currency = item["amount"]["currency"]
    if currency not in rt.policy.currencies:
        errors["amount.currency"] = [
            f"unsupported currency; supported: {', '.join(sorted(rt.policy.currencies))}"
        ]
    try:
        identifiers = tokenize_all(item["identifiers"], rt.identity_key, token_key=rt.token_key)
    except InvalidInput as exc:
        errors.update(exc.errors)
        identifiers = []
    if errors:
        raise InvalidInput("the incident is invalid", errors)
    evidence = sorted({bytes.fromhex(h) for h in (item.get("evidence") or {}).get("pdq", [])})
    canonical = {
        "external_id": item["external_id"],
        "category": item["category"],
        "confirmation": item["confirmation"],
        "amount": [item["amount"]["value"], currency],
        "occurred_at": chain.format_time(occurred),
        "identifiers": sorted(identifiers),
        "evidence": [e.hex() for e in evidence],
    }
    if notified is not None:  # absent from the digest when absent, so earlier reports still replay
        canonical["consumer_notified_at"] = chain.format_time(notified)
    return Prepared(
        external_id=item["external_id"],
        category=item["category"],
        confirmation=item["confirmation"],
        amount_minor=item["amount"]["value"],
        currency=currency,
        occurred_at=occurred.astimezone(UTC),
        identifiers=identifiers,
        evidence=evidence,
        consumer_notified_at=notified.astimezone(UTC) if notified is not None else None,
        digest=hashlib.sha256(chain.canonical(canonical)).hexdigest(),
    )


def public_view(rt: Runtime, row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "external_id": row["external_id"],
        "status": row["status"],
        "receipt": transparency.receipt(rt, bytes(row["leaf_hash"]), row["received_at"]),
    }


def _conflict(external_id: str) -> Conflict:
    return Conflict(
        f"external_id '{external_id}' was already reported with a different body",
        {"external_id": ["already used for a different incident"]},
    )


def report(
    rt: Runtime, principal: Principal, items: Sequence[Mapping[str, Any] | LedgerError]
) -> list[Outcome]:
    """Report one or many incidents. Each item is validated on its own; one bad item sinks nothing else.
    `items` may contain a LedgerError already raised by schema validation, which is passed through.

    The request costs one unit of the platform's bucket, charged after the work in the same Redis call
    that flags the new tokens (`QuotaGate`; the API refuses a platform whose bucket this process saw
    empty before reading the body): a report makes one Redis round trip, not two."""
    now = datetime.now(UTC)
    outcomes: list[Outcome | None] = [None] * len(items)
    prepared: dict[int, Prepared] = {}
    for index, item in enumerate(items):
        if isinstance(item, LedgerError):
            outcomes[index] = Outcome({}, item)
            continue
        try:
            prepared[index] = prepare(rt, item, now)
        except InvalidInput as exc:
            outcomes[index] = Outcome({}, exc)

    # Within one batch the first occurrence of an external_id wins; later ones replay or conflict.
    first: dict[str, int] = {}
    for index, p in prepared.items():
        first.setdefault(p.external_id, index)

    tokens_to_flag: list[str] = []
    if first:
        new = [_new_incident(principal, prepared[index]) for index in first.values()]
        # One statement on an autocommit connection: one round trip, one transaction, durable on return.
        with rt.db.autocommit() as conn:
            existing = store.report(conn, principal.platform_id, new, PROCESS_OUTBOX)
        for row in existing.values():
            if row["created"]:
                tokens_to_flag.extend(tok for _, tok in prepared[first[row["external_id"]]].identifiers)
        for index, p in prepared.items():
            row = existing[p.external_id]
            if row["created"] and first[p.external_id] == index:
                outcomes[index] = Outcome(public_view(rt, row), created=True)
            elif row["request_digest"] == p.digest:
                outcomes[index] = Outcome(public_view(rt, row))
            else:
                outcomes[index] = Outcome({}, _conflict(p.external_id))
    # New incidents were committed when there are tokens to flag (each has at least one identifier).
    rt.report_gate.settle(rt, principal, 1, tokens_to_flag, wake=bool(tokens_to_flag))
    return [o for o in outcomes if o is not None]


def _new_incident(principal: Principal, p: Prepared) -> store.NewIncident:
    """The incident's row and its `reported` event payload; the salt keys the payload's commitment to the
    tokens, and is deleted on expiry (crypto-shredding)."""
    salt = os.urandom(16)
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "external_id": p.external_id,
        "request_digest": p.digest,
        "category": p.category,
        "confirmation": p.confirmation,
        "amount_minor": p.amount_minor,
        "currency": p.currency,
        "occurred_at": p.occurred_at,
        "consumer_notified_at": p.consumer_notified_at,
        "salt": salt,
    }
    payload = {
        "incident_id": str(row["id"]),
        "platform_id": principal.platform_id,
        "external_id": p.external_id,
        "category": p.category,
        "confirmation": p.confirmation,
        "amount": p.amount_minor,
        "currency": p.currency,
        "occurred_at": chain.format_time(p.occurred_at),
        "identifiers": chain.identifiers_commitment(salt, (tok for _, tok in p.identifiers)),
        "evidence": hashlib.sha256(b"".join(p.evidence)).hexdigest() if p.evidence else None,
    }
    if p.consumer_notified_at is not None:  # Art. 15's notice, in the tamper-evident history
        payload["consumer_notified_at"] = chain.format_time(p.consumer_notified_at)
    return store.NewIncident(row, p.identifiers, p.evidence, chain.canonical(payload).decode("ascii"))


def after_commit(rt: Runtime, tokens: Sequence[str]) -> None:
    """After a commit that queued outbox work: flag the tokens as pending and wake the outbox relay, in one
    Redis round trip. A Redis failure is fine: the committed outbox rows are the guarantee, and the relay
    also polls for them."""
    with contextlib.suppress(CacheUnavailable):
        rt.pending.mark_pending_and_wake(tokens)


def get(rt: Runtime, principal: Principal, incident_id: UUID) -> dict[str, Any]:
    with rt.db.transaction() as conn:
        row = store.get_for_platform(conn, incident_id, principal.platform_id)
        if row is None:
            raise NotFound("no such incident")
        evidence = store.evidence_of(conn, incident_id)
    return {
        **public_view(rt, row),
        "category": row["category"],
        "confirmation": row["confirmation"],
        "amount": {"value": row["amount_minor"], "currency": row["currency"]},
        "occurred_at": row["occurred_at"],
        "reported_at": row["reported_at"],
        "status_reason": row["status_reason"],
        "consumer_notified_at": row["consumer_notified_at"],
        "evidence": {"pdq": [bytes(e["pdq"]).hex() for e in evidence]},
    }


def change_status(
    incident_id: UUID,
    status: str,
    reason: str | None,
    kind: str,
    extra: Mapping[str, Any] | None = None,
    *,
    conn: Any,
) -> None:
    """Record a status change as an event (a log leaf) plus an outbox row, in the caller's transaction;
    the caller calls `after_commit` once it has committed."""
    row = store.get(conn, incident_id)
    store.set_status(conn, incident_id, status, reason)
    outbox.add(conn, PROCESS_OUTBOX, {"incidents": [str(incident_id)]})
    payload = {"incident_id": str(incident_id), "status": status, "reason": reason, **(extra or {})}
    platform = int(row["platform_id"]) if row else None
    event_store.append(conn, [NewEvent(kind, incident_id, payload, platform)])


def notify_retracted(conn: Any, incident_id: UUID, platform_id: int, external_id: str, reason: str) -> None:
    """incident.retracted, to the reporting platform (by itself, by a dispute, or by the SLA)."""
    webhooks.emit(
        conn,
        "incident.retracted",
        platform_id,
        {"incident_id": str(incident_id), "external_id": external_id, "reason": reason},
    )


def notify_resolved(
    conn: Any, dispute_id: UUID, incident_id: UUID, platform_id: int, external_id: str, outcome: str
) -> None:
    """dispute.resolved, to the reporting platform: upheld, retracted or expired."""
    webhooks.emit(
        conn,
        "dispute.resolved",
        platform_id,
        {
            "dispute_id": str(dispute_id),
            "incident_id": str(incident_id),
            "external_id": external_id,
            "outcome": outcome,
        },
    )


def retract(rt: Runtime, principal: Principal, incident_id: UUID, reason: str) -> dict[str, Any]:
    with rt.db.transaction() as conn:
        row = store.get_for_platform(conn, incident_id, principal.platform_id, lock=True)
        if row is None:
            raise NotFound("no such incident")
        if row["status"] in ("retracted", "expired"):
            return public_view(rt, row)  # idempotent: retracting twice changes nothing
        open_dispute = disputes.open_for_incident(conn, incident_id)
        if open_dispute is not None:  # retracting answers the consumer's dispute too
            disputes.resolve(conn, open_dispute["id"], "retracted", None, datetime.now(UTC))
            notify_resolved(
                conn, open_dispute["id"], incident_id, principal.platform_id, row["external_id"], "retracted"
            )
        change_status(incident_id, "retracted", reason, "retracted", conn=conn)
        notify_retracted(conn, incident_id, principal.platform_id, row["external_id"], reason)
        row = store.get_for_platform(conn, incident_id, principal.platform_id)
    assert row is not None
    after_commit(rt, [])
    return public_view(rt, row)
