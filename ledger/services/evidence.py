"""Evidence use cases: add photos to an incident, and match a lookup's evidence against confirmed fraud.

Only PDQ hashes and their quality are ever stored; uploaded images are decoded and hashed in memory
(`ledger.domain.pdq_hash`) and dropped with the request.

Matching runs against an in-memory `EvidenceIndex` held once per process (per Runtime). The first
lookup with evidence loads it from PostgreSQL; after that a lookup with evidence first applies the
`evidence_changes` log written since the last check, at most once a second. So every API process sees a
new, retracted or expired hash within about a second, without any broker or worker in the way, and a
lookup without evidence never touches any of this.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from ledger.domain.image_metadata import ImageMetadata, read_metadata
from ledger.domain.pdq_hash import MAX_IMAGE_BYTES, ImageHash, ImageRejected, hash_images
from ledger.domain.pdq_index import DELTA_LIMIT, NO_MATCH, EvidenceIndex, EvidenceRows, summarise
from ledger.errors import Conflict, InvalidInput, NotFound
from ledger.services.platforms import Principal
from ledger.services.runtime import Runtime
from ledger.storage import events as event_store
from ledger.storage import evidence as store
from ledger.storage import incidents as incident_store
from ledger.storage import index_snapshots as snapshots
from ledger.storage.db import Connection
from ledger.storage.events import NewEvent

log = logging.getLogger(__name__)

REFRESH_SECONDS = 1.0
MAX_IMAGES = 5
MAX_PER_INCIDENT = 20  # as many as a report may carry in evidence.pdq
IMAGES_KEY = "evidence_images"  # a lookup request's hashed images, set by the multipart endpoint
CATCH_ALL = "other"


@dataclass(frozen=True)
class Submitted:
    """One hash a lookup asks about. `quality` is None for a hash the caller computed itself."""

    digest: bytes
    quality: int | None = None
    displayed: bytes | None = (
        None  # an uploaded image's hash as displayed, when it differs (docs/evidence.md)
    )
    metadata: ImageMetadata | None = None  # what an uploaded image's metadata says; None for a hash


# The claim-photo findings that are reasons (policy `evidence.min_tiers`), in the order they are given.
DERIVED_FROM_LISTING = "EVIDENCE_DERIVED_FROM_LISTING"
DERIVED_FROM_SHIPPING = "EVIDENCE_DERIVED_FROM_SHIPPING"
AI_LABELLED = "EVIDENCE_AI_LABELLED"
PREDATES_DELIVERY = "EVIDENCE_PREDATES_DELIVERY"


@dataclass(frozen=True)
class Checked:
    """A lookup's evidence, checked: one answer entry per submitted hash or image, whether any matched
    confirmed forged evidence, and the photos' own findings as reason codes."""

    matches: list[dict[str, Any]]
    reused: bool
    findings: tuple[str, ...]


