"""An index mapped from a snapshot on disk answers exactly like the index it was written from."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.domain.pdq_index import EvidenceIndex, EvidenceRows
from ledger.storage import index_snapshots

CATEGORIES = ["other", "listing", "shipping"]


@settings(max_examples=25, deadline=None)
@given(
    size=st.sampled_from([0, 5, 3000]),
    seed=st.integers(0, 2**32 - 1),
    flips=st.lists(st.integers(0, 40), min_size=1, max_size=6),
)
def test_a_mapped_snapshot_answers_like_the_built_index(size: int, seed: int, flips: list[int]) -> None:
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 256, (size, 32), dtype=np.uint8)
    rows = EvidenceRows.of(
        [h.tobytes() for h in hashes],
        [rng.bytes(16) for _ in range(size)],
        rng.integers(1, 4, size).tolist(),
        rng.integers(1, 3, size).tolist(),
    )
    built = EvidenceIndex.build(rows, CATEGORIES, 31)
    with tempfile.TemporaryDirectory() as directory:
        written = index_snapshots.write(Path(directory), "t", 7, built.base_arrays(), {"threshold": 31})
        found = index_snapshots.newest(Path(directory), "t", {"threshold": 31})
        assert found is not None
        assert found.cursor == 7
        assert found.path == written.path
        mapped = EvidenceIndex.from_base_arrays(found.arrays(), CATEGORIES, 31)
        queries = [
            hashes[i % size].copy() if size else rng.integers(0, 256, 32, dtype=np.uint8) for i in range(3)
        ]
        for query, distance in zip(queries, flips, strict=False):
            bits = np.unpackbits(query)
            bits[rng.choice(256, distance, replace=False)] ^= 1
            q = np.packbits(bits).tobytes()
            found_hits = [(h.distance, h.platform, h.category) for h in mapped.hits(q)]
            assert sorted(found_hits) == sorted((h.distance, h.platform, h.category) for h in built.hits(q))
        # Removals after the snapshot live in the process, never in the shared file.
        if size:
            owner = rows.owners[:1]
            changed = mapped.with_changes([owner.tobytes()], EvidenceRows.empty(), merge=False)
            assert len(changed) == size - 1
            assert len(mapped) == size


def test_only_a_snapshot_with_matching_meta_is_used(tmp_path: Path) -> None:
    rows = EvidenceRows.empty()
    arrays = EvidenceIndex.build(rows, CATEGORIES, 31).base_arrays()
    index_snapshots.write(tmp_path, "t", 3, arrays, {"threshold": 31})
    index_snapshots.write(tmp_path, "t", 9, arrays, {"threshold": 40})
    found = index_snapshots.newest(tmp_path, "t", {"threshold": 31})
    assert found is not None
    assert found.cursor == 3
    for cursor in (10, 11, 12):
        index_snapshots.write(tmp_path, "t", cursor, arrays, {"threshold": 31})
    assert sorted(int(p.name.split("-")[1]) for p in tmp_path.glob("t-*")) == [11, 12]  # two are kept
