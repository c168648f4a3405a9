"""Webhooks benchmark: delivery throughput, latency from commit to delivery, and the cost to reports.

Starts `ledger serve` and `ledger worker` (Celery, Redis database 7) on a fresh database (default
`bench_webhooks`), with a local receiver (a threaded HTTP server in this process) registered as the
endpoint of one platform for every event type. Events are committed the way the services commit them:
`webhooks.emit` in a transaction, with its outbox row, then the relay's wake-up.

1. Throughput: N events (default 2,000) committed in one transaction; delivered events per second,
   from the commit to the last receipt.
2. Latency at a steady rate (default 100 events/s for 20 s), one event per commit: p50/p99 from the
   event's commit to its receipt. Target: p99 <= 2 s.
3. Report throughput (wrk, POST /v1/incidents as benchmarks/ingest.py sends them) without webhooks,
   with webhooks flowing at the steady rate, and without again; the loss is measured against the mean of
   the two runs without. Target: <= 5% loss.

    .venv/bin/python benchmarks/webhooks.py [--events 2000] [--rate 100] [--seconds 20] [--report-seconds 15]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common as c
from benchmarks.ingest import single_lua


class Receiver:
    """Records the receipt time of every event id; answers 204 at once."""

    def __init__(self) -> None:
        self.received: dict[str, float] = {}
        self.duplicates = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                now = time.time()
                event_id = self.headers.get("webhook-id", "")
                with receiver.lock:
                    if event_id in receiver.received:
                        receiver.duplicates += 1
                    else:
                        receiver.received[event_id] = now
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self) -> int:
        with self.lock:
            return len(self.received)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Emitter:
    """Commits events as the services do, in this process (a Runtime on the benchmark's database)."""

    def __init__(self, env: dict[str, str], platform_id: int) -> None:
        from ledger.config import Settings
        from ledger.services.runtime import Runtime

        self.rt = Runtime(Settings.from_env(env).require_services())
        self.platform_id = platform_id

    def commit(self, n: int) -> tuple[list[str], float]:
        """n events in one transaction; their ids and the time the commit returned."""
        from ledger.services import webhooks
        from ledger.services.incidents import after_commit

        with self.rt.db.transaction() as conn:
            ids = [
                webhooks.emit(
                    conn,
                    "incident.retracted",
                    self.platform_id,
                    {
                        "incident_id": "00000000-0000-0000-0000-000000000000",
                        "external_id": "bench",
                        "reason": "x",
                    },
                )
                for _ in range(n)
            ]
        committed = time.time()
        after_commit(self.rt, [])  # the relay's wake-up, as after any commit with outbox rows
        return ids, committed

    def close(self) -> None:
        self.rt.close()


@contextlib.contextmanager
def steady(emitter: Emitter, rate: float, seconds: float) -> Iterator[dict[str, float]]:
    """A thread committing one event every 1/rate seconds for `seconds`; yields {event id: commit time}."""
    committed: dict[str, float] = {}
    stop = threading.Event()

    def run() -> None:
        start = time.monotonic()
        n = 0
        while not stop.is_set() and time.monotonic() - start < seconds:
            due = start + n / rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            ids, at = emitter.commit(1)
            committed[ids[0]] = at
            n += 1

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield committed
    finally:
        stop.set()
        thread.join()


def wait_delivered(receiver: Receiver, ids: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with receiver.lock:
            if all(i in receiver.received for i in ids):
                return True
        time.sleep(0.05)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", default="bench_webhooks")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--report-seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=2, help="Celery worker processes")
    args = parser.parse_args()

    c.say(f"webhooks benchmark; {c.load()}")
    c.flush_redis()
    receiver = Receiver()
    with c.bench_database(args.database) as url:
        env = c.ledger_env(url, LEDGER_ENV="demo", LEDGER_WEBHOOK_ALLOW_NETWORKS="127.0.0.1/32")
        c.member(env, "hooked")
        c.ledger_cli(env, "webhooks", "add", "hooked", receiver.url)
        reporter = c.member(env, "reporter")
        with c.psycopg.connect(url) as conn:
            row = conn.execute("SELECT id FROM platforms WHERE slug = 'hooked'").fetchone()
        assert row is not None
        platform_id = int(row[0])
        emitter = Emitter(env, platform_id)
        config = c.ServerConfig(2, 2, "gthread")
        try:
            with c.ledger_worker(env, args.concurrency) as worker, c.ledger_server(env, config) as port:
                # 1. throughput, and the CPU each delivered event costs the worker, PostgreSQL and Redis
                warm, _ = emitter.commit(20)  # the worker's pools and processes open before measuring
                wait_delivered(receiver, warm, timeout=60)
                meter = c.CpuMeter(worker.proc.pid, url, c.REDIS_URL)
                before = meter.snapshot()
                ids, committed = emitter.commit(args.events)
                if not wait_delivered(receiver, ids, timeout=300):
                    c.say(f"  only {receiver.count()} of {args.events} delivered within 300 s")
                    return 1
                cpu = meter.delta(before, meter.snapshot())
                last = max(receiver.received[i] for i in ids)
                c.say(
                    f"1. throughput: {args.events} events committed at once, delivered in {last - committed:.2f} s "
                    f"= {args.events / (last - committed):.0f} events/s (duplicates {receiver.duplicates}); {c.load()}"
                )
                per_event = {group: seconds * 1000 / args.events for group, seconds in cpu.items()}
                total = sum(per_event.values())
                c.say(
                    "   CPU per delivered event: "
                    + ", ".join(f"{group} {ms:.2f} ms" for group, ms in per_event.items())
                    + f"; total {total:.2f} ms, so {os.cpu_count()} idle cores would deliver about "
                    f"{(os.cpu_count() or 1) * 1000 / total:.0f} events/s (the receiver not counted)"
                )

                # 2. latency at a steady rate
                with steady(emitter, args.rate, args.seconds) as steady_ids:
                    time.sleep(args.seconds)
                wait_delivered(receiver, list(steady_ids), timeout=60)
                latencies = [
                    (receiver.received[i] - at) * 1000
                    for i, at in steady_ids.items()
                    if i in receiver.received
                ]
                missing = len(steady_ids) - len(latencies)
                c.say(
                    f"2. latency at {args.rate:.0f} events/s for {args.seconds:.0f} s ({len(steady_ids)} events, "
                    f"{missing} undelivered): commit to receipt p50 {c.percentile(latencies, 50):.0f} ms, "
                    f"p99 {c.percentile(latencies, 99):.0f} ms, max {max(latencies):.0f} ms "
                    f"(target p99 <= 2000 ms); {c.load()}"
                )

                # 3. report throughput without, with, and again without webhooks flowing
                occurred = (datetime.now(UTC) - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
                target = f"http://127.0.0.1:{port}"
                c.wrk(target, single_lua("warm", reporter, occurred), args.connections, 3)
                runs: dict[str, Any] = {}
                runs["without"] = c.wrk(
                    target, single_lua("without", reporter, occurred), args.connections, args.report_seconds
                )
                with steady(emitter, args.rate, args.report_seconds + 2) as flowing:
                    runs["with"] = c.wrk(
                        target, single_lua("with", reporter, occurred), args.connections, args.report_seconds
                    )
                runs["without again"] = c.wrk(
                    target, single_lua("again", reporter, occurred), args.connections, args.report_seconds
                )
                delivered = wait_delivered(receiver, list(flowing), timeout=60)
                for name, result in runs.items():
                    c.say(f"3. reports {name:>13}: {result.line()}")
                base = (runs["without"].rps + runs["without again"].rps) / 2
                loss = 1 - runs["with"].rps / base
                c.say(
                    f"3. report throughput with webhooks flowing at {args.rate:.0f} events/s "
                    f"({len(flowing)} events, all delivered: {delivered}): {runs['with'].rps:.0f} req/s against "
                    f"{base:.0f} req/s without (mean of the runs before and after): loss {loss:.1%} (target <= 5%)"
                )
                c.say(json.dumps({"duplicates": receiver.duplicates, "load": c.load()}))
        finally:
            emitter.close()
            receiver.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
