"""Audit-write options for the lookup hot path, measured side by side (see docs/audit.md).

  (a') sync-1rt     one autocommit INSERT per lookup before the answer: one round trip, durable when it
                    returns (the statement is its own transaction); what the service did before group commit;
  (a)  group        the service's group commit (`Runtime.audit`, ledger/storage/group_commit.py): the
                    threads of a process share one multi-row INSERT and one commit, each still waiting
                    for its own record's commit;
  (b)  stream       one XADD to a Redis stream per lookup, before the answer, on the benchmark Redis (no
                    persistence: not durable); a drain process reads the stream with a consumer group,
                    inserts each batch into `lookups` in one transaction, then XACKs and XDELs it;
  (b)  stream-fsync the same on a private Redis with `appendonly yes` and `appendfsync always`, so that
                    each XADD is answered after its fsync: the durable variant of (b).
Reference, same run: the lookup's own Redis round trip (`Cache.lookup`: quota script + MGET of 3 tokens),
i.e. what the hot path costs without any audit write.

Each option runs for --seconds with --writers processes of --threads threads (a stand-in for the API's
worker processes and their request threads), each writing audit records shaped by the real code
(`decide`, `response_body`, `inquiry_leaf`). Printed: per-lookup cost (p50/p99 of the write as the
writer sees it), throughput (lookups/s of writers that build a record and write it, nothing else), for
group commit the records per INSERT, and for (b) the drain rate and the backlog left at the end.

    .venv/bin/python benchmarks/audit_options.py [--seconds 10] [--writers 2] [--threads 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
import redis

from benchmarks import _common as c

STREAM = "bench:audit"
OPTIONS = ("reference", "sync-1rt", "group", "stream", "stream-fsync")
AOF_PORTS = (23800, 23899)  # the private fsync-always Redis
GROUP = "drain"


def runtime(url: str, pool_max: int = 2) -> Any:
    from ledger.config import Settings
    from ledger.services.runtime import Runtime

    return Runtime(
        Settings(
            database_url=url,
            redis_url=c.REDIS_URL,
            identity_key=c.IDENTITY_KEY,
            log_key=c.LOG_KEY,
            pool_max=pool_max,
        ).require_services()
    )


def make_record(rt: Any, platform_id: int, n: int) -> dict[str, Any]:
    """One audit record as ledger/services/lookups.py builds it, for an unknown consumer."""
    from ledger.domain import chain, merkle
    from ledger.domain.decisions import decide, inquiry_leaf, lookup_commitment
    from ledger.services.lookups import response_body

    lookup_id = uuid.uuid4()
    decision = decide([], [], "refund_only", rt.policy)
    tokens = [os.urandom(32).hex() for _ in range(3)]
    salt = os.urandom(16)
    refund_ref = f"RF{n:010d}"
    commitment = lookup_commitment(salt, tokens, refund_ref)
    now = datetime.now(UTC)
    response = json.dumps(
        response_body(rt, lookup_id, decision, False),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return {
        "id": lookup_id,
        "platform_id": platform_id,
        "key_id": "0123456789ab",
        "purpose": "refund_review",
        "refund_ref": refund_ref,
        "tokens": tokens,
        "salt": salt,
        "tokens_commitment": commitment,
        "tier": decision.tier,
        "reasons": list(decision.reasons),
        "response": response,
        "at": now,
        "leaf_hash": merkle.leaf_hash(
            inquiry_leaf(
                str(lookup_id),
                platform_id,
                "0123456789ab",
                "refund_review",
                commitment,
                decision.tier,
                decision.reasons,
                chain.format_time(now),
                None,
                response.encode(),
            )
        ),
    }


def encode(record: dict[str, Any]) -> str:
    return json.dumps(
        {
            **record,
            "id": str(record["id"]),
            "salt": record["salt"].hex(),
            "leaf_hash": record["leaf_hash"].hex(),
            "at": record["at"].isoformat(),
        },
        separators=(",", ":"),
    )


def decode(raw: bytes) -> dict[str, Any]:
    record = json.loads(raw)
    record["id"] = uuid.UUID(record["id"])
    record["salt"] = bytes.fromhex(record["salt"])
    record["leaf_hash"] = bytes.fromhex(record["leaf_hash"])
    record["at"] = datetime.fromisoformat(record["at"])
    return record


def writer(
    option: str,
    url: str,
    platform_id: int,
    seconds: float,
    start_at: float,
    out: Any,
    threads: int,
    stream: str,
) -> None:
    from ledger.storage import audit

    rt = runtime(url, pool_max=threads)
    client = redis.Redis.from_url(stream)
    tokens = [os.urandom(32).hex() for _ in range(3)]
    # Warm the connections before the clock starts.
    rt.cache.lookup(tokens, quota_key="bench", rate=10**6, burst=10**6)
    with rt.db.transaction() as conn:
        conn.execute("SELECT 1")
    per_thread: list[list[float]] = [[] for _ in range(threads)]

    def loop(latencies: list[float]) -> None:
        n = 0
        while time.time() < start_at:
            time.sleep(0.001)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            record = make_record(rt, platform_id, n)
            started = time.perf_counter()
            if option == "sync":
                with rt.db.transaction() as conn:
                    audit.insert_many(conn, [record])
            elif option == "sync-1rt":
                with rt.db.autocommit() as conn:
                    audit.insert_many(conn, [record])
            elif option == "group":
                rt.audit.write([record])
            elif option.startswith("stream"):
                client.xadd(STREAM, {"r": encode(record)})
            else:  # the hot path's own Redis round trip, for scale
                rt.cache.lookup(tokens, quota_key="bench", rate=10**6, burst=10**6)
            latencies.append((time.perf_counter() - started) * 1000)
            n += 1

    workers = [threading.Thread(target=loop, args=(latencies,)) for latencies in per_thread]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    out.put(([x for latencies in per_thread for x in latencies], rt.audit.batches))
    rt.close()


def drainer(url: str, stop_at: Any, out: Any, stream: str) -> None:
    """Option (b)'s worker: stream -> PostgreSQL in batches; ack and delete only after commit."""
    from ledger.storage import audit

    rt = runtime(url)
    client = redis.Redis.from_url(stream)
    drained, batches, max_backlog = 0, 0, 0
    while True:
        entries = client.xreadgroup(GROUP, "drain-1", {STREAM: ">"}, count=1000, block=100)
        if not entries:
            if stop_at.is_set():
                break
            continue
        _, messages = entries[0]
        with rt.db.transaction() as conn:
            audit.insert_many(conn, [decode(fields[b"r"]) for _, fields in messages])
        ids = [message_id for message_id, _ in messages]
        client.xack(STREAM, GROUP, *ids)
        client.xdel(STREAM, *ids)
        drained += len(ids)
        batches += 1
        max_backlog = max(max_backlog, int(client.xlen(STREAM)))
    rt.close()
    out.put((drained, batches, max_backlog))


