"""Transparency log benchmark: the sequencer, proofs served, `verify-remote` and `ledger verify`.

Prints, each next to a baseline measured in the same run on the same machine:
  * sequencer integration, leaves/s, over --leaves pending events (in-process `Sequencer.integrate`,
    batches of LEDGER_LOG_BATCH_MAX), against the tree arithmetic alone (hashing the same leaves into a
    compact range in Python) and the database writes alone (the same rows moved with no tree);
  * from 201 to inclusion in a signed checkpoint, p50/p99, at --rate events/s for --seconds, with
    `ledger sequencer` running as its own process. The events are recorded by `ledger_append` from 4
    database connections (the API on this machine cannot itself sustain 1,000 reports/s; see ingest.py),
    so this measures the log's path: commit, pending, integration, signature;
  * inclusion proofs served (GET /v1/log/inclusion?index=…, keep-alive, one client) p50/p99 at the tree
    size reached, against GET /healthz on the same server and client;
  * `ledger log verify-remote`: a checkpoint step plus 100 inclusion proofs, against 101 GET /healthz;
  * `ledger verify` of the whole log, against reading the same rows with no checking.
Targets (issue 13): sequencer >= 50,000 leaves/s; 201-to-checkpoint p99 <= 1 s at 1,000/s; inclusion
proof p99 <= 5 ms at 10,000,000 leaves; verify-remote <= 1 s; `ledger verify` of 1,000,000 leaves <= 60 s.

Setup: a fresh database (default `bench_log`, dropped afterwards). Events are synthetic `reported` events
with small payloads, recorded through the real `ledger_append`, so every leaf re-derives.

    .venv/bin/python benchmarks/transparency.py [--leaves 1000000] [--rate 1000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c

from ledger.config import Settings
from ledger.domain import merkle
from ledger.services import sequencer, transparency, verification, verify_remote
from ledger.services.runtime import Runtime

CHUNK = 20_000


def record(url: str, platform: int, count: int, start: int = 0) -> None:
    """`count` reported events through the real ledger_append, in chunks of CHUNK."""
    with psycopg.connect(url, autocommit=True) as conn:
        for first in range(start, start + count, CHUNK):
            n = min(CHUNK, start + count - first)
            conn.execute(
                """SELECT count(*) FROM ledger_append(
                       array_fill('reported'::text, ARRAY[%(n)s::int]), array_fill(NULL::uuid, ARRAY[%(n)s::int]),
                       array_fill(%(p)s::bigint, ARRAY[%(n)s::int]),
                       ARRAY(SELECT '{"n":' || g || '}'
                             FROM generate_series(%(f)s::bigint, %(f)s::bigint + %(n)s::bigint - 1) AS g))""",
                {"n": n, "p": platform, "f": first},
            )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_integration(rt: Runtime) -> tuple[int, float]:
    started = time.perf_counter()
    added = sequencer.integrate_now(rt, rt.settings.log_batch_max)
    return added, time.perf_counter() - started


def tree_math_baseline(url: str) -> tuple[int, float]:
    with psycopg.connect(url) as conn:
        hashes = [bytes(r[0]) for r in conn.execute("SELECT leaf_hash FROM log_leaves ORDER BY idx")]
    started = time.perf_counter()
    compact = merkle.CompactRange()
    for h in hashes:
        compact.append(h)
    return len(hashes), time.perf_counter() - started


def db_write_baseline(url: str, count: int, batch: int) -> float:
    """Move `count` (id, hash) rows from one table to another in batches, as the sequencer does, without
    the tree: the floor the database sets for integration."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE bench_src (id bigint PRIMARY KEY, h bytea NOT NULL)")
        conn.execute(
            "CREATE TABLE bench_dst (idx bigint PRIMARY KEY, id bigint NOT NULL UNIQUE, h bytea NOT NULL)"
        )
        conn.execute(
            "INSERT INTO bench_src SELECT g, sha256(int8send(g)) FROM generate_series(1, %s) AS g", (count,)
        )
        conn.execute("VACUUM ANALYZE bench_src")
        started, done = time.perf_counter(), 0
        while done < count:
            with conn.transaction():
                rows = conn.execute(
                    """DELETE FROM bench_src WHERE id IN (SELECT id FROM bench_src ORDER BY id LIMIT %s)
                       RETURNING id, h""",
                    (batch,),
                ).fetchall()
                rows.sort()
                conn.execute(
                    """INSERT INTO bench_dst SELECT %s + o - 1, i, h
                       FROM unnest(%s::bigint[], %s::bytea[]) WITH ORDINALITY AS u (i, h, o)""",
                    (done, [r[0] for r in rows], [r[1] for r in rows]),
                )
            done += len(rows)
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE bench_src, bench_dst")
    return elapsed


