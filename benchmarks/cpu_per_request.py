"""CPU per request in-process: the ledger's lookup and single report against their bare baselines.

A diagnostic for the two throughput targets, not a target of its own. Each WSGI app is called directly
(no HTTP server, no load generator), so the figures are the application's own CPU per request, measured
with `time.process_time` over N requests after a warm-up. The gap between these ratios and the served
ratios of lookup.py and ingest.py is what the server, PostgreSQL and Redis add under load
(docs/performance.md, "What bounds the missed targets").

Setup: a fresh database (default `bench_cpu`, dropped afterwards) with 30,000 synthetic incidents over
10,000 scored subjects, and Redis database 7. Lookup bodies are lookup.py's (90% unknown consumers,
2 to 3 raw identifiers); report bodies are ingest.py's (phone, e-mail and device id, all raw).

    .venv/bin/python benchmarks/cpu_per_request.py [-n 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from werkzeug.test import EnvironBuilder

from benchmarks import _common as c
from benchmarks import _synth
from benchmarks.baseline_app import create_table, make_app
from benchmarks.ingest import incident
from benchmarks.lookup import body_pool

INCIDENTS, SUBJECTS = 30_000, 10_000


def environs(path: str, bodies: list[str], key: str) -> list[dict[str, Any]]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    return [EnvironBuilder(path=path, method="POST", data=b, headers=headers).get_environ() for b in bodies]


def cpu_per_request(
    app: Callable[..., Any], envs: list[dict[str, Any]]
) -> tuple[float, float, dict[str, int]]:
    """(CPU µs, wall µs) per request, and the response statuses."""
    statuses: dict[str, int] = {}

    def start_response(status: str, _headers: Any, _exc: Any = None) -> None:
        statuses[status] = statuses.get(status, 0) + 1

    cpu, wall = time.process_time(), time.perf_counter()
    for env in envs:
        for _ in app(env, start_response):
            pass
    n = len(envs)
    return (time.process_time() - cpu) / n * 1e6, (time.perf_counter() - wall) / n * 1e6, statuses


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=2000, help="requests per measurement (default 2,000)")
    parser.add_argument("--database", default="bench_cpu")
    args = parser.parse_args()

    from ledger import create_app
    from ledger.config import Settings
    from ledger.services import platforms, scoring
    from ledger.services.runtime import Runtime

    c.say(f"CPU per request, in-process; {c.load()}")
    c.flush_redis()
    with c.bench_database(args.database) as url:
        _synth.load(url, INCIDENTS, SUBJECTS, progress=False)
        settings = Settings(
            database_url=url, redis_url=c.REDIS_URL, identity_key=c.IDENTITY_KEY, log_key=c.LOG_KEY
        )
        rt = Runtime(settings)
        try:
            scoring.rescore_all(rt)
        finally:
            rt.close()
        ledger = create_app(settings)
        runtime = ledger.extensions["ledger.runtime"]
        member = platforms.create_platform(runtime, "bench-cpu", "Bench CPU", "report,lookup")
        platforms.set_rate_limit(runtime, "bench-cpu", 1_000_000, 1_000_000)
        os.environ["DATABASE_URL"], os.environ["REDIS_URL"] = url, c.REDIS_URL
        create_table("insert")
        baselines = {"redis": make_app("redis"), "insert": make_app("insert")}

        lookups, _ = body_pool(SUBJECTS, args.n, 0.10)
        rng = random.Random(5)
        occurred = (datetime.now(UTC) - timedelta(days=3)).isoformat()

        def reports(tag: str) -> list[str]:
            return [json.dumps(incident(f"{tag}-{i}", rng, occurred)) for i in range(args.n)]

        rows = []
        for name, path, app, bodies in (
            ("lookup", "/v1/lookups", ledger, lambda _tag: lookups),
            ("baseline: Flask + Redis GET", "/v1/lookups", baselines["redis"], lambda _tag: lookups),
            ("single report", "/v1/incidents", ledger, reports),
            ("baseline: Flask + INSERT + commit", "/v1/incidents", baselines["insert"], reports),
        ):
            cpu_per_request(app, environs(path, bodies(f"warm-{name}")[:200], member.key))
            cpu, wall, statuses = cpu_per_request(app, environs(path, bodies(f"run-{name}"), member.key))
            rows.append((name, cpu, wall))
            c.say(f"{name:<36} CPU {cpu:8.0f} µs   wall {wall:8.0f} µs   {statuses}")
        runtime.close()
    c.say("")
    c.say(
        f"lookup: {rows[0][1] / rows[1][1]:.1f}x the baseline's CPU; report: {rows[2][1] / rows[3][1]:.1f}x"
    )
    c.say(f"({c.load()} at the end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
