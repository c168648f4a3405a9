"""Ingest benchmark, and with it every figure of issue 13: reports against `ledger serve`, then the log.

Prints, each next to a baseline measured in the same run on this machine:
  * requests/s, p50 and p99 for single POST /v1/incidents at 16 concurrent clients (wrk, keep-alive);
  * incidents/s for POST /v1/incidents/batch (1,000 incidents per request, durable, each a log leaf);
  * the baselines: a bare Flask POST that parses the body and does one INSERT + commit
    (benchmarks/baseline_app.py), under gunicorn sync workers (the issue's baseline, the stack a team
    would write by default) and under the ledger's own server configuration, with the same wrk script;
  * from 201 to inclusion in a signed checkpoint, p50/p99, with reports sent through the API at --rate
    per second by two clients (each a batch of rate/20 every 100 ms: single reports cannot reach 1,000/s
    on 2 cores) while `ledger sequencer` runs as its own process;
  * the database floor: the real `ledger_report` statement and the baseline's INSERT, each driven by
    pgbench with no application, and the CPU each costs per call (skipped without pgbench);
  * unless --log-leaves 0, benchmarks/transparency.py on a log of that many leaves: sequencer
    integration, proofs served, `verify-remote` and `ledger verify`, each against its own baseline.
The inclusion proof at 10,000,000 leaves needs a 5 GB database and is benchmarks/log_scale.py's.
Targets (issue 13, 2 cores): single >= 60% of the baseline's throughput with p99 <= 30 ms; batch >=
20,000 incidents/s; 201 to signed checkpoint p99 <= 1 s at 1,000 reports/s; the log's targets are in
transparency.py.

Setup: a fresh database (default `bench_ingest`, dropped afterwards), the benchmark Redis database
(flushed), one member platform with a huge rate limit. No Celery worker runs: the API's job ends at the
durable commit and the relay's wake-up; scoring is measured by freshness.py and rescore.py. After the run
`ledger sequencer --once` integrates every pending leaf and `ledger verify` re-checks the whole log. Bodies
carry raw identifiers (a phone number, an e-mail, a device id), so normalisation and HMAC tokenisation
are part of every measured request.

    .venv/bin/python benchmarks/ingest.py [--seconds 20] [--batches 30] [--log-leaves 1000000]
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
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common as c
from benchmarks import transparency
from ledger.api.vocabulary import CATEGORIES, CONFIRMATIONS
from ledger.storage.queue import PROCESS_OUTBOX


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


def _post_at_rate(
    port: int, key: str, rate: int, seconds: int, tag: str, out: list[tuple[bytes, float]], bad: list[int]
) -> None:
    """POST a batch of rate/10 reports every 100 ms for `seconds`; record each 201's leaf and wall time."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    rng = random.Random(3)
    occurred = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    per_tick, ticks = max(1, rate // 10), seconds * 10
    start = time.monotonic()
    for tick in range(ticks):
        body = json.dumps(
            {"incidents": [incident(f"{tag}-{tick}-{i}", rng, occurred) for i in range(per_tick)]},
            separators=(",", ":"),
        ).encode()
        conn.request("POST", "/v1/incidents/batch", body, headers)
        response = conn.getresponse()
        payload = response.read()
        answered = time.time()
        if response.status != 200:
            bad.append(response.status)
        else:
            for result in json.loads(payload)["results"]:
                if result["status"] == 201:
                    out.append((bytes.fromhex(result["incident"]["receipt"]["leaf_hash"]), answered))
                else:
                    bad.append(result["status"])
        ahead = start + (tick + 1) / 10 - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)


