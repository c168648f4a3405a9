"""Soak: a bounded mixed load against a served instance, then the promises checked.

Starts its own database, `ledger serve`, `ledger worker` and `ledger beat`, then runs several client
processes on 127.0.0.1 for N minutes: ~90% lookups, ~5% reports, ~5% disputes, retractions and batch
calls. At the end it checks and prints:
  zero 5xx; every incident that got 201 is in the ledger; every lookup that got 200 has its audit
  record; stored scores equal a from-scratch recompute; `ledger verify` passes; RSS of the API and
  worker processes at start and end; throughput; p50 and p99 per endpoint.
Exit status 0 only if every check passes. `tests/e2e/test_soak.py` runs a 45-second version in CI.

    python benchmarks/soak.py --minutes 5 --clients 4
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ledger.embedded import free_port  # noqa: E402 (importable once ROOT is on the path)

CATEGORIES = ["fabricated_evidence", "false_damage_claim", "false_not_received", "refund_only_abuse"]
CONFIRMATIONS = ["platform_review", "merchant_evidence", "consumer_admission"]


def phone(n: int) -> str:
    return f"138{n:08d}"


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def tree(pid: int) -> list[int]:
    out = [pid]
    try:
        children = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
        ).stdout.split()
    except OSError:
        return out
    for child in children:
        out.extend(tree(int(child)))
    return out


def tree_rss_mb(pid: int) -> float:
    return round(sum(rss_kb(p) for p in tree(pid)) / 1024, 1)


class Client:
    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method: str, path: str, key: str, body: Any = None) -> tuple[int, Any, float]:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        started = time.perf_counter()
        for attempt in range(2):
            try:
                self.conn.request(
                    method, path, body=json.dumps(body) if body is not None else None, headers=headers
                )
                response = self.conn.getresponse()
                raw = response.read()
                elapsed = time.perf_counter() - started
                return response.status, (json.loads(raw) if raw else None), elapsed
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt:
                    raise
        raise AssertionError("unreachable")


def client_loop(
    index: int, port: int, keys: dict[str, str], seconds: float, out: str, consumers: int
) -> None:
    rng = random.Random(index)
    client = Client(port)
    platforms = [k for k in keys if k != "operator"]
    samples: list[tuple[str, int, float]] = []
    created: list[str] = []
    lookup_ids: list[str] = []
    mine: list[tuple[str, str, str]] = []  # (incident id, phone, platform)
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        roll = rng.random()
        platform = rng.choice(platforms)
        consumer = phone(rng.randrange(consumers))
        if roll < 0.90:
            ids = [{"type": "phone", "value": consumer}]
            if rng.random() < 0.5:
                ids.append({"type": "email", "value": f"c{consumer}@example.com"})
            body = {
                "identifiers": ids,
                "purpose": "refund_review",
                "refund": {"reference": f"r-{index}-{n}", "kind": "refund_only"},
            }
            status, reply, elapsed = client.call("POST", "/v1/lookups", keys[platform], body)
            samples.append(("POST /v1/lookups", status, elapsed))
            if status == 200:
                lookup_ids.append(reply["lookup_id"])
        elif roll < 0.95:
            body = {
                "external_id": f"soak-{index}-{n}-{uuid.uuid4().hex[:6]}",
                "category": rng.choice(CATEGORIES),
                "confirmation": rng.choice(CONFIRMATIONS),
                "amount": {"value": rng.randrange(1000, 2_000_000), "currency": "CNY"},
                "occurred_at": "2026-10-01T12:00:00+08:00",
                "consumer_notified_at": "2026-10-02T12:00:00+08:00",
                "identifiers": [
                    {"type": "phone", "value": consumer},
                    {"type": "email", "value": f"c{consumer}@example.com"},
                ],
            }
            status, reply, elapsed = client.call("POST", "/v1/incidents", keys[platform], body)
            samples.append(("POST /v1/incidents", status, elapsed))
            if status == 201:
                created.append(reply["id"])
                mine.append((reply["id"], consumer, platform))
        else:
            kind = rng.choice(["dispute", "retract", "lookup_batch", "incident_batch"])
            if kind == "dispute" and mine:
                incident_id, who, _ = rng.choice(mine)
                body = {
                    "identifiers": [{"type": "phone", "value": who}],
                    "incident_id": incident_id,
                    "statement": "不是我",
                }
                status, _, elapsed = client.call("POST", "/v1/disputes", keys["operator"], body)
                samples.append(("POST /v1/disputes", status, elapsed))
            elif kind == "retract" and mine:
                incident_id, _, owner = mine.pop(rng.randrange(len(mine)))
                status, _, elapsed = client.call(
                    "POST",
                    f"/v1/incidents/{incident_id}/retract",
                    keys[owner],
                    {"reason": "reported_in_error"},
                )
                samples.append(("POST /v1/incidents/{id}/retract", status, elapsed))
            elif kind == "lookup_batch":
                items = [
                    {
                        "identifiers": [{"type": "phone", "value": phone(rng.randrange(consumers))}],
                        "purpose": "account_review",
                    }
                    for _ in range(10)
                ]
                status, reply, elapsed = client.call(
                    "POST", "/v1/lookups/batch", keys[platform], {"lookups": items}
                )
                samples.append(("POST /v1/lookups/batch", status, elapsed))
                if status == 200:
                    lookup_ids.extend(
                        r["lookup"]["lookup_id"] for r in reply["results"] if r["status"] == 200
                    )
            else:
                items = [
                    {
                        "external_id": f"soakb-{index}-{n}-{i}",
                        "category": "refund_only_abuse",
                        "confirmation": "platform_review",
                        "amount": {"value": 5000, "currency": "CNY"},
                        "occurred_at": "2026-09-01T12:00:00+08:00",
                        "consumer_notified_at": "2026-09-02T12:00:00+08:00",
                        "identifiers": [{"type": "phone", "value": phone(rng.randrange(consumers))}],
                    }
                    for i in range(20)
                ]
                status, reply, elapsed = client.call(
                    "POST", "/v1/incidents/batch", keys[platform], {"incidents": items}
                )
                samples.append(("POST /v1/incidents/batch", status, elapsed))
                if status == 200:
                    created.extend(r["incident"]["id"] for r in reply["results"] if r["status"] == 201)
    Path(out).write_text(json.dumps({"samples": samples, "created": created, "lookups": lookup_ids}))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def run(seconds: float, clients: int, consumers: int, pg_server: str, redis_url: str, keep: bool) -> int:
    from ledger.config import Settings
    from ledger.services import platforms, scoring
    from ledger.services.runtime import Runtime
    from ledger.storage.db import apply_schema

    name = f"ledger_soak_{os.getpid()}"
    base = pg_server.rpartition("/")[0]
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{base}/{name}"
    apply_schema(url)
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": redis_url,
        "LEDGER_ENV": "test",
        "LEDGER_IDENTITY_KEY": "soak-identity-key-0123456789",
        "LEDGER_RATE_LIMIT_PER_SECOND": "100000",
        "LEDGER_RATE_LIMIT_BURST": "100000",
    }
    settings = Settings.from_env(env).require_services()
    rt = Runtime(settings)
    keys = {}
    for slug in ("north", "south", "east"):
        keys[slug] = platforms.create_platform(rt, slug, slug.title(), "report,lookup").key
    keys["operator"] = platforms.create_platform(rt, "operator", "Operator", "dispute", operator=True).key

    port = free_port()
    logs = Path(tempfile.mkdtemp(prefix="ledger-soak-"))
    procs = {
        "api": subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
            env=env,
            cwd=ROOT,
            start_new_session=True,
            stdout=(logs / "api.log").open("wb"),
            stderr=subprocess.STDOUT,
        ),
        "worker": subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", "worker", "--concurrency", "2"],
            env=env,
            cwd=ROOT,
            start_new_session=True,
            stdout=(logs / "worker.log").open("wb"),
            stderr=subprocess.STDOUT,
        ),
        "beat": subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", "beat"],
            env={**env, "LEDGER_STATE_DIR": str(logs)},
            cwd=ROOT,
            start_new_session=True,
            stdout=(logs / "beat.log").open("wb"),
            stderr=subprocess.STDOUT,
        ),
    }
    failures: list[str] = []
    try:
        deadline = time.monotonic() + 40
        while True:
            try:
                Client(port).call("GET", "/healthz", "x")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        time.sleep(2)  # let the worker connect
        rss_start = {k: tree_rss_mb(p.pid) for k, p in procs.items() if k != "beat"}
        outs = [str(logs / f"client-{i}.json") for i in range(clients)]
        started = time.monotonic()
        workers = [
            mp.Process(target=client_loop, args=(i, port, keys, seconds, outs[i], consumers))
            for i in range(clients)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wall = time.monotonic() - started
        rss_end = {k: tree_rss_mb(p.pid) for k, p in procs.items() if k != "beat"}

        samples: list[tuple[str, int, float]] = []
        created: list[str] = []
        lookup_ids: list[str] = []
        for out in outs:
            part = json.loads(Path(out).read_text())
            samples.extend(tuple(s) for s in part["samples"])  # type: ignore[misc]
            created.extend(part["created"])
            lookup_ids.extend(part["lookups"])

        # Let the workers drain the outbox (the beat sweep re-sends anything lost).
        drain_deadline = time.monotonic() + 120
        with psycopg.connect(url) as conn:
            while True:
                pending = conn.execute("SELECT count(*) FROM outbox WHERE done_at IS NULL").fetchone()[0]  # type: ignore[index]
                if pending == 0 or time.monotonic() > drain_deadline:
                    break
                time.sleep(0.5)
            if pending:
                failures.append(f"{pending} outbox rows still pending after the drain")
            have = {
                str(r[0])
                for r in conn.execute("SELECT id FROM incidents WHERE id = ANY(%s::uuid[])", (created,))
            }
            missing_incidents = len(set(created) - have)
            audited = {
                str(r[0])
                for r in conn.execute("SELECT id FROM lookups WHERE id = ANY(%s::uuid[])", (lookup_ids,))
            }
            missing_audit = len(set(lookup_ids) - audited)
            before = {
                r[0]: (r[1], r[2]) for r in conn.execute("SELECT subject_id, score, tier FROM risk_scores")
            }
        scoring.rescore_all(rt)
        with psycopg.connect(url) as conn:
            after = {
                r[0]: (r[1], r[2]) for r in conn.execute("SELECT subject_id, score, tier FROM risk_scores")
            }
        score_mismatches = sum(1 for s, v in after.items() if before.get(s) != v)
        verify = subprocess.run(
            [sys.executable, "-m", "ledger.cli", "verify", "--json"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )

        by_endpoint: dict[str, list[float]] = defaultdict(list)
        statuses: dict[int, int] = defaultdict(int)
        for endpoint, status, elapsed in samples:
            by_endpoint[endpoint].append(elapsed)
            statuses[status] += 1
        errors_5xx = sum(c for s, c in statuses.items() if s >= 500)
        print(
            f"soak: {wall:.0f} s, {clients} client processes, {len(samples)} requests, "
            f"{len(samples) / wall:.0f} req/s; statuses {dict(sorted(statuses.items()))}"
        )
        print(f"{'endpoint':<34}{'count':>8}{'p50 ms':>10}{'p99 ms':>10}")
        for endpoint, values in sorted(by_endpoint.items()):
            print(
                f"{endpoint:<34}{len(values):>8}{percentile(values, 0.5) * 1000:>10.1f}"
                f"{percentile(values, 0.99) * 1000:>10.1f}"
            )
        print(f"RSS MB at start {rss_start}, at end {rss_end}")
        checks = {
            "zero 5xx": errors_5xx == 0,
            f"all {len(created)} created incidents in the ledger": missing_incidents == 0,
            f"all {len(lookup_ids)} answered lookups audited": missing_audit == 0,
            f"{len(after)} scores equal a from-scratch recompute": score_mismatches == 0,
            "ledger verify passes": verify.returncode == 0,
        }
        for label, ok in checks.items():
            print(f"  [{'ok' if ok else 'FAIL'}] {label}")
            if not ok:
                failures.append(label)
        if verify.returncode != 0:
            print(verify.stdout, verify.stderr)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        rt.close()
        if not keep:
            with psycopg.connect(pg_server, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print("soak: PASS" if not failures else f"soak: FAIL ({'; '.join(failures)})")
    return 0 if not failures else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=None, help="overrides --minutes")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--consumers", type=int, default=2000)
    parser.add_argument(
        "--pg-server", default=os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/10")
    parser.add_argument("--keep", action="store_true", help="keep the database for inspection")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    return run(seconds, args.clients, args.consumers, args.pg_server, args.redis_url, args.keep)


if __name__ == "__main__":
    sys.exit(main())
