"""Ingest benchmark: incident reports against `ledger serve` (gunicorn) on this machine.

Prints
  * incidents/s for POST /v1/incidents/batch (1,000 incidents per request, durable, each a log leaf);
  * requests/s, p50 and p99 for single POST /v1/incidents at 16 concurrent clients (wrk, keep-alive
    where the worker class allows it);
  * the baseline, measured in the same run under the same gunicorn options and the same wrk script: a
    bare Flask POST that parses the body and does one INSERT + commit (benchmarks/baseline_app.py).
  * the database floor, after the served runs: the real `ledger_report` statement and the baseline's
    INSERT, each driven by pgbench with no application, and the CPU each costs per call (skipped
    without pgbench), next to the CPU budget the 60% target leaves a served report.
Targets (2 cores): batch >= 5,000 incidents/s; single >= 60% of the baseline's throughput with p99 <= 30 ms.

Setup: a fresh database (default `bench_ingest`, dropped afterwards), Redis database 7 (flushed), one
member platform with a huge rate limit. No Celery worker runs: the API's job ends at the durable commit
and the task send; scoring is measured by freshness.py and rescore.py. After the run `ledger sequencer
--once` integrates every pending leaf and `ledger verify` re-checks the whole log. Bodies carry raw identifiers (a phone number, an e-mail, a device id),
so normalisation and HMAC tokenisation are part of every measured request.

    .venv/bin/python benchmarks/ingest.py [--seconds 20] [--batches 30]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common as c
from ledger.storage.queue import PROCESS_OUTBOX

CATEGORIES = (
    "fabricated_evidence",
    "false_damage_claim",
    "false_not_received",
    "refund_only_abuse",
    "return_fraud",
    "chargeback_abuse",
)
CONFIRMATIONS = ("platform_review", "merchant_evidence", "consumer_admission", "court_or_police")


def incident(external_id: str, rng: random.Random, occurred_at: str) -> dict[str, object]:
    person = rng.randrange(10**8)
    return {
        "external_id": external_id,
        "category": rng.choice(CATEGORIES),
        "confirmation": rng.choice(CONFIRMATIONS),
        "amount": {"value": rng.randrange(1_000, 500_000), "currency": "CNY"},
        "occurred_at": occurred_at,
        "consumer_notified_at": occurred_at,
        "identifiers": [
            {"type": "phone", "value": f"138{person:08d}"},
            {"type": "email", "value": f"buyer{person}@example.com"},
            {"type": "device_id", "value": f"dev-{rng.randrange(10**6)}"},
        ],
    }


SINGLE_LUA = """
local prefix = %(prefix)s
local auth = %(auth)s
local occurred = %(occurred)s
local categories = {"fabricated_evidence", "false_damage_claim", "false_not_received", "refund_only_abuse",
                    "return_fraud", "chargeback_abuse"}
