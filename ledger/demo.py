"""`ledger demo`: the whole service on one machine, with one command, for a first look.

It supervises, in order: an embedded PostgreSQL and/or Redis for whichever of `DATABASE_URL` and
`REDIS_URL` is unset (see `ledger.embedded`), the schema, two demo platforms with fresh keys, and then
`ledger serve`, `ledger worker`, `ledger beat` and `ledger sequencer` as subprocesses with
`LEDGER_ENV=demo`. It prints the keys, `curl` commands to try and an `export` block for other shells (also
written to `.ledger/env`), and on Ctrl-C, SIGTERM or SIGHUP stops everything it started, in the reverse
order, and nothing it did not start.

Every child runs in its own process group, so the terminal's Ctrl-C reaches only this supervisor and
the shutdown order stays ours: API and workers first, then Redis, then PostgreSQL. A demo that was
killed outright (SIGKILL) leaves its children's process groups in `<state>/demo.json`; the next run
stops those before it starts anew.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import click

from ledger.config import Settings
from ledger.embedded import EmbeddedPostgres, EmbeddedRedis, pid_alive
from ledger.errors import Conflict, LedgerError

# (slug, name, scopes, operator): two member platforms and the operator's own consumer desk, which alone
# may hold the consumer-rights scope (members never can).
PLATFORMS = (
    ("demo-shop", "Demo Shop", "report,lookup", False),
    ("demo-market", "Demo Market", "report,lookup", False),
    ("demo-desk", "Demo Consumer Desk", "dispute", True),
)
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


class DemoError(LedgerError):
    """The demo could not start; the message says why."""


class _Stop(Exception):
    """A stop was asked for while the demo was still starting; raised between steps, never mid-step."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Demo:
    state_dir: Path
    bind: str
    as_json: bool
    workers: int = 2
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    children: list[Child] = field(default_factory=list)
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None
    _stopping: bool = False

    # -- output -------------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        """Progress goes to stderr when --json owns stdout."""
        _echo(text, err=self.as_json)

    @property
    def state_file(self) -> Path:
        return self.state_dir / "demo.json"

    @property
    def base_url(self) -> str:
        host, _, port = self.bind.rpartition(":")
        return f"http://{host or '127.0.0.1'}:{port}"

    # -- signals ------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Only a flag: raising here could land between starting a server and recording its pid.
        if not self._stopping:
            self._stopping = True
            self.say(f"\n{signal.Signals(signum).name} received: stopping the demo ...")

    def _checkpoint(self) -> None:
        if self._stopping:
            raise _Stop

    # -- the run ------------------------------------------------------------------------------------
    def run(self) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        code = 0
        try:
            self._claim_state_dir()
            self._check_bind()
            env = self._child_env()
            self._checkpoint()
            keys = self._prepare(env)
            self._checkpoint()
            self._spawn_all(env)
            self._wait_until_ready()
            self._announce(env, keys)
            code = self._supervise()
        except _Stop:
            code = 0
        except LedgerError as exc:
            _echo(f"error: {exc.detail}", err=True)
            code = 2
        finally:
            self._stopping = True
            self._shutdown()
        return code

    def _claim_state_dir(self) -> None:
        """One demo per state directory; stop the children of one that was killed outright."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        previous: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            previous = json.loads(self.state_file.read_text())
        owner = int(previous.get("pid", 0) or 0)
        if owner and owner != os.getpid() and pid_alive(owner) and _is_ours(owner):
            raise DemoError(
                f"another demo (pid {owner}) is using {self.state_dir}; stop it or pass --state-dir"
            )
        for pgid in previous.get("process_groups", []):
            if pid_alive(pgid) and _is_ours(pgid):
                self.say(f"stopping process group {pgid} left by a previous demo")
                _stop_group(pgid, STOP_TIMEOUT)
        self._record()

    def _record(self) -> None:
        state = {"pid": os.getpid(), "process_groups": [c.proc.pid for c in self.children]}
        self.state_file.write_text(json.dumps(state))

    def _check_bind(self) -> None:
        host, _, port = self.bind.rpartition(":")
        if not port.isdigit():
            raise DemoError(f"--bind must be HOST:PORT, got {self.bind!r}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn does: TIME_WAIT is fine
            try:
                probe.bind((host or "127.0.0.1", int(port)))
            except OSError:
                raise DemoError(f"{self.bind} is already in use; pass another --bind") from None

    def _child_env(self) -> dict[str, str]:
        env = dict(self.env)
        if not env.get("DATABASE_URL"):
            self.say(f"DATABASE_URL is not set: starting an embedded PostgreSQL in {self.state_dir / 'pg'}")
            self.postgres = EmbeddedPostgres(self.state_dir)
            env["DATABASE_URL"] = self.postgres.start()
            self._checkpoint()
        else:
            self.say("using the PostgreSQL server in DATABASE_URL")
        if not env.get("REDIS_URL"):
            self.say(f"REDIS_URL is not set: starting an embedded Redis in {self.state_dir}")
            self.redis = EmbeddedRedis(self.state_dir)
            env["REDIS_URL"] = self.redis.start()
        else:
            self.say("using the Redis server in REDIS_URL")
        metrics = self.state_dir / "metrics"
        if metrics.exists():
            for stale in metrics.iterdir():
                stale.unlink()
        metrics.mkdir(exist_ok=True)
        env.update(
            LEDGER_ENV="demo",
            LEDGER_STATE_DIR=str(self.state_dir),
            PROMETHEUS_MULTIPROC_DIR=str(metrics),
            PYTHONUNBUFFERED="1",
        )
        return env

    def _prepare(self, env: dict[str, str]) -> list[dict[str, Any]]:
        """Apply the schema and issue keys: create each demo platform, or rotate its key on a re-run."""
        from ledger.services import platforms as platform_service
        from ledger.services.runtime import Runtime
        from ledger.storage.db import apply_schema

        settings = Settings.from_env(env).require_services()
        assert settings.database_url
        try:
            apply_schema(settings.database_url)
        except Exception as exc:
            raise DemoError(f"could not apply the schema: {type(exc).__name__}") from None
        self.say("schema applied")
        rt = Runtime(settings)
        keys = []
        try:
            for slug, name, scopes, operator in PLATFORMS:
                try:
                    issued = platform_service.create_platform(rt, slug, name, scopes, operator=operator)
                except Conflict:
                    issued = platform_service.rotate_key(rt, slug, scopes, revoke_old=True)
                keys.append(
                    {
                        "platform": issued.platform,
                        "key_id": issued.key_id,
                        "key": issued.key,
                        "scopes": list(issued.scopes),
                    }
                )
        finally:
            rt.close()
        return keys

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> Child:
        logs = self.state_dir / "logs"
        logs.mkdir(exist_ok=True)
        log = logs / f"{name}.log"
        with log.open("wb") as handle:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ledger.cli", *args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: we stop it, the terminal does not
            )
        child = Child(name, proc, log)
        self.children.append(child)
        self._record()
        return child

    def _spawn_all(self, env: dict[str, str]) -> None:
        self._spawn("serve", ["serve", "--bind", self.bind, "--workers", str(self.workers)], env)
        self._spawn("worker", ["worker", "--concurrency", "1", "-n", f"demo-{os.getpid()}@%h"], env)
        self._spawn("beat", ["beat"], env)
        self._spawn("sequencer", ["sequencer"], env)

    def _died(self) -> Child | None:
        return next((c for c in self.children if c.proc.poll() is not None), None)

    def _wait_until_ready(self) -> None:
        self.say(f"starting the API on {self.base_url}, a worker, beat and the log's sequencer ...")
        deadline = time.monotonic() + STARTUP_TIMEOUT
        api_ready = worker_ready = False
        worker = next(c for c in self.children if c.name == "worker")
        while not (api_ready and worker_ready):
            self._checkpoint()
            dead = self._died()
            if dead is not None:
                raise DemoError(
                    f"`ledger {dead.name}` exited with code {dead.proc.returncode} while starting; "
                    f"last lines of {dead.log}:\n{dead.tail()}"
                )
            if time.monotonic() > deadline:
                raise DemoError(
                    f"the demo was not ready within {STARTUP_TIMEOUT:.0f}s; see {self.state_dir / 'logs'}"
                )
            api_ready = api_ready or _http_ok(f"{self.base_url}/readyz")
            worker_ready = worker_ready or b" ready." in worker.log.read_bytes()
            time.sleep(0.2)

    def _announce(self, env: dict[str, str], keys: list[dict[str, Any]]) -> None:
        shop, market, desk = keys[0], keys[1], keys[2]
        report_body = {
            # A fresh reference per run: the ledger keeps the last run's report, and the same reference with
            # another body (another date) would rightly be a 409.
            "external_id": f"demo-order-{datetime.now(UTC):%Y%m%d%H%M%S}",
            "category": "fabricated_evidence",
            "confirmation": "platform_review",
            "amount": {"value": 45000, "currency": "CNY"},
            "occurred_at": (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0).isoformat(),
            # 征信业管理条例 Art. 15: the consumer is told before the report (docs/legal.md)
            "consumer_notified_at": (datetime.now(UTC) - timedelta(hours=1))
            .replace(microsecond=0)
            .isoformat(),
            "identifiers": [{"type": "phone", "value": "13800138000"}],
        }
        lookup_body = {
            "identifiers": [{"type": "phone", "value": "13800138000"}],
            "purpose": "refund_review",
            "refund": {"reference": "demo-refund-1", "kind": "refund_only"},
        }
        exports = self._write_env(env, shop, market, desk)
        report = _curl(f"{self.base_url}/v1/incidents", shop["key"], report_body)
        lookup = _curl(f"{self.base_url}/v1/lookups", market["key"], lookup_body)
        embedded = {
            "postgres": {"pid": self.postgres.pid, "data": str(self.postgres.pgdata)}
            if self.postgres
            else None,
            "redis": {"pid": self.redis.pid, "url": env["REDIS_URL"]} if self.redis else None,
        }
        if self.as_json:
            _echo(
                json.dumps(
                    {
                        "api": self.base_url,
                        "platforms": keys,
                        "embedded": embedded,
                        "processes": {c.name: c.proc.pid for c in self.children},
                        "logs": str(self.state_dir / "logs"),
                        "curl": {"report": report, "lookup": lookup},
                        "env": exports,
                        "env_file": str(self.env_file),
                    },
                    sort_keys=True,
                )
            )
            return
        pg = f"embedded, data in {self.postgres.pgdata}" if self.postgres else "from DATABASE_URL"
        rd = f"embedded, {env['REDIS_URL']}" if self.redis else "from REDIS_URL"
        lines = [
            "",
            "The Consumer Credit Ledger demo is running.",
            f"  API         {self.base_url}   (reference: {self.base_url}/docs/reference, "
            f"OpenAPI: {self.base_url}/openapi.json)",
            f"  PostgreSQL  {pg}",
            f"  Redis       {rd}",
            f"  Logs        {self.state_dir / 'logs'}/{{serve,worker,beat,sequencer}}.log",
            "",
            "Demo platforms. Keys are shown once; the next `ledger demo` rotates them.",
            *(f"  {k['platform']:<12} {','.join(k['scopes']):<22} {k['key']}" for k in keys),
            "",
            f"Report a confirmed incident, as {shop['platform']}:",
            f"  {report}",
            "",
            f"Look the consumer up before approving a refund, as {market['platform']}",
            "(the score appears once the worker has scored the report, within a second or so):",
            f"  {lookup}",
            "",
            'To reach the demo from another shell (`ledger verify`, the README\'s "Try more"), run',
            f"  . {self.env_file}",
            "or paste:",
            *(f"  export {name}={shlex.quote(value)}" for name, value in exports.items()),
            "",
            "Press Ctrl-C to stop everything the demo started.",
        ]
        _echo("\n".join(lines))

    @property
    def env_file(self) -> Path:
        return self.state_dir / "env"

    def _write_env(
        self, env: dict[str, str], shop: dict[str, Any], market: dict[str, Any], desk: dict[str, Any]
    ) -> dict[str, str]:
        """The variables another shell needs to use this demo, also written to `.ledger/env` (mode 0600:
        it holds the demo's keys) for `. .ledger/env`. Removed when the demo stops."""
        exports = {
            "DATABASE_URL": env["DATABASE_URL"],
            "REDIS_URL": env["REDIS_URL"],
            "LEDGER_ENV": "demo",
            "LEDGER_API": self.base_url,
            "DEMO_SHOP_KEY": shop["key"],
            "DEMO_MARKET_KEY": market["key"],
            "DEMO_DESK_KEY": desk["key"],
        }
        text = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in exports.items())
        descriptor = os.open(self.env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write("# Written by `ledger demo` for other shells: . .ledger/env\n" + text)
        return exports

    def _supervise(self) -> int:
        while not self._stopping:
            dead = self._died()
            if dead is not None:
                _echo(
                    f"error: `ledger {dead.name}` exited with code {dead.proc.returncode}; stopping the demo. "
                    f"Last lines of {dead.log}:\n{dead.tail()}",
                    err=True,
                )
                return 1
            time.sleep(0.5)
        return 0

    # -- shutdown -----------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        """API, beat, worker and sequencer first (they hold connections), then Redis, then PostgreSQL.

        Each step runs whatever happened in the one before, so one failure leaves nothing else running.
        """
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown short
        try:
            for child in reversed(self.children):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGTERM)
            for child in self.children:
                _stop_group(child.proc.pid, STOP_TIMEOUT, already_signalled=True)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(timeout=1)
            if self.children:
                self.say("stopped the API, the worker, beat and the sequencer")
        finally:
            try:
                if self.redis is not None:
                    self.redis.stop()
                    self.say("stopped the embedded Redis")
            finally:
                if self.postgres is not None:
                    self.postgres.stop()
                    self.say("stopped the embedded PostgreSQL")
                self.children.clear()
                self.state_file.unlink(missing_ok=True)
                self.env_file.unlink(missing_ok=True)


def _echo(text: str, err: bool = False) -> None:
    """Print, but never fail: when the terminal or a pipe (`| tee`) is gone, the demo must still stop
    everything it started, so output goes to /dev/null from then on."""
    try:
        click.echo(text, err=err)
    except OSError:
        stream = sys.stderr if err else sys.stdout
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)


def _is_ours(pid: int) -> bool:
    """Guards against pid reuse: only a process running the ledger command counts."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"ledger" in cmdline


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Members that have exited but are not yet reaped still count for killpg; look for a live one.
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _stop_group(pgid: int, timeout: float, already_signalled: bool = False) -> None:
    """SIGTERM a process group, wait for every member, then SIGKILL what is left."""
    if not already_signalled:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pgid, os.WNOHANG)  # reap our own child so it does not linger as a zombie
        if not _group_alive(pgid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (our own http:// URL)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _curl(url: str, key: str, body: dict[str, Any]) -> str:
    return (
        f"curl -sS -X POST {url} -H {shlex.quote('Authorization: Bearer ' + key)} "
        f"-H 'Content-Type: application/json' -d {shlex.quote(json.dumps(body, separators=(',', ':')))}"
    )


def run_demo(state_dir: str, bind: str, workers: int, as_json: bool) -> int:
    return Demo(state_dir=Path(state_dir).resolve(), bind=bind, workers=workers, as_json=as_json).run()
