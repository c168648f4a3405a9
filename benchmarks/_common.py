"""Shared plumbing for the benchmark scripts: a throw-away database, Redis database 7, servers started as
subprocesses, wrk runs parsed into numbers, and the machine load printed next to every figure.

Benchmarks are not part of the test run, apart from the soak's 45-second run in tests/e2e/test_soak.py.
Each script starts what it needs and removes it afterwards;
traffic goes to 127.0.0.1 only and every run is bounded in time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PG_SERVER = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7")
IDENTITY_KEY = "bench-identity-key-0123456789abcdef"
# The transparency log's key (base64 Ed25519 seed): production mode requires one. Not secret.
LOG_KEY = "YmVuY2gtbG9nLWtleS0wMTIzNDU2Nzg5YWJjZGVmMDE="
# Served as production should be: stored tokens keyed again with the server's own key, and every pooled
# connection acting as the restricted `ledger_app` role (docs/operations.md).
TOKEN_KEY = "bench-server-token-key-0123456789abcdef"
DB_ROLE = "ledger_app"
# The `ledger serve` configuration chosen from `lookup.py --sweep` (docs/performance.md).
DEFAULT_SERVER = "granian:2x8"


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwind the context managers, so servers and databases are removed


signal.signal(signal.SIGTERM, _exit_on_sigterm)


def db_url(name: str) -> str:
    base, _, _ = PG_SERVER.rpartition("/")
    return f"{base}/{name}"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} cores)"


def say(text: str) -> None:
    print(text, flush=True)


@contextlib.contextmanager
def bench_database(name: str, keep: bool = False) -> Iterator[str]:
    """A fresh database with schema.sql applied, dropped afterwards (unless keep)."""
    from ledger.storage.db import apply_schema

    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = db_url(name)
    apply_schema(url)
    try:
        yield url
    finally:
        if not keep:
            with psycopg.connect(PG_SERVER, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def flush_redis() -> None:
    """Benchmarks own Redis database 7 entirely (the brief reserves it for them)."""
    redis.Redis.from_url(REDIS_URL).flushdb(asynchronous=True)  # 800,000 keys would time the call out


def ledger_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "DATABASE_URL", "REDIS_URL"))}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=REDIS_URL,
        LEDGER_IDENTITY_KEY=IDENTITY_KEY,
        LEDGER_LOG_KEY=LOG_KEY,
        LEDGER_TOKEN_KEY=TOKEN_KEY,
        LEDGER_DB_ROLE=DB_ROLE,
        LEDGER_ENV="production",
        LEDGER_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    env.update(extra)
    return env


def ledger_cli(env: dict[str, str], *args: str) -> Any:
    """Run `ledger ... --json` and return its parsed output."""
    out = subprocess.run(
        [str(BIN / "ledger"), *args, "--json"], env=env, check=True, capture_output=True, text=True, cwd=ROOT
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def member(env: dict[str, str], slug: str, scopes: str = "report,lookup") -> str:
    """A platform with an effectively unlimited rate limit (quotas are not what is measured); its key."""
    issued = ledger_cli(env, "platforms", "create", slug, "--name", slug.title(), "--scopes", scopes)
    ledger_cli(env, "platforms", "rate-limit", slug, "--per-second", "1000000", "--burst", "1000000")
    return str(issued["key"])


@dataclass(frozen=True)
class ServerConfig:
    workers: int = 2
    threads: int = 1
    worker_class: str = "sync"
    server: str = "gunicorn"

    def args(self) -> list[str]:
        return [
            "--server",
            self.server,
            "--workers",
            str(self.workers),
            "--threads",
            str(self.threads),
            "--worker-class",
            self.worker_class,
        ]

    def __str__(self) -> str:
        if self.server == "granian":
            return f"granian {self.workers}x{self.threads}"
        threads = f"x{self.threads} threads" if self.worker_class == "gthread" else ""
        return f"{self.worker_class} {self.workers} workers{threads}"


# The baseline: the stack a team would write by default, a bare Flask app under gunicorn sync.
BASELINE_SERVER = ServerConfig(2, 1, "sync", "gunicorn")


def parse_config(text: str) -> ServerConfig:
    """`sync:N` (N gunicorn sync workers), `gthread:NxT` (N gunicorn workers of T threads) or
    `granian:NxT` (N granian workers of T blocking threads)."""
    kind, _, size = text.partition(":")
    if kind in ("gthread", "granian"):
        workers, _, threads = size.partition("x")
        server = "granian" if kind == "granian" else "gunicorn"
        return ServerConfig(int(workers or 2), int(threads or 4), "gthread", server)
    if kind != "sync":
        raise SystemExit(f"unknown server configuration {text!r}: use sync:N, gthread:NxT or granian:NxT")
    return ServerConfig(int(size or 2), 1, "sync")


class Process:
    """A subprocess we started, in its own session, stopped by its own pid (SIGTERM, then SIGKILL)."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], log_name: str) -> None:
        self.log = Path(tempfile.gettempdir()) / f"bench-{log_name}-{os.getpid()}.log"
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            list(argv),
            env=env,
            cwd=ROOT,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log_file.close()
        if not os.environ.get("BENCH_KEEP_LOGS"):
            self.log.unlink(missing_ok=True)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_http(port: int, path: str = "/healthz", timeout: float = 30.0, proc: Process | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{proc.tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered on port {port}{path} within {timeout:.0f}s")


@contextlib.contextmanager
def _explained_on_failure(proc: Process) -> Iterator[None]:
    """If a measurement against this server fails, say whether the server is still running and show the
    end of its log before the error propagates: a run that dies mid-benchmark should say why."""
    try:
        yield
    except Exception:
        state = "still running" if proc.proc.poll() is None else f"exited with {proc.proc.returncode}"
        say(f"  (the server {state}; the end of its log:)\n{proc.tail()}")
        raise


def free_port(low: int = 18000, high: int = 18099) -> int:
    for port in range(low, high + 1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 18000-18099")


SERVER_PIDS: dict[int, int] = {}  # port -> pid of the server process started on it


@contextlib.contextmanager
def ledger_server(env: dict[str, str], config: ServerConfig, port: int | None = None) -> Iterator[int]:
    port = port or free_port()
    argv = [str(BIN / "ledger"), "serve", "--bind", f"127.0.0.1:{port}", *config.args()]
    with Process(argv, env, f"serve-{port}") as proc:
        SERVER_PIDS[port] = proc.proc.pid
        wait_http(port, proc=proc)
        with _explained_on_failure(proc):
            yield port


@contextlib.contextmanager
def baseline_server(
    env: dict[str, str], config: ServerConfig, mode: str, port: int | None = None
) -> Iterator[int]:
    """The bare Flask baseline (benchmarks/baseline_app.py) under the very same gunicorn options."""
    port = port or free_port()
    argv = [
        sys.executable,
        str(ROOT / "benchmarks" / "baseline_app.py"),
        "--mode",
        mode,
        "--bind",
        f"127.0.0.1:{port}",
        *config.args(),
    ]
    with Process(argv, env, f"baseline-{port}") as proc:
        SERVER_PIDS[port] = proc.proc.pid
        wait_http(port, proc=proc)
        with _explained_on_failure(proc):
            yield port


@contextlib.contextmanager
def ledger_worker(env: dict[str, str], concurrency: int = 2) -> Iterator[Process]:
    argv = [str(BIN / "ledger"), "worker", "--concurrency", str(concurrency)]
    with Process(argv, env, "worker") as proc:
        deadline = time.monotonic() + 60
        while "ready." not in proc.log.read_text(errors="replace"):
            if proc.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{proc.tail()}")
            time.sleep(0.2)
        yield proc


# -- wrk -------------------------------------------------------------------------------------------
WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    errors: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def bad(self) -> int:
        return sum(self.errors.values())

    def line(self) -> str:
        errors = ", ".join(f"{k} {v}" for k, v in self.errors.items() if v) or "none"
        return (
            f"{self.rps:8.0f} req/s  p50 {self.p50_ms:6.2f} ms  p90 {self.p90_ms:6.2f} ms  "
            f"p99 {self.p99_ms:6.2f} ms  max {self.max_ms:7.2f} ms  ({self.requests} requests; errors: {errors})"
        )


def _run_wrk(url: str, script: Path, connections: int, seconds: int, threads: int) -> str:
    argv = [
        "wrk",
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"wrk exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    line = next((x for x in out.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out.stdout}\n{out.stderr}")
    return line[len("WRKJSON ") :]


def wrk(url: str, lua: str, connections: int, seconds: int, threads: int = 2) -> WrkResult:
    """Run wrk with `lua` (plus a `done` hook printing JSON) and return its summary."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    directory = Path(tempfile.mkdtemp(prefix="bench-wrk-"))
    script = directory / "load.lua"
    script.write_text(lua + WRK_DONE)
    try:
        s = json.loads(_run_wrk(url, script, connections, seconds, threads))
    finally:
        script.unlink(missing_ok=True)
        directory.rmdir()
    return WrkResult(
        requests=s["requests"],
        seconds=s["duration_us"] / 1e6,
        errors={k: s[k] for k in ("connect", "read", "write", "status", "timeout")},
        p50_ms=s["p50_us"] / 1000,
        p90_ms=s["p90_us"] / 1000,
        p99_ms=s["p99_us"] / 1000,
        max_ms=s["max_us"] / 1000,
    )


def lua_string(value: str) -> str:
    """A Lua long-bracket string literal that cannot be closed by the JSON inside it."""
    level = "=" * 4
    assert f"]{level}]" not in value
    return f"[{level}[{value}]{level}]"


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary(values: Sequence[float]) -> str:
    return (
        f"n={len(values)} mean {statistics.fmean(values):.1f} p50 {percentile(values, 50):.1f} "
        f"p90 {percentile(values, 90):.1f} p99 {percentile(values, 99):.1f} max {max(values):.1f}"
    )


# -- CPU per process group ---------------------------------------------------------------------------
_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of a live process, from /proc/<pid>/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS


def descendants(root: int) -> list[int]:
    """`root` and every process below it."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = stat[0]
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        found += frontier
    return found


class CpuMeter:
    """CPU seconds used by three groups of processes between two snapshots: the API server's process
    tree, the PostgreSQL backends connected to the benchmark's database, and the Redis server. A process
    that exits between the snapshots is left out (its CPU is lost with it), so measure with the server's
    pools already open."""

    def __init__(self, server_pid: int, database_url: str, redis_url: str) -> None:
        self.server_pid = server_pid
        self.database_url = database_url
        self.redis_pid = int(redis.Redis.from_url(redis_url).info("server")["process_id"])

    def _groups(self) -> dict[str, list[int]]:
        name = self.database_url.rpartition("/")[2]
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            backends = [
                int(r[0])
                for r in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,)
                ).fetchall()
            ]
        return {
            "application": descendants(self.server_pid),
            "postgresql": backends,
            "redis": [self.redis_pid],
        }

    def snapshot(self) -> dict[str, dict[int, float]]:
        return {
            group: {pid: stat[1] for pid in pids if (stat := _stat(pid)) is not None}
            for group, pids in self._groups().items()
        }

    @staticmethod
    def delta(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict[str, float]:
        """CPU seconds per group; a process new in `after` counts from zero."""
        return {
            group: sum(cpu - before.get(group, {}).get(pid, 0.0) for pid, cpu in pids.items())
            for group, pids in after.items()
        }
