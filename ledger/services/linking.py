"""Linking: giving every incident a subject, and merging the subjects its strong identifiers connect.

The rule is `ledger/domain/linking.py`'s, applied in the database (`storage.subjects`) under an advisory
lock, so concurrent links cannot split a consumer in two. Linking only touches incidents whose subject is
still unknown, so it is idempotent. The outbox work (ledger/services/outbox_work.py) links a report's
incidents before rescoring them; `link_pending` catches any that never got a subject.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from ledger.identity import STRONG_TYPES
from ledger.services.runtime import Runtime
from ledger.storage import incidents as incident_store
from ledger.storage import subjects


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


def link_pending(rt: Runtime, limit: int = 5000) -> set[int]:
    """Link incidents that never got a subject (e.g. reports accepted while the broker was down)."""
    with rt.db.transaction() as conn:
        ids = incident_store.unlinked(conn, limit)
    return link_incidents(rt, ids) if ids else set()