def run(
    option: str,
    url: str,
    platform_id: int,
    writers: int,
    threads: int,
    seconds: float,
    streams: dict[str, str],
) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")
    queue, drained_queue, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    start_at = time.time() + 1.5
    stream = streams.get(option, c.REDIS_URL)
    procs = [
        ctx.Process(target=writer, args=(option, url, platform_id, seconds, start_at, queue, threads, stream))
        for _ in range(writers)
    ]
    drain = None
    if option.startswith("stream"):
        client = redis.Redis.from_url(stream)
        client.delete(STREAM)
        client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        drain = ctx.Process(target=drainer, args=(url, stop, drained_queue, stream))
        drain.start()
    with psycopg.connect(url) as conn:
        before = conn.execute("SELECT count(*) FROM lookups").fetchone()[0]  # type: ignore[index]
    for p in procs:
        p.start()
    latencies: list[float] = []
    statements = 0
    for _ in procs:
        got, batches = queue.get(timeout=seconds + 120)
        latencies += got
        statements += batches
    written_at = time.time()
    backlog_at_stop = int(redis.Redis.from_url(stream).xlen(STREAM)) if drain is not None else 0
    for p in procs:
        p.join()
    result: dict[str, Any] = {
        "option": option,
        "writers": writers,
        "writes": len(latencies),
        "per_second": len(latencies) / seconds,
        "p50_ms": c.percentile(latencies, 50),
        "p99_ms": c.percentile(latencies, 99),
        "mean_ms": sum(latencies) / len(latencies),
        "statements": statements,
    }
    if drain is not None:
        stop.set()
        drained, batches, max_backlog = drained_queue.get(timeout=300)
        drain.join()
        result.update(
            drained=drained,
            batches=batches,
            max_backlog=max(max_backlog, backlog_at_stop),
            backlog_at_stop=backlog_at_stop,
            drain_tail_s=time.time() - written_at,
        )
    with psycopg.connect(url) as conn:
        result["rows"] = conn.execute("SELECT count(*) FROM lookups").fetchone()[0] - before  # type: ignore[index]
    return result