def bench_latency(url: str, env: dict[str, str], platform: int, rate: int, seconds: int) -> list[float]:
    """Record events at `rate`/s from 4 connections while `ledger sequencer` runs; return, per event,
    seconds from its commit time (`at`) to the signature of the first checkpoint that includes it."""
    with psycopg.connect(url) as conn:
        first_id = int(conn.execute("SELECT coalesce(max(id), 0) FROM ledger_events").fetchone()[0])  # type: ignore[index]
    stop = time.monotonic() + seconds
    per_thread = rate / 4

    def writer(n: int) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            sent, t0 = 0, time.monotonic()
            while time.monotonic() < stop:
                conn.execute(
                    "SELECT ledger_append(ARRAY['reported'], ARRAY[NULL::uuid], ARRAY[%s::bigint], ARRAY[%s])",
                    (platform, json.dumps({"w": n, "s": sent})),
                )
                sent += 1
                ahead = t0 + sent / per_thread - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)

    with c.Process([str(c.BIN / "ledger"), "sequencer"], env, "sequencer"):
        time.sleep(2.0)  # started and caught up
        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        deadline = time.monotonic() + 30
        with psycopg.connect(url, autocommit=True) as conn:
            while (
                conn.execute("SELECT count(*) FROM log_pending").fetchone()[0] and time.monotonic() < deadline
            ):  # type: ignore[index]
                time.sleep(0.2)
            time.sleep(0.5)
            rows = conn.execute(
                """SELECT extract(epoch FROM (
                       (SELECT min(signed_at) FROM log_checkpoints c WHERE c.tree_size > l.idx) - e.at)) AS lag
                   FROM ledger_events e JOIN log_leaves l ON l.event_id = e.id WHERE e.id > %s""",
                (first_id,),
            ).fetchall()
    return [float(r[0]) for r in rows if r[0] is not None]


