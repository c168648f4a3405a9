"""Rescore benchmark: a full recompute of every subject, as after a policy change.

Loads synthetic data with COPY (default 1,000,000 incidents over 300,000 subjects, already linked; see
benchmarks/_synth.py), then times `ledger.services.scoring.rescore_all`, the body of
`ledger rescore --all`: chunks of 1,000 subjects, each read in one REPEATABLE READ transaction, scored by
the pure model, upserted into risk_scores and written to the Redis cache.

Baseline, same run and data: the same chunked reads (`facts_for_subjects` for the same chunks) with no
scoring and no writes, the floor set by PostgreSQL and the driver.
Target (2 cores): the full recompute in <= 5 minutes.

    .venv/bin/python benchmarks/rescore.py --dry-run      # 50,000 incidents over 15,000 subjects
    .venv/bin/python benchmarks/rescore.py                # the full size
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
import redis

from benchmarks import _common as c
from benchmarks import _synth


def read_only_pass(rt: object, chunk: int) -> tuple[int, float]:
    """The baseline: read the same facts in the same chunks, score nothing, write nothing."""
    from ledger.storage import incidents as incident_store
    from ledger.storage import subjects

    started = time.perf_counter()
    rows, after = 0, 0
    while True:
        with rt.db.transaction(isolation="REPEATABLE READ") as conn:  # type: ignore[attr-defined]
            ids = subjects.all_subject_ids(conn, after, chunk)
            if not ids:
                break
            rows += len(incident_store.facts_for_subjects(conn, ids))
        after = ids[-1]
    return rows, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--incidents", type=int, default=1_000_000)
    parser.add_argument("--subjects", type=int, default=300_000)
    parser.add_argument("--dry-run", action="store_true", help="50,000 incidents over 15,000 subjects")
    parser.add_argument("--database", default="bench_rescore")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    if args.dry_run:
        args.incidents, args.subjects = 50_000, 15_000

    from ledger.config import Settings
    from ledger.services import scoring
    from ledger.services.runtime import Runtime

    c.say(f"rescore benchmark: {args.incidents} incidents over {args.subjects} subjects; {c.load()}")
    c.flush_redis()
    with c.bench_database(args.database, keep=args.keep) as url:
        started = time.perf_counter()
        counts = _synth.load(url, args.incidents, args.subjects)
        c.say(f"loaded {counts} in {time.perf_counter() - started:.0f} s")
        rt = Runtime(
            Settings(
                database_url=url, redis_url=c.REDIS_URL, identity_key=c.IDENTITY_KEY, environment="production"
            )
        )
        try:
            rows, base_seconds = read_only_pass(rt, scoring.CHUNK)
            c.say(
                f"baseline  chunked reads only: {rows} incident rows in {base_seconds:.1f} s "
                f"({rows / base_seconds:.0f} incidents/s); {c.load()}"
            )
            c.say(f"  ({c.load()} before rescore)")
            started = time.perf_counter()
            rescored = scoring.rescore_all(rt)
            seconds = time.perf_counter() - started
        finally:
            rt.close()
        with psycopg.connect(url) as conn:
            stored = conn.execute("SELECT count(*) FROM risk_scores").fetchone()[0]  # type: ignore[index]
            tiers: dict[str, int] = dict(
                conn.execute("SELECT tier, count(*) FROM risk_scores GROUP BY tier").fetchall()
            )
        cached = redis.Redis.from_url(c.REDIS_URL).dbsize()
    c.flush_redis()

    rate = args.incidents / seconds
    ok = seconds <= 300 and stored == args.subjects
    c.say(
        f"rescore_all: {rescored} subjects, {args.incidents} incidents in {seconds:.1f} s = {rate:.0f} incidents/s "
        f"({rescored / seconds:.0f} subjects/s); {seconds / base_seconds:.1f}x the read-only baseline"
    )
    c.say(f"risk_scores rows {stored}; tiers {tiers}; Redis keys written {cached}")
    c.say(
        f"target: full recompute <= 300 s: {'MET' if seconds <= 300 else 'MISSED'}   ({c.load()} at the end)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