def checkpoint_latency(
    port: int, key: str, url: str, env: dict[str, str], rate: int, seconds: int, tag: str
) -> tuple[list[float], float, int]:
    """Seconds from each 201 (as the client received it) to the signature of the first checkpoint that
    includes its leaf, with `ledger sequencer` running; also the rate achieved and the non-201 count."""
    answered: list[tuple[bytes, float]] = []
    bad: list[int] = []
    with c.Process([str(c.BIN / "ledger"), "sequencer"], env, "sequencer"):
        time.sleep(2.0)  # started, loaded the tree and caught up with what is pending
        # Two clients, each half the rate: one batch can take longer than its 100 ms slot on a loaded
        # machine, and a single client would then fall behind the asked rate.
        started = time.monotonic()
        clients = [
            threading.Thread(
                target=_post_at_rate, args=(port, key, rate // 2, seconds, f"{tag}-{n}", answered, bad)
            )
            for n in range(2)
        ]
        for client in clients:
            client.start()
        for client in clients:
            client.join()
        achieved = len(answered) / (time.monotonic() - started)
        deadline = time.monotonic() + 30
        with psycopg.connect(url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                left = conn.execute("SELECT count(*) FROM log_pending").fetchone()
                if left is not None and left[0] == 0:
                    break
                time.sleep(0.2)
            time.sleep(0.5)  # the last checkpoint is signed just after its batch commits
            rows = conn.execute(
                """SELECT l.leaf_hash, extract(epoch FROM (SELECT min(signed_at) FROM log_checkpoints c
                                                          WHERE c.tree_size > l.idx))
                   FROM log_leaves l WHERE l.leaf_hash = ANY(%s)""",
                ([leaf for leaf, _ in answered],),
            ).fetchall()
    signed = {bytes(r[0]): float(r[1]) for r in rows if r[1] is not None}
    lags = [signed[leaf] - at for leaf, at in answered if leaf in signed]
    missing = len(answered) - len(lags)
    return lags, achieved, len(bad) + missing


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
    parser.add_argument("--rate", type=int, default=1000, help="reports/s for the 201-to-checkpoint run")
    parser.add_argument("--rate-seconds", type=int, default=15)
    parser.add_argument(
        "--log-leaves", type=int, default=1_000_000, help="transparency.py's log size (0: skip the log)"
    )
    parser.add_argument("--proofs", type=int, default=2000, help="inclusion proofs transparency.py serves")
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

        # -- baselines: bare Flask, one INSERT + commit, same wrk script; gunicorn sync (the issue's) and
        #    the ledger's own server configuration --------------------------------------------------------
        baselines = {}
        for name, server in (("gunicorn sync", c.BASELINE_SERVER), ("same server", config)):
            with c.baseline_server(env, server, "insert") as port:
                lua = single_lua(f"{run_tag}-base-{server.server}", key, occurred)
                c.wrk(f"http://127.0.0.1:{port}", lua, args.connections, 3)  # warm-up
                c.say(f"  ({c.load()} before the baseline under {server})")
                baselines[name] = c.wrk(f"http://127.0.0.1:{port}", lua, args.connections, args.seconds)
                c.say(
                    f"baseline  single POST, INSERT+commit, {server}, {args.connections} conns: "
                    f"{baselines[name].line()}"
                )
        base = baselines["gunicorn sync"]

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
            # -- 201 to inclusion in a signed checkpoint --------------------------------------------------
            c.ledger_cli(env, "sequencer", "--once")  # start the timed run with nothing pending
            c.say(f"  ({c.load()} before the 201-to-checkpoint run)")
            lags, achieved, lost = checkpoint_latency(
                port, key, url, env, args.rate, args.rate_seconds, f"{run_tag}-rate"
            )
            lag_p99 = c.percentile(lags, 99) * 1000 if lags else float("inf")
            c.say(
                f"ledger    201 -> signed checkpoint, {args.rate} reports/s asked, {achieved:.0f}/s achieved, "
                f"{len(lags)} reports: p50 {c.percentile(lags, 50) * 1000 if lags else 0:.0f} ms, p99 "
                f"{lag_p99:.0f} ms, max {max(lags, default=0) * 1000:.0f} ms; not 201 or never included: {lost}"
            )

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

    log = (
        transparency.run(f"{args.database}_log", args.log_leaves, 1000, 10, args.proofs)
        if args.log_leaves
        else {}
    )

    ratio = single.rps / base.rps
    batch_ok = batch["per_second"] >= 20_000
    single_ok = ratio >= 0.60 and single.p99_ms <= 30
    lag_ok = lag_p99 <= 1000 and achieved >= 0.95 * args.rate
    same = baselines["same server"]
    c.say("")
    c.say(
        f"single: {single.rps:.0f} req/s = {ratio:.0%} of the gunicorn sync baseline {base.rps:.0f} req/s "
        f"({single.rps / same.rps:.0%} of the bare app under {config}, {same.rps:.0f} req/s), "
        f"p50 {single.p50_ms:.1f} ms, p99 {single.p99_ms:.1f} ms   target >= 60% and p99 <= 30 ms   "
        f"{'MET' if single_ok else 'MISSED'}"
    )
    c.say(
        f"batch:  {batch['per_second']:.0f} incidents/s   target >= 20,000   {'MET' if batch_ok else 'MISSED'}"
    )
    c.say(
        f"201 -> signed checkpoint: p99 {lag_p99:.0f} ms at {achieved:.0f} reports/s   target p99 <= 1 s at "
        f"{args.rate}/s   {'MET' if lag_ok else 'MISSED'}"
    )
    for name, value, unit, target, ok in (
        ("sequencer integration", log.get("integration"), "leaves/s", ">= 50,000", lambda v: v >= 50_000),
        ("inclusion proof p99", log.get("proof_p99_ms"), "ms", "<= 5 ms (at 10,000,000: log_scale.py)", None),
        (
            "verify-remote, step + 100 proofs",
            log.get("verify_remote_ms"),
            "ms",
            "<= 1,000",
            lambda v: v <= 1000,
        ),
        ("ledger verify", log.get("verify_s"), "s", "<= 60 s at 1,000,000", None),
    ):
        if value is not None:
            verdict = "" if ok is None else ("MET" if ok(value) else "MISSED")
            extra = f" for {log['verify_leaves']:,.0f} leaves" if name == "ledger verify" else ""
            c.say(f"{name}: {value:,.1f} {unit}{extra}   target {target}   {verdict}")
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