class Matcher:
    """The process's evidence index and the cursor into the change log it has applied up to.

    Merging the delta layer into the base is a full rebuild (about a second per million hashes), so it runs
    in a background thread on a snapshot; changes applied meanwhile are replayed onto the merged index
    (they are "these incidents' rows are now exactly this", so replaying is safe) before it is swapped in.
    """

    def __init__(self, rt: Runtime, delta_limit: int = DELTA_LIMIT) -> None:
        self._rt = rt
        self._delta_limit = delta_limit
        self._index: EvidenceIndex | None = None
        self._cursor = 0
        self._checked = 0.0
        self._lock = threading.Lock()  # held while loading, refreshing or swapping in a merge
        self._replay: list[tuple[list[bytes], EvidenceRows]] | None = None  # not None while merging
        self._merge_thread: threading.Thread | None = None

    @property
    def built(self) -> bool:
        """Whether the index was loaded: only the first lookup with evidence loads it."""
        return self._index is not None

    @property
    def merging(self) -> bool:
        return self._replay is not None

    def current(self, max_age: float = REFRESH_SECONDS) -> EvidenceIndex:
        """The index, first refreshed from the change log if the last check is older than `max_age`."""
        index = self._index
        if index is not None and time.monotonic() - self._checked < max_age:
            return index
        if index is None:
            with self._lock:
                if self._index is None:
                    self._load()
        elif self._lock.acquire(blocking=max_age <= 0):  # another thread refreshing: use what we have
            try:
                if time.monotonic() - self._checked >= max_age:
                    self._refresh()
            finally:
                self._lock.release()
        assert self._index is not None
        return self._index

    def wait_for_merge(self, timeout: float | None = None) -> None:
        thread = self._merge_thread
        if thread is not None:
            thread.join(timeout)

    # What is indexed, and where from: confirmed evidence here; `services.references` overrides these
    # three for reference photos, and shares the loading, refreshing and merging below.

    def _categories(self) -> list[str]:
        return [CATCH_ALL, *sorted(self._rt.policy.severity)]

    def _read_all(self, conn: Connection, categories: list[str]) -> tuple[int, EvidenceRows]:
        # Cursor first: a change committed between the two reads is applied again by the next refresh,
        # which is harmless (changes are applied as "replace this owner's entries").
        cursor = store.change_cursor(conn)
        return cursor, store.load_matchable(conn, categories[1:], self._rt.policy.evidence_min_quality)

    def _read_changes(
        self, conn: Connection, index: EvidenceIndex
    ) -> tuple[int, list[bytes], EvidenceRows, bool]:
        """The owners changed after the cursor, their rows now, the new cursor, and whether that was all."""
        cursor, touched, exhausted = store.changed_since(conn, self._cursor)
        if not touched:
            return cursor, [], EvidenceRows.empty(), exhausted
        rows = store.matchable_of(conn, touched, self._rt.policy.evidence_min_quality)
        current = EvidenceRows.of(
            [bytes(r["pdq"]) for r in rows],
            [r["incident_id"].bytes for r in rows],
            [int(r["platform_id"]) for r in rows],
            [index.category_code(r["category"]) for r in rows],
        )
        return cursor, [incident.bytes for incident in touched], current, exhausted

    name = "evidence"  # of its snapshots on disk

    def _snapshot_dir(self) -> Path | None:
        directory = self._rt.settings.index_dir
        return Path(directory) if directory else None

    def _meta(self) -> dict[str, Any]:
        return {"threshold": self._rt.policy.evidence_threshold, "categories": self._categories()}

    def _load(self) -> None:
        categories = self._categories()
        threshold = self._rt.policy.evidence_threshold
        directory = self._snapshot_dir()
        if directory is not None:
            # One copy per host: map the newest snapshot (building it first if there is none), then
            # apply the changes committed since it was written.
            with snapshots.locked(directory, self.name):
                found = snapshots.newest(directory, self.name, self._meta())
                if found is None:
                    with self._rt.db.transaction() as conn:
                        cursor, rows = self._read_all(conn, categories)
                    built = EvidenceIndex.build(rows, categories, threshold, self._delta_limit)
                    found = snapshots.write(directory, self.name, cursor, built.base_arrays(), self._meta())
            self._index = EvidenceIndex.from_base_arrays(
                found.arrays(), categories, threshold, self._delta_limit
            )
            self._cursor = found.cursor
            self._refresh(merge=False)
            return
        with self._rt.db.transaction() as conn:
            cursor, rows = self._read_all(conn, categories)
        self._index = EvidenceIndex.build(rows, categories, threshold, self._delta_limit)
        self._cursor, self._checked = cursor, time.monotonic()

    def _refresh(self, merge: bool = True) -> None:
        index = self._index
        assert index is not None
        while True:
            with self._rt.db.transaction() as conn:
                cursor, owners, current, exhausted = self._read_changes(conn, index)
            if owners:
                index = index.with_changes(owners, current, merge=False)
                if self._replay is not None:
                    self._replay.append((owners, current))
            self._index, self._cursor = index, cursor
            if exhausted:
                break
        self._checked = time.monotonic()
        if merge and index.needs_merge and self._replay is None:
            self._replay = []
            self._merge_thread = threading.Thread(
                target=self._merge, args=(index,), name="evidence-index-merge", daemon=True
            )
            self._merge_thread.start()

    def _merge(self, snapshot: EvidenceIndex) -> None:
        if self._snapshot_dir() is not None:
            self._merge_shared(snapshot)
            return
        merged: EvidenceIndex | None = None
        try:
            merged = snapshot.merged()
        except Exception:  # the unmerged index keeps answering correctly, just a little slower
            log.exception("merging the evidence index failed")
        with self._lock:
            if merged is not None:
                for owners, current in self._replay or []:
                    merged = merged.with_changes(owners, current, merge=False)
                self._index = merged
            self._replay = None

    def _merge_shared(self, index: EvidenceIndex) -> None:
        """Merge into a new host-wide snapshot, or map the one another process wrote meanwhile. The
        cursor goes back to the snapshot's: re-applying changes is idempotent, so nothing is lost."""
        directory = self._snapshot_dir()
        assert directory is not None
        categories, threshold = self._categories(), self._rt.policy.evidence_threshold
        try:
            with self._lock:
                cursor = self._cursor  # `index` holds every change up to here
            with snapshots.locked(directory, self.name):
                found = snapshots.newest(directory, self.name, self._meta())
                if found is None or found.cursor < cursor:
                    arrays = index.merged().base_arrays()
                    found = snapshots.write(directory, self.name, cursor, arrays, self._meta())
            mapped = EvidenceIndex.from_base_arrays(found.arrays(), categories, threshold, self._delta_limit)
            with self._lock:
                self._index, self._cursor, self._checked = mapped, found.cursor, 0.0
        except Exception:  # the unmerged index keeps answering correctly
            log.exception("merging the shared evidence index failed")
        finally:
            with self._lock:
                self._replay = None


