"""Subject access report: everything the ledger holds about one consumer (PIPL Art. 45, FCRA §609).

It is what the operator hands to the consumer, so unlike a lookup it names the reporting platforms and
every platform that looked the consumer up within the lookup retention period (two years by default).

Everything is gathered for the whole consumer, not just for the identifiers typed in: a consumer who asks
with an ID card is shown the lookups made with the phone reported together with it (《征信业管理条例》
Art. 22, FCRA §609). `subjects.linked_tokens` widens the typed identifiers to every strong identifier
linked to them; device ids are never followed.

The most revealing read the service has, so: only the operator may ask for it (`dispute` scope), it
draws on a small rate limit of its own, a device id never selects entries (a device is shared; it would
pull in other people), and every report leaves an append-only record (`subject_reports`): who, when,
and a salted commitment to the identifiers asked about.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger.errors import InvalidInput
from ledger.services.disputes import selecting_tokens
from ledger.services.identifiers import tokenize_all
from ledger.services.platforms import Principal, charge_consumer_rights
from ledger.services.runtime import Runtime
from ledger.storage import access as access_store
from ledger.storage import audit, disputes, evidence, scores, subjects
from ledger.storage import incidents as incident_store
from ledger.storage import platforms as platform_store


def commitment(salt: bytes, tokens: Sequence[str]) -> str:
    """SHA-256 over the salt and the sorted tokens: checkable given the identifiers, opaque without."""
    digest = hashlib.sha256(salt)
    for token in sorted(set(tokens)):
        digest.update(b"\0" + token.encode())
    return digest.hexdigest()


def report(rt: Runtime, principal: Principal, request: Mapping[str, Any]) -> dict[str, Any]:
    typed = selecting_tokens(tokenize_all(request["identifiers"], rt.identity_key, token_key=rt.token_key))
    return report_for_tokens(rt, principal, typed)


def report_for_tokens(rt: Runtime, principal: Principal, typed: list[str]) -> dict[str, Any]:
    """As `report`, for identifiers already tokenised (the console's desk keeps only tokens); `typed`
    holds strong tokens only (`selecting_tokens`)."""
    if not typed:
        raise InvalidInput(
            "a device id alone does not identify a consumer; give a phone, e-mail, ID card or payment account",
            {"identifiers": ["needs at least one identifier other than device_id"]},
        )
    charge_consumer_rights(rt, principal)
    texts = rt.policy.reasons
    profile = rt.settings.profile
    now = datetime.now(UTC)
    since = now - timedelta(days=rt.settings.audit_retention_days)
    year = profile.year_of(now)
    salt = os.urandom(16)
    with rt.db.transaction(isolation="REPEATABLE READ") as conn:
        tokens = subjects.linked_tokens(conn, typed)
        # This report counts too: the first `free_reports_per_year` of a calendar year are free (Art. 17),
        # per consumer: a report asked for under any identifier linked to them counts against them.
        # It is also the audit record of who opened the consumer's file (append-only but for the erasure
        # of `tokens`): the operator's key, and a salted commitment to the identifiers asked about.
        access_store.record(
            conn,
            uuid.uuid4(),
            tokens,
            now,
            principal.platform_id,
            principal.key_id,
            salt,
            commitment(salt, typed),
        )
        used = access_store.count_since(conn, tokens, profile.year_start(year))
        incidents = incident_store.about_tokens(conn, tokens)
        names = platform_store.names(conn)
        subject_ids = sorted({int(i["subject_id"]) for i in incidents if i["subject_id"] is not None})
        score_rows = scores.for_subjects(conn, subject_ids)
        dispute_rows = disputes.for_incidents(conn, [i["id"] for i in incidents])
        evidence_counts = evidence.counts_for_incidents(conn, [i["id"] for i in incidents])
        lookups = audit.for_tokens(conn, tokens, since)
    by_incident: dict[Any, list[dict[str, Any]]] = {}
    for d in dispute_rows:
        by_incident.setdefault(d["incident_id"], []).append(
            {
                "id": str(d["id"]),
                "status": d["status"],
                "opened_at": d["opened_at"],
                "respond_by": d["respond_by"],
                "resolved_at": d["resolved_at"],
                "statement_filed": d["has_statement"],
            }
        )
    return {
        "generated_at": now,
        "jurisdiction": profile.name,
        "dispute_days": rt.settings.dispute_days,
        "free_reports": {
            "year": year,
            "free_per_year": profile.free_reports_per_year,
            "used": used,
            "remaining": max(0, profile.free_reports_per_year - used),
            "this_report_free": used <= profile.free_reports_per_year,
            "basis": profile.free_reports_basis,
        },
        "incidents": [
            {
                "id": str(i["id"]),
                "category": i["category"],
                "confirmation": i["confirmation"],
                "amount": {"value": i["amount_minor"], "currency": i["currency"].strip()},
                "occurred_at": i["occurred_at"],
                "reported_at": i["reported_at"],
                "status": i["status"],
                "status_reason": i["status_reason"],
                "consumer_notified_at": i["consumer_notified_at"],
                "platform": {"slug": names[i["platform_id"]][0], "name": names[i["platform_id"]][1]},
                "disputes": by_incident.get(i["id"], []),
                "evidence_images": evidence_counts.get(i["id"], 0),
            }
            for i in incidents
        ],
        "scores": [
            {
                "score": s["score"],
                "tier": s["tier"],
                "restrictions": list(s["restrictions"]),
                "reasons": [
                    {"code": c, "text_zh": texts.get(c, (c, c))[0], "text_en": texts.get(c, (c, c))[1]}
                    for c in s["reasons"]
                ],
                "policy_version": s["policy_version"],
                "computed_at": s["computed_at"],
            }
            for s in score_rows
        ],
        "lookups": [
            {"platform": {"slug": r["slug"], "name": r["name"]}, "at": r["at"], "purpose": r["purpose"]}
            for r in lookups
        ],
    }
