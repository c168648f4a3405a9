"""Audit-write options for the lookup hot path, measured side by side (see docs/audit.md).

  (a) sync    one INSERT + commit into `lookups` per lookup, before the answer, inside
              `db.transaction()`: BEGIN, INSERT and COMMIT, three round trips (what
              ledger/services/lookups.py did until this benchmark showed the cost);
  (a') sync-1rt the same row as one autocommit INSERT statement: one round trip, equally durable (the
              statement is its own transaction and returns after the WAL flush); what the service does
              now (`db.autocommit()` + `audit.insert_many`);
  (b) stream  one XADD to a Redis stream per lookup, before the answer; a drain process reads the stream
              with a consumer group (XREADGROUP), inserts each batch into `lookups` in one transaction, then
              XACKs and XDELs it.
Reference, same run: the lookup's own Redis round trip (`Cache.lookup`: quota script + MGET of 3 tokens),
i.e. what the hot path costs without any audit write.

Each option runs for --seconds with 1 and then 8 writer processes (a stand-in for gunicorn workers), each
writing audit records shaped by the real code (`decide`, `response_body`, `audit_row_hash`). Printed:
per-lookup cost (p50/p99 of the write as the writer sees it), throughput (lookups/s of writers that build
a record and write it, nothing else), and for (b) the drain rate and
the backlog that a Redis restart would lose (this machine's Redis has no RDB or AOF persistence).

    /work/venv/bin/python benchmarks/audit_options.py [--seconds 10] [--writers 1,8]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
import redis

from benchmarks import _common as c

STREAM = "bench:audit"
GROUP = "drain"


def runtime(url: str) -> Any:
    from ledger.config import Settings
    from ledger.services.runtime import Runtime

    return Runtime(
        Settings(
            database_url=url, redis_url=c.REDIS_URL, identity_key=c.IDENTITY_KEY, pool_max=2
        ).require_services()
    )


def make_record(rt: Any, platform_id: int, n: int) -> dict[str, Any]:
    """One audit record as ledger/services/lookups.py builds it, for an unknown consumer."""
    from ledger.domain import chain
    from ledger.domain.decisions import audit_row_hash, decide, lookup_commitment
    from ledger.services.lookups import response_body

    lookup_id = uuid.uuid4()
    decision = decide([], [], "refund_only", rt.policy)
    tokens = [os.urandom(32).hex() for _ in range(3)]
    salt = os.urandom(16)
    refund_ref = f"RF{n:010d}"
    commitment = lookup_commitment(salt, tokens, refund_ref)
    now = datetime.now(UTC)
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
        "response": json.dumps(response_body(rt, lookup_id, decision, False), sort_keys=True),
        "at": now,
        "row_hash": audit_row_hash(
            str(lookup_id),
            platform_id,
            "0123456789ab",
            "refund_review",
            commitment,
            decision.tier,
            decision.reasons,
            chain.format_time(now),
        ),
    }


def encode(record: dict[str, Any]) -> str:
    return json.dumps(
        {
            **record,
            "id": str(record["id"]),
            "salt": record["salt"].hex(),
            "at": record["at"].isoformat(),
        },
        separators=(",", ":"),
    )


def decode(raw: bytes) -> dict[str, Any]:
    record = json.loads(raw)
    record["id"] = uuid.UUID(record["id"])
    record["salt"] = bytes.fromhex(record["salt"])
    record["at"] = datetime.fromisoformat(record["at"])
    return record


def writer(option: str, url: str, platform_id: int, seconds: float, start_at: float, out: Any) -> None:
    from ledger.storage import audit

    rt = runtime(url)
    client = redis.Redis.from_url(c.REDIS_URL)
    tokens = [os.urandom(32).hex() for _ in range(3)]
    # Warm the connections before the clock starts.
    rt.cache.lookup(tokens, quota_key="bench", rate=10**6, burst=10**6)
    with rt.db.transaction() as conn:
        conn.execute("SELECT 1")
    latencies: list[float] = []
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
        elif option == "stream":
            client.xadd(STREAM, {"r": encode(record)})
        else:  # the hot path's own Redis round trip, for scale
            rt.cache.lookup(tokens, quota_key="bench", rate=10**6, burst=10**6)
        latencies.append((time.perf_counter() - started) * 1000)
        n += 1
    rt.close()
    out.put(latencies)


def drainer(url: str, stop_at: Any, out: Any) -> None:
    """Option (b)'s worker: stream -> PostgreSQL in batches; ack and delete only after commit."""
    from ledger.storage import audit

    rt = runtime(url)
    client = redis.Redis.from_url(c.REDIS_URL)
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


def run(option: str, url: str, platform_id: int, writers: int, seconds: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")
    queue, drained_queue, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    start_at = time.time() + 1.5
    procs = [
        ctx.Process(target=writer, args=(option, url, platform_id, seconds, start_at, queue))
        for _ in range(writers)
    ]
    drain = None
    if option == "stream":
        client = redis.Redis.from_url(c.REDIS_URL)
        client.delete(STREAM)
        client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        drain = ctx.Process(target=drainer, args=(url, stop, drained_queue))
        drain.start()
    with psycopg.connect(url) as conn:
        before = conn.execute("SELECT count(*) FROM lookups").fetchone()[0]  # type: ignore[index]
    for p in procs:
        p.start()
    latencies = [x for _ in procs for x in queue.get(timeout=seconds + 120)]
    written_at = time.time()
    backlog_at_stop = int(redis.Redis.from_url(c.REDIS_URL).xlen(STREAM)) if option == "stream" else 0
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


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--writers", default="1,8", help="writer process counts (default 1,8)")
    parser.add_argument("--database", default="bench_audit")
    args = parser.parse_args()

    persistence = redis.Redis.from_url(c.REDIS_URL).config_get("*")
    c.say(
        f"audit options benchmark; Redis persistence: save={persistence.get('save')!r} "
        f"appendonly={persistence.get('appendonly')!r}; {c.load()}"
    )
    c.flush_redis()
    lines = []
    with c.bench_database(args.database) as url:
        with psycopg.connect(url) as conn:
            platform_id = conn.execute(
                "INSERT INTO platforms (slug, name) VALUES ('bench-audit', 'Bench') RETURNING id"
            ).fetchone()[0]  # type: ignore[index]
        for writers in (int(x) for x in args.writers.split(",")):
            for option in ("reference", "sync", "sync-1rt", "stream"):
                c.say(f"  ({c.load()} before {option} x{writers})")
                r = run(option, url, platform_id, writers, args.seconds)
                line = (
                    f"{option:<9} {writers} writers: {r['per_second']:8.0f} lookups/s  write p50 {r['p50_ms']:.3f} ms "
                    f"p99 {r['p99_ms']:.3f} ms mean {r['mean_ms']:.3f} ms"
                )
                if option == "stream":
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