# -- lookups ---------------------------------------------------------------------------------------------


def submitted(request: Mapping[str, Any]) -> tuple[Submitted, ...]:
    """The evidence a lookup request asks about: `evidence.pdq` hashes, then any uploaded images."""
    hashes = [Submitted(bytes.fromhex(h)) for h in (request.get("evidence") or {}).get("pdq", [])]
    return (*hashes, *request.get(IMAGES_KEY, ()))


def match(rt: Runtime, asked: Sequence[Submitted]) -> list[dict[str, Any]]:
    """Per submitted hash: the best distance, the closest match's category and how many distinct
    platforms hold a match. Never a platform's name, never an incident id."""
    policy = rt.policy
    index = rt.evidence_matcher.current()
    out = []
    for item in asked:
        low = item.quality is not None and item.quality < policy.evidence_min_quality
        if low:
            found = NO_MATCH
        elif item.displayed is None:
            found = index.match(item.digest, policy.evidence_threshold, policy.severity)
        else:  # both views of an uploaded image: a match of either is a match of the image
            hits = [
                *index.hits(item.digest, policy.evidence_threshold),
                *index.hits(item.displayed, policy.evidence_threshold),
            ]
            found = summarise(hits, policy.severity)
        out.append(
            {
                "hash": item.digest.hex(),
                "displayed_hash": item.displayed.hex() if item.displayed is not None else None,
                "quality": item.quality,
                "low_quality": low,
                "matched": found.matched,
                "best_distance": found.best_distance,
                "category": found.category,
                "platforms": found.platforms,
            }
        )
    return out


def check(
    rt: Runtime, platform_id: int, asked: Sequence[Submitted], delivered_at: datetime | None = None
) -> Checked:
    """Match every submitted hash against confirmed forged evidence and registered reference photos
    (listings of every platform, the caller's own shipping photos), and read every uploaded image's
    findings: an AI label (GB 45438, C2PA, IPTC), a capture time before `delivered_at`, the editing
    software (information only). Nothing names a platform or a reference; the audit record keeps the
    findings with the answer, never the image."""
    from ledger.services.references import REASONS, derived  # references builds on this module

    matches = match(rt, asked)
    findings: list[str] = []
    for entry, reference in zip(matches, derived(rt, platform_id, asked), strict=True):
        entry["derived_from_reference"] = reference
        if reference is not None:
            findings.append(REASONS[reference["kind"]])
    for item, entry in zip(asked, matches, strict=True):
        if item.metadata is None:
            entry["findings"] = None
            continue
        meta = item.metadata
        predates = bool(meta.captured and delivered_at and meta.captured.before(delivered_at))
        entry["findings"] = {**meta.as_json(), "predates_delivery": predates}
        if meta.ai_labelled:
            findings.append(AI_LABELLED)
        if predates:
            findings.append(PREDATES_DELIVERY)
    order = (DERIVED_FROM_LISTING, DERIVED_FROM_SHIPPING, AI_LABELLED, PREDATES_DELIVERY)
    return Checked(matches, any(m["matched"] for m in matches), tuple(c for c in order if c in findings))


