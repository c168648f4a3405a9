"""Lookup benchmark: POST /v1/lookups against `ledger serve` over a large ledger, driven by wrk.

Setup: a fresh database (default `bench_lookup`) with 1,000,000 incidents over 300,000 subjects copied in
(benchmarks/_synth.py; the hash chain is skipped, see there), scores computed by
`ledger.services.scoring.rescore_all`, which also fills the Redis cache (database 7). One member platform
with a rate limit of 1,000,000/s, so quotas are checked (one Lua call per lookup) but never refuse.

Load: wrk with a Lua script drawing from a pre-generated pool of request bodies: 90% unknown consumers,
10% known ones, 2 to 3 raw identifiers each (phone in local format, upper-case e-mail, sometimes a device
id: normalisation and HMAC tokenisation are part of every request), purpose refund_review with a refund
reference. Every answered lookup writes its audit record (INSERT + commit) before the response.

Baseline, same run, same gunicorn options, same wrk script: a bare Flask POST that parses the body, does
one Redis GET and returns the value (benchmarks/baseline_app.py).
Targets (2 cores): >= 70% of the baseline's throughput; p99 <= 15 ms at 16 connections.
Also printed, at 16 connections: the "floor", the same bare endpoint plus one autocommit INSERT of its
answer, i.e. the two round trips every ledger lookup must make (decision read, durable audit record);
and the "unaudited" ledger, the ledger's own app with its audit INSERT replaced by nothing, an upper
bound for any way of writing the audit record (baseline_app.py --mode unaudited; never the product).

    .venv/bin/python benchmarks/lookup.py                   # the chosen server configuration
    .venv/bin/python benchmarks/lookup.py --sweep           # sync 2-5 workers and gthread variants
    .venv/bin/python benchmarks/lookup.py --keep / --reuse  # keep the loaded database / reuse it
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from benchmarks import _common as c
from benchmarks import _synth

# Every audit record queues its inquiry log leaf in the statement that writes it (docs/audit.md).
INQUIRY_LEAVES = "SELECT (SELECT count(*) FROM inquiry_pending) + (SELECT count(*) FROM inquiry_leaves)"

SWEEP = ("gthread:4x2", "gthread:2x4", "granian:2x2", "granian:2x4", "granian:4x2", "granian:2x8")

LOOKUP_LUA = """
local auth = %(auth)s
local bodies = {%(bodies)s}
local n = #bodies
local next_tid = 0
setup = function(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end
init = function(args)
  math.randomseed(os.time() + 104729 * tid)
end
request = function()
  return wrk.format("POST", "/v1/lookups",
    {["Content-Type"] = "application/json", ["Authorization"] = auth}, bodies[math.random(1, n)])
end
"""


def body_pool(subjects: int, size: int, known_share: float, seed: int = 11) -> tuple[list[str], list[bool]]:
    rng = random.Random(seed)
    bodies, known = [], []
    for n in range(size):
        is_known = rng.random() < known_share
        body = {
            "identifiers": _synth.lookup_identifiers(rng, subjects, is_known),
            "purpose": "refund_review",
            "refund": {
                "reference": f"RF{n:010d}",
                "amount": {"value": rng.randrange(1_000, 200_000), "currency": "CNY"},
                "kind": "refund_only" if rng.random() < 0.7 else "return_and_refund",
            },
        }
        bodies.append(json.dumps(body, separators=(",", ":")))
        known.append(is_known)
    return bodies, known


def lookup_lua(key: str, bodies: list[str]) -> str:
    return LOOKUP_LUA % {
        "auth": c.lua_string(f"Bearer {key}"),
        "bodies": ",\n".join(map(c.lua_string, bodies)),
    }


def sample_decisions(
    port: int, key: str, bodies: list[str], known: list[bool], count: int = 400
) -> dict[str, object]:
    """Send a sample of the pool once and tabulate the answers, to show what the load is made of."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    tiers: dict[str, dict[str, int]] = {"known": {}, "unknown": {}}
    statuses: dict[int, int] = {}
    for body, is_known in list(zip(bodies, known, strict=True))[:count]:
        conn.request("POST", "/v1/lookups", body, headers)
        response = conn.getresponse()
        payload = response.read()
        statuses[response.status] = statuses.get(response.status, 0) + 1
        if response.status == 200:
            tier = json.loads(payload)["decision"]["tier"]
            group = tiers["known" if is_known else "unknown"]
            group[tier] = group.get(tier, 0) + 1
    return {"statuses": statuses, **tiers}


def prepare_database(url: str, incidents: int, subjects: int) -> None:
    from ledger.config import Settings
    from ledger.services import scoring
    from ledger.services.runtime import Runtime

    started = time.perf_counter()
    counts = _synth.load(url, incidents, subjects)
    c.say(f"loaded {counts} in {time.perf_counter() - started:.0f} s")
    rt = Runtime(
        Settings(database_url=url, redis_url=c.REDIS_URL, identity_key=c.IDENTITY_KEY, log_key=c.LOG_KEY)
    )
    try:
        started = time.perf_counter()
        scored = scoring.rescore_all(rt)
        c.say(
            f"scored {scored} subjects (rescore_all, PostgreSQL + Redis) in {time.perf_counter() - started:.0f} s"
        )
    finally:
        rt.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) risk_scores")