class Client:
    def __init__(self, port: int, key: str | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.key = key

    def get(self, path: str) -> tuple[int, float]:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        started = time.perf_counter()
        self.conn.request("GET", path, headers=headers)
        response = self.conn.getresponse()
        response.read()
        return response.status, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--proofs", type=int, default=3000)
    parser.add_argument("--database", default="bench_log")
    args = parser.parse_args()
    run(args.database, args.leaves, args.rate, args.seconds, args.proofs)


def run(database: str, leaves: int, rate: int, seconds: int, proofs: int) -> dict[str, float]:
    """Every figure of this benchmark on a fresh database; also returned, for ingest.py's summary."""
    c.say(f"transparency log benchmark, {c.load()}; the machine is shared, so figures are noisy")
    figures: dict[str, float] = {}
    with c.bench_database(database) as url:
        env = c.ledger_env(url)
        settings = Settings(
            database_url=url, redis_url=c.REDIS_URL, identity_key=c.IDENTITY_KEY, log_key=c.LOG_KEY
        ).require_services()
        rt = Runtime(settings)
        key = c.member(env, "bench-log")
        with psycopg.connect(url) as conn:
            platform = int(conn.execute("SELECT id FROM platforms WHERE slug = 'bench-log'").fetchone()[0])  # type: ignore[index]

        # -- sequencer integration ----------------------------------------------------------------------
        t0 = time.perf_counter()
        record(url, platform, leaves)
        c.say(f"recorded {leaves:,} pending events through ledger_append in {time.perf_counter() - t0:.1f} s")
        c.say(f"  ({c.load()} before integration)")
        added, took = bench_integration(rt)
        figures["integration"] = added / took
        c.say(
            f"ledger    sequencer integration: {added:,} leaves in {took:.1f} s = {added / took:,.0f} leaves/s "
            f"(batches of {settings.log_batch_max:,}; target >= 50,000)"
        )
        n, math_s = tree_math_baseline(url)
        c.say(f"baseline  tree arithmetic alone (Python, CompactRange): {n / math_s:,.0f} leaves/s")
        db_s = db_write_baseline(url, leaves, settings.log_batch_max)
        c.say(
            f"baseline  database moves alone (DELETE … RETURNING + INSERT, no tree): {leaves / db_s:,.0f} rows/s"
        )

        # -- ledger verify ---------------------------------------------------------------------------
        c.say(f"  ({c.load()} before ledger verify)")
        t0 = time.perf_counter()
        result = verification.verify(rt)
        verify_s = time.perf_counter() - t0
        figures["verify_s"], figures["verify_leaves"] = verify_s, result.leaves
        c.say(
            f"ledger    ledger verify: ok={result.ok}, {result.leaves:,} leaves, {result.checkpoints} checkpoints in "
            f"{verify_s:.1f} s (target <= 60 s for 1,000,000)"
        )
        t0 = time.perf_counter()
        with psycopg.connect(url, row_factory=dict_row) as conn:
            after, rows = -1, 0
            while True:
                batch = conn.execute(
                    """SELECT l.idx, l.leaf_hash, e.* FROM log_leaves l LEFT JOIN ledger_events e ON e.id = l.event_id
                       WHERE l.idx > %s ORDER BY l.idx LIMIT 5000""",
                    (after,),
                ).fetchall()
                if not batch:
                    break
                rows += len(batch)
                after = batch[-1]["idx"]
        c.say(
            f"baseline  reading the same rows with no checking: {rows:,} in {time.perf_counter() - t0:.1f} s"
        )

        # -- 201 to checkpoint at a rate ------------------------------------------------------------------
        c.say(f"  ({c.load()} before the latency run)")
        lags = bench_latency(url, env, platform, rate, seconds)
        if lags:
            c.say(
                f"ledger    commit -> signed checkpoint at {rate}/s for {seconds} s ({len(lags):,} events, "
                f"{len(lags) / seconds:,.0f}/s achieved): p50 {statistics.median(lags) * 1000:.0f} ms, "
                f"p99 {percentile(lags, 0.99) * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms (target p99 <= 1 s)"
            )

        # -- proofs served and verify-remote ----------------------------------------------------------------
        port = c.free_port(22000, 22999)
        size = transparency.latest_checkpoint(rt)["tree_size"]
        with c.Process([str(c.BIN / "ledger"), "serve", "--bind", f"127.0.0.1:{port}"], env, "serve") as proc:
            c.wait_http(port, proc=proc)
            client = Client(port, key)
            for _ in range(50):
                client.get("/healthz")
                client.get("/v1/log/inclusion?index=0")
            rng = random.Random(7)
            proof_times, health_times = [], []
            for _ in range(proofs):
                status, took = client.get(f"/v1/log/inclusion?index={rng.randrange(size)}")
                assert status == 200, status
                proof_times.append(took)
                health_times.append(client.get("/healthz")[1])
            figures["proof_p99_ms"] = percentile(proof_times, 0.99) * 1000
            c.say(
                f"ledger    inclusion proof served at {size:,} leaves: p50 {statistics.median(proof_times) * 1000:.2f} ms, "
                f"p99 {percentile(proof_times, 0.99) * 1000:.2f} ms (target p99 <= 5 ms at 10,000,000)"
            )
            c.say(
                f"baseline  GET /healthz, same server and client: p50 {statistics.median(health_times) * 1000:.2f} ms, "
                f"p99 {percentile(health_times, 0.99) * 1000:.2f} ms"
            )
            # verify-remote: a saved checkpoint 1,000 leaves back, then a step plus 100 receipts.
            with tempfile.TemporaryDirectory() as tmp, psycopg.connect(url, row_factory=dict_row) as conn:
                old = conn.execute(
                    "SELECT tree_size, root_hash, note FROM log_checkpoints WHERE tree_size <= %s AND tree_size > 0 "
                    "ORDER BY tree_size DESC LIMIT 1",
                    (size - 1000,),
                ).fetchone()
                assert old is not None, "no checkpoint 1,000 leaves back"
                state = Path(tmp) / "state.json"
                state.write_text(
                    json.dumps(
                        {
                            "vkey": rt.log_signer.verifier.vkey(),
                            "tree_size": old["tree_size"],
                            "root_hash": bytes(old["root_hash"]).hex(),
                        }
                    )
                )
                picks = conn.execute(
                    """SELECT e.leaf_hash, e.at FROM log_leaves l JOIN ledger_events e ON e.id = l.event_id
                       WHERE l.idx = ANY(%s)""",
                    ([rng.randrange(size) for _ in range(100)],),
                ).fetchall()
                receipts = [transparency.receipt(rt, bytes(p["leaf_hash"]), p["at"]) for p in picks]
                (Path(tmp) / "receipts.json").write_text(json.dumps(receipts))
                t0 = time.perf_counter()
                report = verify_remote.run(
                    f"http://127.0.0.1:{port}",
                    str(state),
                    api_key=key,
                    receipts_path=str(Path(tmp) / "receipts.json"),
                    now=datetime.now(UTC),
                )
                remote_s = time.perf_counter() - t0
                figures["verify_remote_ms"] = remote_s * 1000
            c.say(
                f"ledger    verify-remote: ok={report['ok']}, step {report['previous_size']:,} -> {report['tree_size']:,} "
                f"and {report.get('included')} inclusion proofs in {remote_s * 1000:.0f} ms (target <= 1 s)"
            )
            t0 = time.perf_counter()
            base = Client(port)
            for _ in range(101):
                base.get("/healthz")
            c.say(f"baseline  101 GET /healthz on one connection: {(time.perf_counter() - t0) * 1000:.0f} ms")
        rt.close()
    return figures


if __name__ == "__main__":
    main()
