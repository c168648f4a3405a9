"""Evidence index benchmark: exact PDQ matching within 31 bits over a million hashes.

Data: 1,000,000 random 256-bit PDQ hashes (each its own incident, on one of 8 platforms), plus planted
near-duplicates of the queries at every distance 0..31, half with their flipped bits spread evenly over
the 16 chunks (the worst case for multi-index hashing: all chunks but one differ in 2 bits), half at
random; some queries get a second plant at 32..40 bits (must not match), a quarter get none (the common
honest-photo case). Random 256-bit hashes are the hardest case for the index: real PDQ hashes cluster,
and clusters only help.

Printed, with the machine load next to them:
  * build time and memory of `ledger.domain.pdq_index.EvidenceIndex` (numpy multi-index hashing);
  * p50 / p99 query time per hash, for the full path a lookup uses (`EvidenceIndex.match`);
  * recall against brute force (every row within 31 bits, by a full scan): must be 100 %, with no extras;
  * the cost of updates (a new incident's hashes, a retraction) and of merging the delta layer;
  * with --compare (faiss-cpu installed): faiss IndexBinaryMultiHash, IndexBinaryFlat and IndexBinaryHNSW
    on the same data, single-threaded like one API request;
  * with --postgres: the cold start of an API process, loading every hash from PostgreSQL.
Targets: p99 <= 5 ms per query at 1,000,000 hashes; recall 100 %; memory <= 200 MB.

    .venv/bin/python benchmarks/evidence.py --dry-run        # 100,000 hashes, quick
    .venv/bin/python benchmarks/evidence.py --compare --postgres
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common as c
from ledger.domain.pdq_index import (
    CHUNK_BITS,
    CHUNKS,
    EvidenceIndex,
    EvidenceRows,
    brute_force,
)
from ledger.domain.policy import load_policy

THRESHOLD = 31
PLATFORMS = 8
TARGET_P99_MS = 5.0
TARGET_MB = 200.0


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def flipped(digest: np.ndarray, bits: Sequence[int]) -> np.ndarray:
    unpacked = np.unpackbits(digest)
    unpacked[list(bits)] ^= 1
    return np.packbits(unpacked)


def spread_bits(distance: int, rng: np.random.Generator) -> list[int]:
    per_chunk = [distance // CHUNKS + (1 if c < distance % CHUNKS else 0) for c in range(CHUNKS)]
    order = rng.permutation(CHUNKS)
    bits: list[int] = []
    for chunk, count in zip(order.tolist(), per_chunk, strict=True):
        bits.extend(chunk * CHUNK_BITS + int(b) for b in rng.choice(CHUNK_BITS, count, replace=False))
    return bits


def dataset(size: int, queries: int, seed: int) -> tuple[EvidenceRows, np.ndarray, list[int]]:
    """The indexed rows, the query hashes, and the planted distance of each query (-1 when none)."""
    rng = np.random.default_rng(seed)
    query_hashes = rng.integers(0, 256, (queries, 32), dtype=np.uint8)
    planted_rows, planted_distance = [], []
    for i in range(queries):
        if i % 4 == 3:
            planted_distance.append(-1)
            continue
        d = sum(1 for x in planted_distance if x >= 0) % (THRESHOLD + 1)  # cycles through 0..31
        bits = spread_bits(d, rng) if i % 2 else rng.choice(256, d, replace=False).tolist()
        planted_rows.append(flipped(query_hashes[i], bits))
        planted_distance.append(d)
        if i % 8 == 0:  # just outside the threshold: must not be returned
            planted_rows.append(flipped(query_hashes[i], spread_bits(32 + i % 9, rng)))
    hashes = np.concatenate([rng.integers(0, 256, (size, 32), dtype=np.uint8), np.stack(planted_rows)])
    n = len(hashes)
    owners = np.frombuffer(rng.bytes(16 * n), dtype="V16").copy()
    rows = EvidenceRows(
        hashes=hashes,
        owners=owners,
        platforms=rng.integers(1, PLATFORMS + 1, n).astype(np.int64),
        categories=rng.integers(1, 7, n).astype(np.int16),
    )
    return rows, query_hashes, planted_distance


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def latency_line(name: str, seconds: Sequence[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    return (
        f"{name:<44} p50 {c.percentile(ms, 50):7.3f} ms  p99 {c.percentile(ms, 99):7.3f} ms  "
        f"max {ms[-1]:7.3f} ms  ({len(ms)} queries)"
    )


def measure_index(rows: EvidenceRows, query_hashes: np.ndarray, planted: list[int]) -> dict[str, float]:
    policy = load_policy()
    categories = ["other", *sorted(policy.severity)]
    gc.collect()
    before = rss_mb()
    tracemalloc.start()
    build_s, index = timed(lambda: EvidenceIndex.build(rows, categories, THRESHOLD))
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    gc.collect()
    after = rss_mb()
    c.say(f"index build: {build_s:.2f} s for {len(index):,} hashes; {c.load()}")
    c.say(
        f"memory: index arrays {index.nbytes / 2**20:.1f} MB; allocated by the build {current / 2**20:.1f} MB "
        f"(peak {peak / 2**20:.1f} MB); process RSS +{after - before:.1f} MB "
        f"(the input rows, {sum(a.nbytes for a in vars(rows).values()) / 2**20:.1f} MB, are copied once)"
    )

    queries = [q.tobytes() for q in query_hashes]
    for q in queries[:20]:  # warm the caches and numpy's dispatch
        index.match(q, THRESHOLD, policy.severity)
    match_times = [timed(lambda q=q: index.match(q, THRESHOLD, policy.severity))[0] for q in queries]
    search_times = [timed(lambda q=q: index.base.index.search(q, THRESHOLD))[0] for q in queries]
    c.say(latency_line("EvidenceIndex.match (the lookup path)", match_times))
    c.say(latency_line("MultiIndex.search (candidates + verify)", search_times))
    lookups = [queries[i : i + 25] for i in range(0, len(queries) - 24, 25)]
    batch_times = [timed(lambda b=b: [index.match(q, THRESHOLD) for q in b])[0] for b in lookups]
    c.say(latency_line("a lookup with 25 hashes (the maximum)", batch_times).replace("queries", "lookups"))

    # Recall: the index against a full scan of the same rows, query by query.
    layer_rows = index.base.rows
    truth_pairs = found_pairs = extra = distance_mismatch = summary_mismatch = 0
    per_distance: dict[int, list[int]] = {}
    scan_times = []
    for q, d in zip(queries, planted, strict=True):
        scan_s, (truth, truth_d) = timed(lambda q=q: brute_force(layer_rows.hashes, q, THRESHOLD))
        scan_times.append(scan_s)
        got, got_d = index.base.index.search(q, THRESHOLD)
        truth_set, got_set = set(truth.tolist()), set(got.tolist())
        truth_pairs += len(truth_set)
        found_pairs += len(truth_set & got_set)
        extra += len(got_set - truth_set)
        distance_mismatch += int(not np.array_equal(truth_d, got_d) and truth_set == got_set)
        found = index.match(q, THRESHOLD, policy.severity)
        want_best = int(truth_d.min()) if truth.size else None
        want_platforms = len(set(layer_rows.platforms[truth].tolist()))
        summary_mismatch += int((found.best_distance, found.platforms) != (want_best, want_platforms))
        if d >= 0:  # the plant (or something closer) is what match() reports
            per_distance.setdefault(d, []).append(
                int(found.best_distance is not None and found.best_distance <= d)
            )
    recall = found_pairs / truth_pairs if truth_pairs else 1.0
    c.say(latency_line("brute force, numpy full scan (reference)", scan_times))
    c.say(
        f"recall vs brute force: {recall:.2%} ({found_pairs}/{truth_pairs} rows within {THRESHOLD} bits); "
        f"extra rows {extra}; distance mismatches {distance_mismatch}; match() summary mismatches "
        f"{summary_mismatch}; planted near-duplicates found at every distance 0..31: "
        f"{all(all(v) for v in per_distance.values()) and len(per_distance) == THRESHOLD + 1}"
    )

    # Updates: what a refresh applies when evidence is reported or an incident retracted.
    rng = np.random.default_rng(99)
    owner = uuid.uuid4().bytes
    new = EvidenceRows.of([rng.bytes(32) for _ in range(5)], [owner] * 5, [1] * 5, [1] * 5)
    add_s, grown = timed(lambda: index.with_changes([owner], new))
    retract_s, _ = timed(lambda: grown.with_changes([owner], EvidenceRows.empty()))
    some_owner = bytes(layer_rows.owners[len(layer_rows) // 2].tobytes())
    remove_s, _ = timed(lambda: index.with_changes([some_owner], EvidenceRows.empty()))
    bulk = EvidenceRows(
        rng.integers(0, 256, (index.delta_limit + 1, 32), dtype=np.uint8),
        np.frombuffer(rng.bytes(16 * (index.delta_limit + 1)), dtype="V16").copy(),
        np.ones(index.delta_limit + 1, dtype=np.int64),
        np.ones(index.delta_limit + 1, dtype=np.int16),
    )
    merge_s, merged = timed(lambda: index.with_changes([], bulk))
    c.say(
        f"updates: add an incident's 5 hashes {add_s * 1000:.2f} ms; retract it {retract_s * 1000:.2f} ms; "
        f"retract a base incident {remove_s * 1000:.2f} ms; merge a full delta ({index.delta_limit:,} hashes) "
        f"into the base {merge_s:.2f} s (once per {index.delta_limit:,} new hashes per process, in a "
        "background thread)"
    )
    assert len(merged) == len(index) + index.delta_limit + 1
    p99 = c.percentile(sorted(t * 1000 for t in match_times), 99)
    return {"p99_ms": p99, "recall": recall, "memory_mb": index.nbytes / 2**20, "build_s": build_s}


def compare_faiss(rows: EvidenceRows, query_hashes: np.ndarray, size: int, hnsw_size: int) -> None:
    try:
        import faiss
    except ImportError:
        c.say("faiss-cpu is not installed: skipping the comparison (pip install faiss-cpu)")
        return
    faiss.omp_set_num_threads(1)  # one API request runs on one thread
    hashes = np.ascontiguousarray(rows.hashes)
    queries = [query_hashes[i : i + 1] for i in range(len(query_hashes))]
    truth = [set(brute_force(hashes, q.tobytes(), THRESHOLD)[0].tolist()) for q in query_hashes]
    total = sum(len(t) for t in truth)

    build_s, multi = timed(lambda: _faiss_add(faiss.IndexBinaryMultiHash(256, CHUNKS, CHUNK_BITS), hashes))
    multi.nflip = 1  # probe radius 1 per 16-bit table: exact below 32 bits, like ours
    found, times = 0, []
    for q, want in zip(queries, truth, strict=True):
        seconds, (lims, _, labels) = timed(lambda q=q: multi.range_search(q, THRESHOLD + 1))
        times.append(seconds)
        found += len(want & set(labels[lims[0] : lims[1]].tolist()))
    c.say(
        f"faiss IndexBinaryMultiHash(16 x 16 bits, nflip=1): build {build_s:.2f} s; recall {found / total:.2%}"
    )
    c.say(latency_line("  range_search", times))

    build_s, flat = timed(lambda: _faiss_add(faiss.IndexBinaryFlat(256), hashes))
    times = [timed(lambda q=q: flat.range_search(q, THRESHOLD + 1))[0] for q in queries[:300]]
    c.say(f"faiss IndexBinaryFlat (exact scan): build {build_s:.2f} s; memory {hashes.nbytes / 2**20:.0f} MB")
    c.say(latency_line("  range_search", times))

    sub = np.concatenate([hashes[: hnsw_size - (len(hashes) - size)], hashes[size:]])  # keep the plants
    sub_queries = query_hashes[: min(len(query_hashes), 300)]
    sub_truth = [set(brute_force(sub, q.tobytes(), THRESHOLD)[0].tolist()) for q in sub_queries]
    planted_in_sub = sum(len(t) for t in sub_truth)
    build_s, hnsw = timed(lambda: _faiss_add(faiss.IndexBinaryHNSW(256, 16), sub))
    c.say(f"faiss IndexBinaryHNSW(M=16) on the first {hnsw_size:,} rows: build {build_s:.1f} s")
    for ef in (16, 128):
        hnsw.hnsw.efSearch = ef
        found, times = 0, []
        for q, want in zip(sub_queries, sub_truth, strict=True):
            seconds, (_, labels) = timed(lambda q=q: hnsw.search(q[None, :], 10))
            times.append(seconds)
            found += len(want & set(labels[0].tolist()))
        recall = found / planted_in_sub if planted_in_sub else float("nan")
        c.say(latency_line(f"  efSearch={ef}, k=10: recall {recall:.1%}", times))


def _faiss_add(index: Any, hashes: np.ndarray) -> Any:
    index.add(hashes)
    return index


def measure_postgres(rows: EvidenceRows) -> None:
    """The cold start of an API process: stream every hash out of PostgreSQL and build the index."""
    import psycopg

    from ledger.config import Settings
    from ledger.services.evidence import Matcher
    from ledger.services.runtime import Runtime

    n = len(rows)
    with c.bench_database("bench_evidence") as url:
        with psycopg.connect(url) as conn:
            conn.execute("SET session_replication_role = replica")  # a bulk import: no per-row triggers
            platform_ids = [
                conn.execute(
                    "INSERT INTO platforms (slug, name) VALUES (%s, %s) RETURNING id", (f"p{p}", f"P{p}")
                ).fetchone()[0]  # type: ignore[index]
                for p in range(PLATFORMS)
            ]
            started = time.perf_counter()
            owners = [uuid.UUID(bytes=bytes(o.tobytes())) for o in rows.owners]
            with conn.cursor().copy(
                "COPY incidents (id, platform_id, external_id, request_digest, category, confirmation, "
                "amount_minor, currency, occurred_at) FROM STDIN"
            ) as copy:
                for i, owner in enumerate(owners):
                    copy.write_row(
                        (owner, platform_ids[i % PLATFORMS], f"x{i}", "d", "fabricated_evidence",
                         "platform_review", 100, "CNY", "2026-01-01T00:00:00Z")
                    )  # fmt: skip
            with conn.cursor().copy("COPY incident_evidence (incident_id, pdq, quality) FROM STDIN") as copy:
                for owner, digest in zip(owners, rows.hashes, strict=True):
                    copy.write_row((owner, digest.tobytes(), 90))
            conn.commit()
        c.say(f"postgres: loaded {n:,} incidents with one hash each in {time.perf_counter() - started:.1f} s")
        rt = Runtime(
            Settings(database_url=url, redis_url=c.REDIS_URL, identity_key=c.IDENTITY_KEY, log_key=c.LOG_KEY)
        )
        matcher = Matcher(rt)
        load_s, index = timed(matcher.current)
        c.say(
            f"cold start (COPY BINARY -> numpy -> index): {load_s:.2f} s for {len(index):,} hashes; {c.load()}"
        )
        # A new report's hashes, written through the triggers, then picked up by the refresh.
        with psycopg.connect(url) as conn:
            incident = uuid.uuid4()
            conn.execute(
                """INSERT INTO incidents (id, platform_id, external_id, request_digest, category, confirmation,
                                          amount_minor, currency, occurred_at)
                   VALUES (%s, %s, 'fresh', 'd', 'fabricated_evidence', 'platform_review', 100, 'CNY', now())""",
                (incident, platform_ids[0]),
            )
            conn.execute(
                "INSERT INTO incident_evidence (incident_id, pdq, quality) VALUES (%s, %s, 90)",
                (incident, rows.hashes[0].tobytes()),
            )
        refresh_s, index = timed(lambda: matcher.current(max_age=0))
        c.say(
            f"refresh applying one new incident: {refresh_s * 1000:.1f} ms; index now {len(index):,} hashes"
        )
        idle_s, _ = timed(lambda: matcher.current(max_age=0))
        c.say(f"refresh with nothing new (once a second, on a lookup with evidence): {idle_s * 1000:.2f} ms")
        rt.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=1_000_000, help="random hashes to index")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--dry-run", action="store_true", help="100,000 hashes and 200 queries")
    parser.add_argument("--compare", action="store_true", help="also measure faiss-cpu binary indexes")
    parser.add_argument("--hnsw-size", type=int, default=100_000, help="rows for the (slow to build) HNSW")
    parser.add_argument("--postgres", action="store_true", help="also measure the cold load from PostgreSQL")
    parser.add_argument(
        "--claims",
        action="store_true",
        help="the claim check instead (benchmarks/evidence_claims.py): derivation, AI labels, a 12 MP JPEG end "
        "to end, and the shared reference index at --claims-size hashes across --processes processes",
    )
    parser.add_argument("--claims-size", type=int, default=10_000_000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--listings", type=int, default=100)
    args = parser.parse_args()
    if args.dry_run:
        args.size, args.queries, args.hnsw_size = 100_000, 200, 20_000
        args.claims_size, args.listings = 200_000, 10
    if args.claims:
        from benchmarks import evidence_claims

        evidence_claims.run(
            args.claims_size, args.processes, args.listings, runs=10 if args.dry_run else 30, seed=args.seed
        )
        c.say(f"after: {c.load()}")
        return 0
    c.say(
        f"evidence index benchmark: {args.size:,} random hashes + planted near-duplicates, {args.queries} queries"
    )
    c.say(f"numpy {np.__version__}; {c.load()}")
    _, (rows, query_hashes, planted) = timed(lambda: dataset(args.size, args.queries, args.seed))
    figures = measure_index(rows, query_hashes, planted)
    if args.compare:
        compare_faiss(rows, query_hashes, args.size, args.hnsw_size)
    if args.postgres:
        measure_postgres(rows)
    ok = figures["p99_ms"] <= TARGET_P99_MS and figures["recall"] == 1.0 and figures["memory_mb"] <= TARGET_MB
    c.say(
        f"targets: p99 {figures['p99_ms']:.2f} ms <= {TARGET_P99_MS} ms, recall {figures['recall']:.2%} = 100%, "
        f"memory {figures['memory_mb']:.0f} MB <= {TARGET_MB:.0f} MB: {'PASS' if ok else 'FAIL'}"
    )
    c.say(f"after: {c.load()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
