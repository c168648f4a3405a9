"""Inclusion proofs served from a large log (issue 13's target: p99 <= 5 ms per request at 10,000,000 leaves).

Builds a log of --leaves leaves the way production does (synthetic `reported` events recorded through the
real `ledger_append`, so each has its pending leaf, then integrated by the sequencer's own
`integrate_now`, in batches of --batch), or reuses one kept by an earlier run (--reuse). Then it serves
the database with `ledger serve` (the default server configuration) and prints, from one keep-alive
client, p50/p99 of GET /v1/log/inclusion by random index and by leaf hash, each next to GET /healthz
measured alternately on the same server and connection (the baseline: the same request cycle with no
proof). It also prints the size of the tree's tables.

A 10,000,000-leaf database takes about 5 GB and, on 2 shared cores, 10 to 20 minutes to build; it is
dropped at the end unless --keep.

    .venv/bin/python benchmarks/log_scale.py --leaves 10000000 --database bench_log_scale [--keep|--reuse]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c
from transparency import CHUNK, Client, percentile, record

from ledger.config import Settings
from ledger.services import sequencer
from ledger.services.runtime import Runtime


def build(url: str, env: dict[str, str], leaves: int, batch: int) -> None:
    settings = Settings(
        database_url=url, redis_url=c.REDIS_URL, identity_key=c.IDENTITY_KEY, log_key=c.LOG_KEY
    ).require_services()
    rt = Runtime(settings)
    try:
        c.member(env, "bench-log")
        with psycopg.connect(url) as conn:
            platform = int(conn.execute("SELECT id FROM platforms WHERE slug = 'bench-log'").fetchone()[0])  # type: ignore[index]
        done, t_record, t_seq = 0, 0.0, 0.0
        step = max(CHUNK, 500_000)
        while done < leaves:
            n = min(step, leaves - done)
            t0 = time.perf_counter()
            record(url, platform, n, start=done)
            t1 = time.perf_counter()
            added = sequencer.integrate_now(rt, batch)
            t2 = time.perf_counter()
            t_record, t_seq, done = t_record + t1 - t0, t_seq + t2 - t1, done + added
            c.say(
                f"  {done:,} leaves: recorded {n / (t1 - t0):,.0f}/s, integrated {added / (t2 - t1):,.0f}/s "
                f"({c.load()})"
            )
        c.say(
            f"built {done:,} leaves: recording {t_record:.0f} s, integration {t_seq:.0f} s "
            f"= {done / t_seq:,.0f} leaves/s in batches of {batch:,}"
        )
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE log_pending")
            conn.execute("ANALYZE log_leaves")
            conn.execute("ANALYZE log_nodes")
    finally:
        rt.close()


def measure(url: str, env: dict[str, str], requests: int, config: c.ServerConfig) -> None:
    with psycopg.connect(url) as conn:
        size = int(conn.execute("SELECT max(tree_size) FROM log_checkpoints").fetchone()[0])  # type: ignore[index]
        sizes = conn.execute(
            """SELECT pg_size_pretty(pg_total_relation_size('log_leaves')),
                      pg_size_pretty(pg_total_relation_size('log_nodes')),
                      (SELECT count(*) FROM log_nodes)"""
        ).fetchone()
        assert sizes is not None
        rng = random.Random(11)
        picks = [rng.randrange(size) for _ in range(requests)]
        hashes = {
            int(r[0]): bytes(r[1]).hex()
            for r in conn.execute("SELECT idx, leaf_hash FROM log_leaves WHERE idx = ANY(%s)", (picks,))
        }
    c.say(f"tree of {size:,} leaves: log_leaves {sizes[0]}, log_nodes {sizes[1]} ({sizes[2]:,} rows)")
    key = c.ledger_cli(env, "keys", "rotate", "bench-log")["key"]
    with c.ledger_server(env, config) as port:
        client = Client(port, key)
        for i in range(200):  # warm the workers' key caches and connection pools
            client.get(f"/v1/log/inclusion?index={picks[i % len(picks)]}")
            client.get("/healthz")
        by_index, by_hash, health = [], [], []
        c.say(f"  ({c.load()} before the proofs, {config})")
        for index in picks:
            status, took = client.get(f"/v1/log/inclusion?index={index}")
            assert status == 200, status
            by_index.append(took)
            status, took = client.get(f"/v1/log/inclusion?leaf_hash={hashes[index]}")
            assert status == 200, status
            by_hash.append(took)
            health.append(client.get("/healthz")[1])
        for name, values in (
            ("inclusion proof by index", by_index),
            ("inclusion proof by leaf hash", by_hash),
            ("baseline GET /healthz", health),
        ):
            c.say(
                f"{name:<30} p50 {statistics.median(values) * 1000:6.2f} ms  p99 "
                f"{percentile(values, 0.99) * 1000:6.2f} ms  ({len(values):,} requests, one keep-alive client)"
            )
        c.say(f"  ({c.load()} after; target p99 <= 5 ms at 10,000,000 leaves)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leaves", type=int, default=10_000_000)
    parser.add_argument("--batch", type=int, default=20_000, help="sequencer batch while building")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--database", default="bench_log_scale")
    parser.add_argument("--config", default=c.DEFAULT_SERVER)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--reuse", action="store_true", help="measure a database kept by an earlier run")
    args = parser.parse_args()
    c.say(f"log at scale: {args.leaves:,} leaves; {c.load()}")
    if args.reuse:
        url = c.db_url(args.database)
        measure(url, c.ledger_env(url), args.requests, c.parse_config(args.config))
        if not args.keep:
            with psycopg.connect(c.PG_SERVER, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        return
    with c.bench_database(args.database, keep=args.keep) as url:
        env = c.ledger_env(url)
        build(url, env, args.leaves, args.batch)
        measure(url, env, args.requests, c.parse_config(args.config))


if __name__ == "__main__":
    main()