@contextlib.contextmanager
def fsync_always_redis() -> Iterator[str]:
    """A private redis-server with `appendonly yes` and `appendfsync always`: the durable buffer design
    (b) needs, where each XADD is answered only after its fsync."""
    directory = tempfile.mkdtemp(prefix="bench-aof-")
    port = c.free_port(*AOF_PORTS)
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"]
    argv += ["--appendfsync", "always", "--dir", directory]
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        shutil.rmtree(directory, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--writers", default="2", help="writer process counts (default 2)")
    parser.add_argument("--threads", type=int, default=4, help="writer threads per process (default 4)")
    parser.add_argument("--database", default="bench_audit")
    args = parser.parse_args()

    persistence = redis.Redis.from_url(c.REDIS_URL).config_get("*")
    c.say(
        f"audit options benchmark; Redis persistence: save={persistence.get('save')!r} "
        f"appendonly={persistence.get('appendonly')!r}; {args.threads} threads per writer process; {c.load()}"
    )
    c.flush_redis()
    lines = []
    with c.bench_database(args.database) as url, fsync_always_redis() as aof_url:
        with psycopg.connect(url) as conn:
            platform_id = conn.execute(
                "INSERT INTO platforms (slug, name) VALUES ('bench-audit', 'Bench') RETURNING id"
            ).fetchone()[0]  # type: ignore[index]
        streams = {"stream-fsync": aof_url}
        for writers in (int(x) for x in args.writers.split(",")):
            for option in OPTIONS:
                c.say(f"  ({c.load()} before {option} x{writers})")
                r = run(option, url, platform_id, writers, args.threads, args.seconds, streams)
                line = (
                    f"{option:<12} {writers}x{args.threads}: {r['per_second']:8.0f} lookups/s  write p50 "
                    f"{r['p50_ms']:.3f} ms p99 {r['p99_ms']:.3f} ms mean {r['mean_ms']:.3f} ms"
                )
                if option == "group":
                    line += f"; {r['statements']} INSERTs ({r['writes'] / max(1, r['statements']):.1f} records each)"
                if option.startswith("stream"):
                    line += (
                        f"; drained {r['drained']} in {r['batches']} batches, backlog max {r['max_backlog']} "
                        f"(at stop {r['backlog_at_stop']}), drained {r['drain_tail_s']:.2f} s after the writers stopped"
                    )
                if option != "reference":
                    line += f"; rows in lookups {r['rows']} of {r['writes']}"
                c.say(line)
                lines.append(r)
    c.flush_redis()
    c.say(f"({c.load()} at the end)")
    lost = [r for r in lines if r["option"] != "reference" and r["rows"] != r["writes"]]
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