def rebuild_cache(url: str) -> None:
    """`ledger cache rebuild`, in chunks of 500 subjects: on a loaded machine a 5,000-subject chunk's
    script can outlast the cache client's 0.5 s socket timeout."""
    from ledger.config import Settings
    from ledger.services import cache_rebuild
    from ledger.services.runtime import Runtime

    rt = Runtime(Settings(database_url=url, redis_url=c.REDIS_URL, identity_key=c.IDENTITY_KEY))
    try:
        started = time.perf_counter()
        written = cache_rebuild.rebuild_cache(rt, chunk=500)
        c.say(f"cache rebuilt: {written} entries in {time.perf_counter() - started:.0f} s")
    finally:
        rt.close()


def measure_cpu(
    port: int, url: str, lua: str, connections: int, seconds: int
) -> tuple[c.WrkResult, dict[str, float]]:
    """One wrk run, with the CPU each process group used during it."""
    meter = c.CpuMeter(c.SERVER_PIDS[port], url, c.REDIS_URL)
    before = meter.snapshot()
    result = c.wrk(f"http://127.0.0.1:{port}", lua, connections, seconds)
    return result, c.CpuMeter.delta(before, meter.snapshot())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--incidents", type=int, default=1_000_000)
    parser.add_argument("--subjects", type=int, default=300_000)
    parser.add_argument(
        "--seconds", type=int, default=20, help="duration of each measured wrk run (default 20)"
    )
    parser.add_argument("--connections", default="16,64")
    parser.add_argument(
        "--config",
        action="append",
        help=f"the ledger's server configuration(s): sync:N, gthread:NxT or granian:NxT (default "
        f"{c.DEFAULT_SERVER}); repeatable",
    )
    parser.add_argument("--sweep", action="store_true", help=f"try {', '.join(SWEEP)}")
    parser.add_argument(
        "--bounds",
        action="store_true",
        help="also measure the floor (Redis GET + one durable INSERT) and the unaudited ledger",
    )
    parser.add_argument("--known-share", type=float, default=0.10)
    parser.add_argument("--pool", type=int, default=20_000, help="distinct request bodies (default 20,000)")
    parser.add_argument("--database", default="bench_lookup")
    parser.add_argument(
        "--keep", action="store_true", help="keep the loaded database and the Redis cache afterwards"
    )
    parser.add_argument(
        "--reuse", action="store_true", help="reuse a database kept by --keep (skip the load)"
    )
    args = parser.parse_args()
    configs = [c.parse_config(x) for x in (SWEEP if args.sweep else args.config or [c.DEFAULT_SERVER])]
    connections = [int(x) for x in args.connections.split(",")]

    c.say(f"lookup benchmark: {args.incidents} incidents over {args.subjects} subjects; {c.load()}")
    url = c.db_url(args.database)
    if args.reuse:
        import redis

        if redis.Redis.from_url(c.REDIS_URL).dbsize() < args.subjects:
            c.say(f"reusing database {args.database}; rebuilding the Redis cache")
            c.flush_redis()
            rebuild_cache(url)
        else:
            c.say(f"reusing database {args.database} and the Redis cache a --keep run left")
        database = None
    else:
        c.flush_redis()
        database = c.bench_database(args.database, keep=args.keep)
        database.__enter__()
        prepare_database(url, args.incidents, args.subjects)
    env = c.ledger_env(url)
    slug = f"bench-lookup-{int(time.time())}"
    key = c.member(env, slug, "lookup")
    with psycopg.connect(url) as conn:
        audited_before = conn.execute("SELECT count(*) FROM lookups").fetchone()[0]  # type: ignore[index]
        leaves_before = conn.execute(INQUIRY_LEAVES).fetchone()[0]  # type: ignore[index]
    bodies, known = body_pool(args.subjects, args.pool, args.known_share)
    lua = lookup_lua(key, bodies)
    ledger: dict[tuple[c.ServerConfig, int], c.WrkResult] = {}
    cpu: dict[c.ServerConfig, dict[str, float]] = {}
    limits: dict[tuple[c.ServerConfig, int], c.WrkResult] = {}
    baseline: dict[int, c.WrkResult] = {}
    floors: dict[c.ServerConfig, c.WrkResult] = {}
    ceilings: dict[c.ServerConfig, c.WrkResult] = {}
    sent = 0
    try:
        with c.baseline_server(env, c.BASELINE_SERVER, "redis") as port:
            c.wrk(f"http://127.0.0.1:{port}", lua, max(connections), 5)
            for n in connections:
                c.say(f"  ({c.load()} before the baseline, {n} conns)")
                baseline[n] = c.wrk(f"http://127.0.0.1:{port}", lua, n, args.seconds)
                c.say(f"baseline {c.BASELINE_SERVER!s:<22} {n:3d} conns: {baseline[n].line()}")
        for config in configs:
            with c.ledger_server(env, config) as port:
                if config is configs[0]:
                    c.say(
                        f"sample of the load (first 400 bodies, answered once): {sample_decisions(port, key, bodies, known)}"
                    )
                    sent += 400
                warm = c.wrk(f"http://127.0.0.1:{port}", lua, max(connections), 5)
                sent += warm.requests
                for n in connections:
                    c.say(f"  ({c.load()} before ledger {config}, {n} conns)")
                    r, used = measure_cpu(port, url, lua, n, args.seconds)
                    sent += r.requests
                    ledger[config, n] = r
                    if n == connections[0]:
                        cpu[config] = {group: seconds / r.requests * 1e6 for group, seconds in used.items()}
                    c.say(f"ledger   {config!s:<22} {n:3d} conns: {r.line()}")
            if config != c.BASELINE_SERVER:
                with c.baseline_server(env, config, "redis") as port:
                    c.wrk(f"http://127.0.0.1:{port}", lua, max(connections), 5)
                    for n in connections:
                        c.say(f"  ({c.load()} before the limit {config}, {n} conns)")
                        limits[config, n] = c.wrk(f"http://127.0.0.1:{port}", lua, n, args.seconds)
                        c.say(f"limit    {config!s:<22} {n:3d} conns: {limits[config, n].line()}")
            if args.bounds:
                with c.baseline_server(env, config, "floor") as port:
                    c.wrk(f"http://127.0.0.1:{port}", lua, 16, 5)
                    c.say(f"  ({c.load()} before floor {config}, 16 conns)")
                    floors[config] = c.wrk(f"http://127.0.0.1:{port}", lua, 16, args.seconds)
                    c.say(f"floor    {config!s:<22}  16 conns: {floors[config].line()}")
                with c.baseline_server(env, config, "unaudited") as port:
                    c.wrk(f"http://127.0.0.1:{port}", lua, 16, 5)
                    c.say(f"  ({c.load()} before unaudited {config}, 16 conns)")
                    ceilings[config] = c.wrk(f"http://127.0.0.1:{port}", lua, 16, args.seconds)
                    c.say(f"unaudited {config!s:<21}  16 conns: {ceilings[config].line()}")
        time.sleep(1.5)  # the last answers' records are durable before they are sent; let wrk's cut-offs land
        with psycopg.connect(url) as conn:
            audited = conn.execute("SELECT count(*) FROM lookups").fetchone()[0] - audited_before  # type: ignore[index]
            leaves = conn.execute(INQUIRY_LEAVES).fetchone()[0] - leaves_before  # type: ignore[index]
    finally:
        if database is not None:
            database.__exit__(None, None, None)
        if not (args.keep or args.reuse):
            c.flush_redis()

    c.say("")
    c.say(f"baseline: bare Flask + one Redis GET under gunicorn {c.BASELINE_SERVER}")
    c.say(
        f"{'ledger configuration':<24}{'conns':>6}{'ledger req/s':>14}{'baseline req/s':>16}{'ratio':>7}"
        f"{'p50 ms':>8}{'p99 ms':>8}{'limit req/s':>13}{'of limit':>10}"
    )
    ok = True
    for (config, n), r in ledger.items():
        base = baseline[n]
        ratio = r.rps / base.rps
        limit = limits.get((config, n), base if config == c.BASELINE_SERVER else None)
        limit_text = f"{limit.rps:>13.0f}{r.rps / limit.rps:>10.0%}" if limit else ""
        c.say(
            f"{config!s:<24}{n:>6}{r.rps:>14.0f}{base.rps:>16.0f}{ratio:>7.0%}{r.p50_ms:>8.2f}{r.p99_ms:>8.2f}{limit_text}"
        )
        if n == 16:
            ok = ok and ratio >= 0.70 and r.p99_ms <= 15
            if config in floors:
                floor = floors[config]
                c.say(
                    f"{'':<30}floor (Redis GET + audit INSERT): {floor.rps:.0f} req/s, p99 {floor.p99_ms:.2f} ms; "
                    f"ledger = {r.rps / floor.rps:.0%} of it"
                )
            if config in ceilings:
                ceiling = ceilings[config]
                c.say(
                    f"{'':<30}unaudited ledger (audit write removed): {ceiling.rps:.0f} req/s = "
                    f"{ceiling.rps / base.rps:.0%} of the baseline, p99 {ceiling.p99_ms:.2f} ms"
                )
        ok = ok and r.bad == 0
    for config, per_lookup in cpu.items():
        parts = ", ".join(f"{group} {us:.0f} µs" for group, us in per_lookup.items())
        c.say(
            f"CPU per lookup, {config} at {connections[0]} conns: {parts}; total {sum(per_lookup.values()):.0f} µs "
            f"(wrk and the machine's other work not counted)"
        )
    c.say(
        f"inquiry log leaves queued or integrated: {leaves} for the {audited} records "
        f"({'every record has its leaf' if leaves == audited else 'MISSING'})"
    )
    c.say(
        f"audit records {audited} for {sent} lookups answered to the clients ({'none lost' if audited >= sent else 'LOST'}; "
        f"requests cut off when wrk stops are answered and audited but not counted)"
    )
    c.say(
        f"targets: >= 70% of baseline and p99 <= 15 ms at 16 conns: {'MET' if ok else 'MISSED'}   ({c.load()} at the end)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
