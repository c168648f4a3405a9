"""Plain helpers the tests share: the test services' addresses and keys, request bodies and the
calls most tests make (`report`, `lookup`), and the ledger's own processes (`ledger worker`, `ledger
serve`, `ledger sequencer`, the CLI) as subprocesses.

Fixtures live in the conftest files; everything a test imports lives here, so that no test file
imports a conftest (pytest loads those itself, and importing one twice runs its module code twice).

Environment: TEST_PG_URL (a server URL, default postgresql://postgres@127.0.0.1:5432/postgres) and
TEST_REDIS_URL (default redis://127.0.0.1:6379/13).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import redis

from ledger.config import Settings
from ledger.embedded import free_port
from ledger.services.runtime import Runtime


def _next_database(url: str) -> str:
    base, _, number = url.rpartition("/")
    return f"{base}/{(int(number or 0) + 1) % 16}"


ROOT = Path(__file__).resolve().parents[1]
PG_SERVER = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
# Under pytest-xdist (`make test-fast` runs two), each xdist worker is a test session of its own: worker
# gwN takes the three Redis databases 3N below TEST_REDIS_URL's set, so no two sessions flush each other.
_XDIST = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
if _XDIST:
    _base, _, _number = REDIS_URL.rpartition("/")
    REDIS_URL = f"{_base}/{(int(_number or 0) - 3 * _XDIST) % 16}"
# The session worker's broker and cache: the next Redis database after TEST_REDIS_URL's, unless set.
WORKER_REDIS_URL = os.environ.get("TEST_WORKER_REDIS_URL") or _next_database(REDIS_URL)
# The soak's (tests/e2e/test_soak.py), which it flushes: the database after the worker's, unless set.
SOAK_REDIS_URL = os.environ.get("TEST_SOAK_REDIS_URL") or _next_database(WORKER_REDIS_URL)
IDENTITY_KEY = "test-identity-key-0123456789abcdef"
TOKEN_KEY = "test-server-token-key-0123456789abcdef"  # the server-only re-keying secret


def stored_token(id_type: str, value: str) -> str:
    """The token the ledger stores for an identifier: the member token keyed again with TOKEN_KEY."""
    from ledger.identity import tokenize
    from ledger.services.identifiers import at_rest

    return at_rest(tokenize(id_type, value, IDENTITY_KEY), TOKEN_KEY.encode())


def env_for(settings: Settings) -> dict[str, str]:
    """Environment for subprocesses (worker, beat, serve, CLI) pointing at the test services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "DATABASE_URL", "REDIS_URL"))}
    env.update(
        DATABASE_URL=settings.database_url or "",
        REDIS_URL=settings.redis_url or "",
        LEDGER_IDENTITY_KEY=settings.identity_key or "",
        LEDGER_TOKEN_KEY=settings.token_key or "",
        LEDGER_DB_ROLE=settings.db_role or "",
        LEDGER_CONSUMER_RIGHTS_PER_MINUTE=str(settings.consumer_rights_per_minute),
        LEDGER_ENV="test",
        LEDGER_JURISDICTION=settings.jurisdiction,
        LEDGER_WEBHOOK_ALLOW_NETWORKS=settings.webhook_allow_networks,
        LEDGER_WEBHOOK_TIMEOUT_SECONDS=str(settings.webhook_timeout_seconds),
        LEDGER_WEBHOOK_BACKOFF_MS=str(settings.webhook_backoff_ms),
        LEDGER_WEBHOOK_DISABLE_AFTER=str(settings.webhook_disable_after),
        PYTHONUNBUFFERED="1",
    )
    if settings.policy_path is not None:
        env["LEDGER_POLICY_FILE"] = str(settings.policy_path)
    return env