# -- uploads ---------------------------------------------------------------------------------------------


def hash_uploads(images: Sequence[bytes], field: str = "images") -> list[ImageHash]:
    """Hash 1 to MAX_IMAGES images; 422 naming each rejected image (`images.2`) otherwise."""
    if not images:
        raise InvalidInput("no image was uploaded", {field: ["upload 1 to 5 images"]})
    if len(images) > MAX_IMAGES:
        raise InvalidInput(
            f"at most {MAX_IMAGES} images per request", {field: [f"at most {MAX_IMAGES} images"]}
        )
    hashed: list[ImageHash] = []
    errors: dict[str, list[str]] = {}
    for position, result in enumerate(hash_images(list(images), MAX_IMAGE_BYTES)):
        if isinstance(result, ImageRejected):
            errors[f"{field}.{position}"] = [result.reason]
        else:
            hashed.append(result)
    if errors:
        raise InvalidInput("an uploaded image was rejected; nothing was stored", errors)
    return hashed


def submitted_images(images: Sequence[bytes], field: str = "images") -> tuple[Submitted, ...]:
    """Hash each image and read its metadata (labels, capture time, software), in memory."""
    hashed = hash_uploads(images, field)  # every image is a usable one past this point
    return tuple(
        Submitted(
            h.digest, h.quality, bytes.fromhex(h.displayed) if h.displayed else None, read_metadata(image)
        )
        for h, image in zip(hashed, images, strict=True)
    )


def require_own_incident(rt: Runtime, principal: Principal, incident_id: UUID) -> None:
    """404 unless the incident exists and was reported by this platform (existence is not revealed)."""
    with rt.db.transaction() as conn:
        if incident_store.get_for_platform(conn, incident_id, principal.platform_id) is None:
            raise NotFound("no such incident")


def add_images(
    rt: Runtime, principal: Principal, incident_id: UUID, images: Sequence[bytes]
) -> tuple[bool, dict[str, Any]]:
    """Hash the images and add their hashes to one of the platform's own incidents.

    Returns whether something was added (False when every hash was already there: a safe retry) and the
    body; the API picks 201 or 200 from it. The addition is a
    `evidence_added` event (a log leaf), like the report itself."""
    hashed = hash_uploads(images)
    quality: dict[bytes, int] = {}
    for h in hashed:
        for view in h.digests:  # as stored, and as displayed when it differs: both are matched
            quality.setdefault(view, h.quality)
    min_quality = rt.policy.evidence_min_quality
    with rt.db.transaction() as conn:
        row = incident_store.get_for_platform(conn, incident_id, principal.platform_id, lock=True)
        if row is None:
            raise NotFound("no such incident")
        if row["status"] in ("retracted", "expired"):
            raise Conflict(f"the incident is {row['status']}; evidence can no longer be added")
        stored = {bytes(r["pdq"]): int(r["quality"]) for r in store.stored_of(conn, incident_id)}
        new = sorted(d for d in quality if d not in stored)
        if len(stored) + len(new) > MAX_PER_INCIDENT:
            raise InvalidInput(
                "too much evidence for one incident",
                {"images": [f"an incident holds at most {MAX_PER_INCIDENT} evidence hashes"]},
            )
        if new:
            incident_store.insert_evidence(conn, [(incident_id, d, quality[d]) for d in new])
            digest = hashlib.sha256(b"".join(new)).hexdigest()
            event_store.append(
                conn,
                [
                    NewEvent(
                        "evidence_added",
                        incident_id,
                        {"incident_id": str(incident_id), "evidence": digest, "count": len(new)},
                        principal.platform_id,
                    )
                ],
            )
    body = {
        "incident_id": str(incident_id),
        "evidence": [
            {
                "hash": h.hex,
                "displayed_hash": h.displayed,
                "quality": h.quality,
                "low_quality": h.quality < min_quality,
                "added": any(d in new for d in h.digests),
            }
            for h in hashed
        ],
        "stored": len(stored) + len(new),
    }
    return bool(new), body
