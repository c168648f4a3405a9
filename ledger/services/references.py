"""Reference photos: platforms register what they sell and ship, and a claim photo derived from it is caught.

Why: the ledger's reuse check catches a forged photo only once some platform confirmed it. The forgeries
this project exists for are the seller's own pictures with cracks or stains painted on, so a claim photo
within a few bits of the seller's listing or shipping photo is caught the first time (docs/evidence.md,
"Reference photos"). Listing photos are public, so their hashes are matched for every member; shipping
photos only for the platform that registered them. A checker learns the kind and the distance, never the
platform or the reference. Only hashes are stored; every change is a ledger event (a log leaf).

The index is `EvidenceIndex`, loaded and refreshed like the evidence index (`services.evidence.Matcher`),
over `reference_photos` and its change log.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger.domain.pdq_index import EvidenceIndex, EvidenceRows, Hit
from ledger.errors import InvalidInput
from ledger.services.evidence import (
    DERIVED_FROM_LISTING,
    DERIVED_FROM_SHIPPING,
    Matcher,
    Submitted,
    hash_uploads,
)
from ledger.services.platforms import Principal
from ledger.services.runtime import Runtime
from ledger.storage import events as event_store
from ledger.storage import references as store
from ledger.storage.db import Connection
from ledger.storage.events import NewEvent

MAX_PER_REFERENCE = 50
MAX_HASHES_PER_CALL = 10_000
REASONS = {"listing": DERIVED_FROM_LISTING, "shipping": DERIVED_FROM_SHIPPING}


class ReferenceMatcher(Matcher):
    """The process's reference index: the evidence matcher's loading, refreshing and merging, over the
    registered reference photos."""

    name = "references"

    def _categories(self) -> list[str]:
        return ["other", *store.KINDS]

    def _read_all(self, conn: Connection, categories: list[str]) -> tuple[int, EvidenceRows]:  # noqa: ARG002
        return store.change_cursor(conn), store.load_matchable(conn)

    def _read_changes(
        self,
        conn: Connection,
        index: EvidenceIndex,  # noqa: ARG002 - kind codes come from SQL here
    ) -> tuple[int, list[bytes], EvidenceRows, bool]:
        return store.changed_since(conn, self._cursor)


# -- registration ----------------------------------------------------------------------------------------


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _event(kind: str, platform_id: int, ref_kind: str, reference: str, hashes: Sequence[bytes]) -> NewEvent:
    """The log leaf for a change. It names the reference by its SHA-256 (the platform can show it is
    theirs) and commits to the hashes, so the log can prove a registration without publishing either."""
    return NewEvent(
        kind,
        None,
        {
            "kind": ref_kind,
            "reference": _digest(reference),
            "hashes": hashlib.sha256(b"".join(sorted(hashes))).hexdigest(),
            "count": len(hashes),
        },
        platform_id,
    )


def _expiry(rt: Runtime, kind: str, now: datetime) -> datetime | None:
    return now + timedelta(days=rt.policy.shipping_reference_days) if kind == "shipping" else None


def register(
    rt: Runtime, principal: Principal, items: Sequence[Mapping[str, Any]], replace: bool = False
) -> list[dict[str, Any]]:
    """Add (or, with `replace`, set exactly) the hashes of each of the platform's references, in one
    transaction: all of the batch or none. One ledger event per reference that changed."""
    total = sum(len(item["pdq"]) for item in items)
    if total > MAX_HASHES_PER_CALL:
        raise InvalidInput(
            "too many hashes in one call", {"references": [f"at most {MAX_HASHES_PER_CALL} hashes per call"]}
        )
    now = datetime.now(UTC)
    results: list[dict[str, Any]] = []
    events: list[NewEvent] = []
    with rt.db.transaction() as conn:
        for item in items:
            kind, reference = item["kind"], item["reference"]
            hashes = list(dict.fromkeys(bytes.fromhex(h) for h in item["pdq"]))
            removed = store.remove(conn, principal.platform_id, kind, reference) if replace else 0
            added = store.add(conn, principal.platform_id, kind, reference, hashes, _expiry(rt, kind, now))
            if replace:
                events.append(_event("reference_replaced", principal.platform_id, kind, reference, hashes))
            elif added:
                events.append(_event("reference_added", principal.platform_id, kind, reference, hashes))
            results.append(
                {
                    "kind": kind,
                    "reference": reference,
                    "added": added if not replace else len(hashes),
                    "removed": removed,
                    "held": store.held(conn, principal.platform_id, kind, reference),
                    "expires_at": _expiry(rt, kind, now) if kind == "shipping" else None,
                }
            )
            if results[-1]["held"] > MAX_PER_REFERENCE:
                raise InvalidInput(
                    "too many hashes for one reference",
                    {"references": [f"a reference holds at most {MAX_PER_REFERENCE} hashes"]},
                )
        event_store.append(conn, events)
    return results


def register_images(
    rt: Runtime, principal: Principal, kind: str, reference: str, images: Sequence[bytes]
) -> dict[str, Any]:
    """Hash uploaded photos in memory (both views, as evidence) and add them under one reference."""
    hashed = hash_uploads(images)
    views = [view.hex() for h in hashed for view in h.digests]
    [result] = register(rt, principal, [{"kind": kind, "reference": reference, "pdq": views}])
    result["hashes"] = [{"hash": h.hex, "displayed_hash": h.displayed, "quality": h.quality} for h in hashed]
    return result


def remove(rt: Runtime, principal: Principal, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Remove the platform's own references. Naming another platform's reference removes nothing: the
    answer is the same as for a reference that never existed."""
    results = []
    events = []
    with rt.db.transaction() as conn:
        for item in items:
            kind, reference = item["kind"], item["reference"]
            removed = store.remove(conn, principal.platform_id, kind, reference)
            if removed:
                events.append(_event("reference_removed", principal.platform_id, kind, reference, []))
            results.append({"kind": kind, "reference": reference, "removed": removed})
        event_store.append(conn, events)
    return results


def expire(rt: Runtime, now: datetime | None = None) -> int:
    """Delete lapsed shipping hashes (retention's job); one `reference_expired` event per reference."""
    with rt.db.transaction() as conn:
        gone = store.expire(conn, now or datetime.now(UTC))
        event_store.append(
            conn,
            [
                NewEvent("reference_expired", None, {"kind": k, "reference": _digest(r), "count": n}, p)
                for p, k, r, n in gone
            ],
        )
    return sum(n for *_, n in gone)


# -- the claim check -------------------------------------------------------------------------------------


def derived(rt: Runtime, platform_id: int, asked: Sequence[Submitted]) -> list[dict[str, Any] | None]:
    """Per submitted hash or image: the closest registered reference it may be derived from, as
    {kind, distance}, or None. Listing photos of every platform count; shipping photos only the caller's
    own. Never the platform, never the reference."""
    policy = rt.policy
    index = rt.reference_matcher.current()
    if len(index) == 0:
        return [None] * len(asked)
    out: list[dict[str, Any] | None] = []
    for item in asked:
        if item.quality is not None and item.quality < policy.evidence_min_quality:
            out.append(None)
            continue
        hits: list[Hit] = index.hits(item.digest, policy.evidence_threshold)
        if item.displayed is not None:
            hits += index.hits(item.displayed, policy.evidence_threshold)
        usable = [
            h
            for h in hits
            if h.category == "listing" or (h.category == "shipping" and h.platform == platform_id)
        ]
        if not usable:
            out.append(None)
            continue
        best = min(usable, key=lambda h: (h.distance, h.category != "shipping"))
        out.append({"kind": best.category, "distance": best.distance})
    return out