# Every table emptied and every sequence restarted, in one statement (so in one transaction): DELETE
# under the replica role, which also skips the append-only and foreign-key triggers, is several times
# faster than TRUNCATE for small tables; the commit is asynchronous, as a crash loses nothing a test needs.
RESET = b"""
DO $$
DECLARE name text;
BEGIN
    PERFORM set_config('session_replication_role', 'replica', true);
    PERFORM set_config('synchronous_commit', 'off', true);
    FOR name IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' LOOP
        EXECUTE format('DELETE FROM %I', name);
    END LOOP;
    FOR name IN SELECT sequencename FROM pg_sequences WHERE schemaname = 'public' LOOP
        PERFORM setval(format('%I', name), 1, false);
    END LOOP;
END
$$
"""
_reset_connections: dict[str, psycopg.Connection[Any]] = {}


def reset_state(settings: Settings) -> None:
    """Empty every table of `settings`' database, restart every sequence, and drop the ledger's keys
    from its Redis database. No other process writes to the database meanwhile (tests/conftest.py), so
    this takes no lock anyone else holds. It runs before almost every test, so it is one statement on a
    connection kept for the session (`close_reset_connections`)."""
    assert settings.database_url is not None
    assert settings.redis_url is not None
    conn = _reset_connections.get(settings.database_url)
    if conn is None or conn.closed or conn.broken:
        conn = _reset_connections[settings.database_url] = psycopg.connect(
            settings.database_url, autocommit=True
        )
    conn.execute(RESET)
    # Only our own keys: flushing would also drop Celery's queue bindings under a running worker.
    client = redis.Redis.from_url(settings.redis_url)
    try:
        keys = list(client.scan_iter(match="ccl:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def close_reset_connections() -> None:
    for conn in _reset_connections.values():
        conn.close()
    _reset_connections.clear()


@dataclass
class Member:
    slug: str
    key: str
    key_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def incident_body(external_id: str = "order-1", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "external_id": external_id,
        "category": "fabricated_evidence",
        "confirmation": "platform_review",
        "amount": {"value": 45_000, "currency": "CNY"},
        "occurred_at": "2026-11-01T10:00:00+08:00",
        "identifiers": [{"type": "phone", "value": "13800138000"}],
    }
    body.update(overrides)
    # The `cn` profile requires the notice (征信业管理条例 Art. 15); by default it follows the act.
    body.setdefault("consumer_notified_at", body["occurred_at"])
    return body


def post_report(
    client: Any,
    member: Member,
    external_id: str = "order-1",
    *,
    headers: dict[str, str] | None = None,
    **overrides: Any,
) -> Any:
    """POST /v1/incidents with `incident_body(external_id, **overrides)` as `member`, with any extra
    `headers`; the raw response."""
    return client.post(
        "/v1/incidents",
        json=incident_body(external_id, **overrides),
        headers={**member.headers, **(headers or {})},
    )


def report(
    client: Any,
    member: Member,
    external_id: str = "order-1",
    *,
    headers: dict[str, str] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Report an incident as `member` (a Flask test client), require 201, and return the body: its
    `id`, `receipt` and the rest."""
    response = post_report(client, member, external_id, headers=headers, **overrides)
    assert response.status_code == 201, response.get_json()
    return response.get_json()  # type: ignore[no-any-return]


def post_lookup(client: Any, member: Member, *identifiers: dict[str, str], **extra: Any) -> Any:
    """POST /v1/lookups for these identifiers with purpose refund_review (and any other body fields in
    `extra`) as `member`; the raw response."""
    body = {"identifiers": list(identifiers), "purpose": "refund_review", **extra}
    return client.post("/v1/lookups", json=body, headers=member.headers)


def lookup(client: Any, member: Member, *identifiers: dict[str, str], **extra: Any) -> dict[str, Any]:
    """Look identifiers up as `member`, require 200, and return the answer."""
    response = post_lookup(client, member, *identifiers, **extra)
    assert response.status_code == 200, response.get_json()
    return response.get_json()  # type: ignore[no-any-return]


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


class WorkerProcess:
    """A real `ledger worker` subprocess on the test broker."""

    def __init__(self, settings: Settings, concurrency: int = 2) -> None:
        self.settings = settings
        self.concurrency = concurrency
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = ROOT / ".pytest_cache" / f"worker-{os.getpid()}-{uuid.uuid4().hex[:6]}.log"

    def start(self) -> WorkerProcess:
        self.log.parent.mkdir(exist_ok=True)
        handle = self.log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ledger.cli",
                "worker",
                f"--concurrency={self.concurrency}",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "-n",
                f"test-{uuid.uuid4().hex[:6]}@%h",
            ],
            env=env_for(self.settings),
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 (the child only calls prctl before exec)
        )
        wait_for(lambda: b"ready" in self.log.read_bytes() or self.proc.poll() is not None, timeout=30)  # type: ignore[union-attr]
        assert self.proc.poll() is None, self.log.read_text()
        return self

    def kill(self, sig: int = 9) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=15)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def idle(self) -> bool:
        """No task queued or taken and unacknowledged (tasks are acks_late, so a running task is still
        unacknowledged), and no outbox row the relay has yet to send or the worker to finish."""
        assert self.settings.redis_url is not None
        assert self.settings.database_url is not None
        broker = redis.Redis.from_url(self.settings.redis_url)
        try:
            if broker.llen("ledger") or broker.hlen("unacked"):
                return False
        finally:
            broker.close()
        with psycopg.connect(self.settings.database_url, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM outbox WHERE done_at IS NULL").fetchone()
        return row is not None and row[0] == 0

    def settle(self, timeout: float = 30) -> None:
        """Return once the worker has finished the work it was given. Work that cannot finish (a test
        cut its broker or its database, or left a task failing) gets a new worker on an empty queue
        instead, so that the next test starts on an idle worker either way."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                wait_for(self.idle, timeout=timeout, interval=0.1)
                return
            except AssertionError:
                pass
        self.stop()
        assert self.settings.redis_url is not None
        broker = redis.Redis.from_url(self.settings.redis_url)
        try:
            broker.delete("ledger", "unacked", "unacked_index")
        finally:
            broker.close()
        self.start()


def die_with_parent() -> None:
    """preexec_fn for test subprocesses: if pytest is killed, its workers and servers die with it instead
    of living on and consuming the next session's tasks from the same broker database."""
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ServedApp:
    """`ledger serve` (gunicorn) as a subprocess on a free local port; its output goes to a log file."""

    def __init__(self, settings: Settings, workers: int = 2, extra_env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.workers = workers
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = ROOT / ".pytest_cache" / f"serve-{os.getpid()}-{self.port}.log"

    def start(self) -> ServedApp:
        import urllib.request

        self.log.parent.mkdir(exist_ok=True)
        handle = self.log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ledger.cli",
                "serve",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(self.workers),
            ],
            env={**env_for(self.settings), **self.extra_env},
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 (the child only calls prctl before exec)
        )

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(self.log.read_text())
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=1) as response:  # noqa: S310
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_for(up, timeout=30, interval=0.2)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=5)