local confirmations = {"platform_review", "merchant_evidence", "consumer_admission", "court_or_police"}
local next_tid = 0
local counter = 0
setup = function(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end
init = function(args)
  math.randomseed(os.time() + 7919 * tid)
end
request = function()
  counter = counter + 1
  local person = math.random(0, 99999999)
  local body = string.format(
    '{"external_id":"%%s-%%d-%%d","category":"%%s","confirmation":"%%s","amount":{"value":%%d,"currency":"CNY"},' ..
    '"occurred_at":"%%s","consumer_notified_at":"%%s","identifiers":[{"type":"phone","value":"138%%08d"},' ..
    '{"type":"email","value":"buyer%%d@example.com"},{"type":"device_id","value":"dev-%%d"}]}',
    prefix, tid, counter, categories[math.random(1, 6)], confirmations[math.random(1, 4)],
    math.random(1000, 499999), occurred, occurred, person, person, math.random(0, 999999))
  return wrk.format("POST", "/v1/incidents",
    {["Content-Type"] = "application/json", ["Authorization"] = auth}, body)
end
"""


def single_lua(prefix: str, key: str, occurred: str) -> str:
    return SINGLE_LUA % {
        "prefix": c.lua_string(prefix),
        "auth": c.lua_string(f"Bearer {key}"),
        "occurred": c.lua_string(occurred),
    }


def _post_batches(port: int, key: str, bodies: list[bytes], out: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    created = 0
    latencies = []
    statuses: dict[int, int] = {}
    for body in bodies:
        started = time.perf_counter()
        conn.request("POST", "/v1/incidents/batch", body, headers)
        response = conn.getresponse()
        payload = response.read()
        latencies.append((time.perf_counter() - started) * 1000)
        if response.status != 200:
            statuses[response.status] = statuses.get(response.status, 0) + 1
            continue
        for result in json.loads(payload)["results"]:
            statuses[result["status"]] = statuses.get(result["status"], 0) + 1
            created += result["status"] == 201
    out.put((created, latencies, statuses))


def run_batches(port: int, key: str, batches: int, size: int, clients: int, tag: str) -> dict[str, Any]:
    rng = random.Random(42)
    occurred = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    bodies = [
        json.dumps(
            {"incidents": [incident(f"{tag}-{b}-{i}", rng, occurred) for i in range(size)]},
            separators=(",", ":"),
        ).encode()
        for b in range(batches)
    ]
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_post_batches, args=(port, key, bodies[n::clients], queue)) for n in range(clients)
    ]
    started = time.perf_counter()
    for p in procs:
        p.start()
    results = [queue.get(timeout=600) for _ in procs]
    elapsed = time.perf_counter() - started
    for p in procs:
        p.join()
    created = sum(r[0] for r in results)
    latencies = [x for r in results for x in r[1]]
    statuses: dict[int, int] = {}
    for r in results:
        for k, v in r[2].items():
            statuses[k] = statuses.get(k, 0) + v
    return {
        "created": created,
        "seconds": elapsed,
        "per_second": created / elapsed,
        "latencies": latencies,
        "statuses": statuses,
        "body_kib": len(bodies[0]) / 1024,
    }


# The database floor: what PostgreSQL alone can do, with no application and a client (pgbench, in C) that
# costs almost nothing. Each transaction is one real `ledger_report` call, as the API makes it for a single
# report (a new incident, 3 tokens, its outbox row, its event and pending leaf), prepared as psycopg prepares it;
# the other runs the baseline's INSERT of a JSON body. pgbench runs as many clients as the server has
# request threads, the most that reach PostgreSQL at once. Values are random per call and the payload is
# canonical JSON of the real length (chr(58) is a colon: pgbench would take ":null" for a variable). Run
# after `ledger verify`: these incidents are recorded, but their payloads are not the API's.
FLOOR_REPORT = """SELECT r_leaf_hash FROM ledger_report(%(platform)d::bigint,
  ARRAY[gen_random_uuid()], ARRAY['floor-' || (:client_id)::text || '-' || random()::text],
  ARRAY[md5(random()::text) || md5(random()::text)], ARRAY['refund_only_abuse'], ARRAY['platform_review'],
  ARRAY[12900::bigint], ARRAY['CNY'], ARRAY[now() - interval '2 days'], ARRAY[decode(md5(random()::text), 'hex')],
  ARRAY[now() - interval '2 days'],
  ARRAY['{"amount":12900,"category":"refund_only_abuse","confirmation":"platform_review",'
        || '"consumer_notified_at":"2026-11-23T10:00:00.000000Z","currency":"CNY","evidence"' || chr(58) || 'null,"external_id":"floor-' || md5(random()::text) || '","identifiers":"'
        || md5(random()::text) || md5(random()::text) || '","incident_id":"' || gen_random_uuid()::text
        || '","occurred_at":"2026-11-23T10:00:00.000000Z","platform_id":%(platform)d}'],
  ARRAY[1, 1, 1], ARRAY['phone', 'email', 'device_id'],
  ARRAY[md5(random()::text) || md5(random()::text), md5(random()::text) || md5(random()::text),
        md5(random()::text) || md5(random()::text)],
  '{}'::int[], '{}'::bytea[], %(task)s::text);
"""
FLOOR_BASELINE = """INSERT INTO bench_baseline (id, external_id, body) VALUES (gen_random_uuid(),
  'floor-' || (:client_id)::text || '-' || random()::text, (%(body)s)::jsonb);
"""


def database_floor(url: str, script: str, clients: int, seconds: int) -> tuple[float, float]:
    """(transactions/s, CPU µs per transaction on the whole machine) of a pgbench run."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as f:
        f.write(script)
        f.flush()
        busy_before = _busy_ticks()
        out = subprocess.run(
            [
                "pgbench",
                "-n",
                "-M",
                "prepared",
                "-c",
                str(clients),
                "-j",
                "2",
                "-T",
                str(seconds),
                "-f",
                f.name,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        busy = _busy_ticks() - busy_before
    tps = float(next(line for line in out.splitlines() if line.startswith("tps")).split()[2])
    return tps, busy / os.sysconf("SC_CLK_TCK") / (tps * seconds) * 1e6


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _busy_ticks() -> int:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # all but idle and iowait


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=20, help="duration of each wrk run (default 20)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent clients for single reports")
    parser.add_argument("--batches", type=int, default=30, help="batch requests to send (default 30)")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--batch-clients", type=int, default=2, help="concurrent batch clients (default 2)")
    parser.add_argument(
        "--config",
        default=c.DEFAULT_SERVER,
        help=f"server configuration: sync:N or gthread:NxT (default {c.DEFAULT_SERVER}, see docs/performance.md)",
    )
    parser.add_argument("--database", default="bench_ingest")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    config = c.parse_config(args.config)
    occurred = (datetime.now(UTC) - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    run_tag = f"r{int(time.time())}"

    c.say(f"ingest benchmark; gunicorn {config}; {c.load()}")
    c.flush_redis()
    with c.bench_database(args.database, keep=args.keep) as url:
        env = c.ledger_env(url)
        key = c.member(env, "bench-ingest", "report,lookup")

        # -- baseline: bare Flask, one INSERT + commit, same gunicorn options and wrk script ------------
        with c.baseline_server(env, config, "insert") as port:
            lua = single_lua(f"{run_tag}-base", key, occurred)
            c.wrk(f"http://127.0.0.1:{port}", lua, args.connections, 3)  # warm-up
            c.say(f"  ({c.load()} before baseline)")
            base = c.wrk(f"http://127.0.0.1:{port}", lua, args.connections, args.seconds)
            c.say(f"baseline  single POST, INSERT+commit, {args.connections} conns: {base.line()}")

        with c.ledger_server(env, config) as port:
            # -- batch ---------------------------------------------------------------------------------
            run_batches(port, key, 2, args.batch_size, 1, f"{run_tag}-warm")
            c.say(f"  ({c.load()} before batch)")
            batch = run_batches(
                port, key, args.batches, args.batch_size, args.batch_clients, f"{run_tag}-batch"
            )
            c.say(
                f"ledger    batch POST /v1/incidents/batch x{args.batch_size}, {args.batch_clients} clients: "
                f"{batch['per_second']:8.0f} incidents/s  ({batch['created']} created in {batch['seconds']:.1f} s; "
                f"request {batch['body_kib']:.0f} KiB; per request {c.summary(batch['latencies'])} ms; "
                f"statuses {batch['statuses']})"
            )
            # -- single --------------------------------------------------------------------------------
            lua = single_lua(f"{run_tag}-single", key, occurred)
            c.wrk(
                f"http://127.0.0.1:{port}", single_lua(f"{run_tag}-warm", key, occurred), args.connections, 3
            )
            c.say(f"  ({c.load()} before single)")
            single = c.wrk(f"http://127.0.0.1:{port}", lua, args.connections, args.seconds)
            c.say(f"ledger    single POST /v1/incidents, {args.connections} conns:      {single.line()}")

        c.ledger_cli(env, "sequencer", "--once")
        verified = c.ledger_cli(env, "verify")
        with psycopg.connect(url) as conn:
            incidents = conn.execute("SELECT count(*) FROM incidents").fetchone()[0]  # type: ignore[index]
            events = conn.execute("SELECT count(*) FROM ledger_events").fetchone()[0]  # type: ignore[index]
            platform = conn.execute("SELECT id FROM platforms WHERE slug = 'bench-ingest'").fetchone()[0]  # type: ignore[index]
        c.say(
            f"ledger verify: ok={verified['ok']} leaves={verified.get('leaves')} "
            f"(incidents {incidents}, events {events})"
        )

        # -- the database floor: PostgreSQL alone, no application (pgbench) ---------------------------
        floor = None
        if shutil.which("pgbench"):
            body = json.dumps(incident("floor", random.Random(1), occurred), separators=(",", ":"))
            body = _literal(body).replace(":", "' || chr(58) || '")  # no colon for pgbench to read
            clients = config.workers * config.threads
            c.say(f"  ({c.load()} before the database floor)")
            floor = (
                database_floor(
                    url,
                    FLOOR_REPORT % {"platform": platform, "task": _literal(PROCESS_OUTBOX)},
                    clients,
                    args.seconds,
                ),
                database_floor(url, FLOOR_BASELINE % {"body": body}, clients, args.seconds),
            )
            c.say(
                f"database floor, pgbench {clients} clients (the server's request threads), no application: "
                f"ledger_report "
                f"{floor[0][0]:.0f}/s ({floor[0][1]:.0f} µs CPU each); the baseline's INSERT + commit "
                f"{floor[1][0]:.0f}/s ({floor[1][1]:.0f} µs CPU each)"
            )
        else:
            c.say("database floor skipped: pgbench not found (Debian: postgresql-client)")

    ratio = single.rps / base.rps
    batch_ok = batch["per_second"] >= 5000
    single_ok = ratio >= 0.60 and single.p99_ms <= 30
    c.say("")
    c.say(
        f"batch:  {batch['per_second']:.0f} incidents/s   target >= 5000          {'MET' if batch_ok else 'MISSED'}"
    )
    c.say(
        f"single: {single.rps:.0f} req/s = {ratio:.0%} of baseline {base.rps:.0f} req/s, p50 {single.p50_ms:.1f} ms, "
        f"p99 {single.p99_ms:.1f} ms   target >= 60% and p99 <= 30 ms   {'MET' if single_ok else 'MISSED'}"
    )
    if floor is not None:
        cores = os.cpu_count() or 1
        c.say(
            f"        CPU per request, all processes on {cores} cores: at 60% of the baseline a served report may "
            f"cost {cores * 1e6 / (0.60 * base.rps):.0f} µs in all; the served baseline costs "
            f"{cores * 1e6 / base.rps:.0f} µs, of which its INSERT {floor[1][1]:.0f} µs; ledger_report alone "
            f"{floor[0][1]:.0f} µs"
        )
    c.say(f"({c.load()} at the end)")
    return 0 if batch_ok and single_ok and verified["ok"] and single.bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
