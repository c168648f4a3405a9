"""One copy of each match index per host: API processes map a snapshot on disk (LEDGER_INDEX_DIR).

Two Runtimes stand for two API processes. They must share one snapshot file (not build two), answer
exactly like the in-memory index, see each other's changes through the change log, and keep them across
a merge that writes a new snapshot.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from ledger.config import Settings
from ledger.services import references
from ledger.services.evidence import Matcher
from ledger.services.platforms import Principal
from ledger.services.references import ReferenceMatcher
from ledger.services.runtime import Runtime
from tests.support import Member

H = [bytes([n]) * 32 for n in range(1, 8)]


def principal_of(rt: Runtime, member: Member) -> Principal:
    with rt.db.transaction() as conn:
        row = conn.execute("SELECT id FROM platforms WHERE slug = %s", (member.slug,)).fetchone()
    assert row is not None
    return Principal(int(row["id"]), member.slug, member.key_id, frozenset({"report"}), 100, 100)


def listing(reference: str, *hashes: bytes) -> dict[str, Any]:
    return {"kind": "listing", "reference": reference, "pdq": [h.hex() for h in hashes]}


def test_processes_share_one_snapshot_and_each_others_changes(
    settings: Settings, rt: Runtime, alpha: Member, tmp_path: Path
) -> None:
    shared = dataclasses.replace(settings, index_dir=str(tmp_path))
    first, second = Runtime(shared), Runtime(shared)
    try:
        who = principal_of(rt, alpha)
        references.register(rt, who, [listing("sku-1", H[0], H[1])])
        a = ReferenceMatcher(first, delta_limit=2)
        b = ReferenceMatcher(second, delta_limit=2)
        index_a, index_b = a.current(), b.current()
        snapshots = sorted(tmp_path.glob("references-*"))
        assert len(snapshots) == 1  # the second process mapped the first one's snapshot
        assert isinstance(index_b.base.rows.hashes, np.memmap)
        assert [len(index_a), len(index_b)] == [2, 2]
        assert index_b.match(H[0]).best_distance == 0
        # A change made after the snapshot reaches both through the change log.
        references.register(rt, who, [listing("sku-2", H[2])])
        references.remove(rt, who, [{"kind": "listing", "reference": "sku-1"}])
        for matcher in (a, b):
            now = matcher.current(max_age=0)
            assert not now.match(H[0]).matched
            assert now.match(H[2]).best_distance == 0
        # Past the delta limit a merge writes a new snapshot; the other process maps it, no rebuild.
        references.register(rt, who, [listing("sku-3", H[3], H[4], H[5])])
        a.current(max_age=0)
        a.wait_for_merge(30)
        assert len(sorted(tmp_path.glob("references-*"))) == 2
        b.current(max_age=0)
        b.wait_for_merge(30)
        assert len(sorted(tmp_path.glob("references-*"))) == 2  # b found a's snapshot current enough
        for matcher in (a, b):
            final = matcher.current(max_age=0)
            assert sorted(h for h in H if final.match(h).matched) == [H[2], H[3], H[4], H[5]]
    finally:
        first.close()
        second.close()


def test_the_evidence_index_shares_its_snapshot_too(settings: Settings, app: Any, tmp_path: Path) -> None:
    shared = dataclasses.replace(settings, index_dir=str(tmp_path))
    first, second = Runtime(shared), Runtime(shared)
    try:
        assert len(Matcher(first).current()) == 0
        assert len(Matcher(second).current()) == 0
        assert len(list(tmp_path.glob("evidence-*"))) == 1
    finally:
        first.close()
        second.close()