def invoke_ledger(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The `ledger` command run in this process by click's CliRunner, with exactly `env` as its
    environment; the caller checks the result, which has a subprocess's shape.

    An exception the command does not turn into an exit code is raised here, as a traceback would be
    printed by the real command. Every Runtime the command opens is closed afterwards (the real command
    leaves that to its process's exit)."""
    from click.testing import CliRunner

    from ledger import cli

    opened: list[Any] = []

    def keeping(factory: Callable[[], Any]) -> Callable[[], Any]:
        def make() -> Any:
            opened.append(factory())
            return opened[-1]

        return make

    overrides: dict[str, str | None] = {name: None for name in os.environ if name not in env}
    overrides.update(env)
    runtime, database_runtime = cli.runtime, cli.database_runtime
    cli.runtime, cli.database_runtime = keeping(runtime), keeping(database_runtime)
    try:
        result = CliRunner().invoke(cli.main, list(args), env=overrides, catch_exceptions=True)
    finally:
        cli.runtime, cli.database_runtime = runtime, database_runtime
        for rt in opened:
            rt.close()
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(["ledger", *args], result.exit_code, result.stdout, result.stderr)


def run_ledger(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """The `ledger` command against the test services, in this process (`invoke_ledger`)."""
    return invoke_ledger(env_for(settings), *args)


def run_ledger_process(
    settings: Settings, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The `ledger` command as a subprocess against the test services, for a test that needs a real
    process (its own signals, its exit, or the installed module); the caller checks the result."""
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli", *args],
        env=env_for(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ledger_json(settings: Settings, *args: str) -> Any:
    """Run `ledger ... --json`, require success, and return the JSON it printed (its last line)."""
    done = run_ledger(settings, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def metric(client: Any, name: str, **labels: str) -> float:
    """One sample of the app's /metrics, by name and labels (0 if absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = client.get("/metrics").get_data(as_text=True)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def audit_count(rt: Runtime) -> int:
    with rt.db.transaction() as conn:
        row = conn.execute("SELECT count(*) AS n FROM lookups").fetchone()
    assert row is not None
    return int(row["n"])


def integrate(rt: Runtime) -> int:
    """Integrate every pending log leaf and sign a checkpoint, as `ledger sequencer` would."""
    from ledger.services import sequencer

    added = sequencer.integrate_now(rt)
    assert added >= 0, "a sequencer process holds the log"
    return added


class SequencerProcess:
    """A real `ledger sequencer` subprocess."""

    def __init__(self, settings: Settings, extra_env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = ROOT / ".pytest_cache" / f"sequencer-{os.getpid()}-{uuid.uuid4().hex[:6]}.log"

    def start(self, wait_until: bytes = b"writer") -> SequencerProcess:
        self.log.parent.mkdir(exist_ok=True)
        handle = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", "sequencer"],
            env={**env_for(self.settings), **self.extra_env},
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 (the child only calls prctl before exec)
        )
        wait_for(lambda: wait_until in self.log.read_bytes() or self.proc.poll() is not None, timeout=30)  # type: ignore[union-attr]
        assert self.proc.poll() is None, self.log.read_text()
        return self

    def kill(self, sig: int = 9) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=15)

    def stop(self) -> None:
        self.kill(15)


def check_receipt(rt: Runtime, receipt: dict[str, Any]) -> bytes:
    """Check a 201's receipt as a member would: the promise verifies with the log key, over exactly these
    fields, and integrate_by is received_at plus the MMD. Returns the leaf hash."""
    from datetime import UTC, datetime, timedelta

    from ledger.domain import note

    def when(text: str) -> datetime:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)

    leaf = bytes.fromhex(receipt["leaf_hash"])
    assert len(leaf) == 32
    received, by = when(receipt["received_at"]), when(receipt["integrate_by"])
    assert by - received == timedelta(seconds=rt.settings.log_mmd_seconds)
    assert receipt["log_origin"] == rt.settings.log_origin
    note.verify_promise(
        rt.log_signer.verifier, rt.settings.log_origin, leaf, received, by, receipt["promise"]
    )
    return leaf


# -- the browser tests ------------------------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"  # Debian's, never a browser Playwright downloads (.ci/run installs it)
SHOTS = ROOT / "build" / "screenshots"  # the browser tests' screenshots, which CI keeps


class Recorder:
    """Every URL the browser asked for, through any page of its context."""

    def __init__(self, context: Any) -> None:
        self.urls: list[str] = []
        context.on("request", lambda request: self.urls.append(request.url))

    def outside(self, base: str) -> list[str]:
        """The URLs not under `base` (the served app); data: and blob: URLs never leave the page."""
        return [
            u
            for u in self.urls
            if not u.startswith(base + "/") and urlsplit(u).scheme not in ("data", "blob")
        ]
