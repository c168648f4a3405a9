"""Private PostgreSQL and Redis servers for tests that cut a service out from under the ledger.

The shared PostgreSQL and Redis serve every other test, so they are never stopped: a test that kills a
service starts its own `redis-server` (no persistence, so a restart comes back empty, as a crashed
broker does) or PostgreSQL cluster (initdb + pg_ctl, as the postgres user when we are root). Every
process runs in its own session and dies with pytest.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
import redis

from tests.support import die_with_parent, wait_for

REDIS_PORTS = (16300, 16399)
POSTGRES_PORTS = (15500, 15599)
SERVE_PORTS = (18100, 18199)
_handed_out: set[int] = set()


def free_port(span: tuple[int, int]) -> int:
    """A port in `span` that nothing listens on and that this session has not handed out before."""
    ports = [p for p in range(span[0], span[1] + 1) if p not in _handed_out]
    random.shuffle(ports)
    for port in ports:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {span}")


def _killpg(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _parent_of(stat: Path) -> int | None:
    try:
        text = stat.read_text()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2 :].split()[1])


def children_of(pid: int) -> list[int]:
    """The pids whose parent is `pid`."""
    return [int(stat.parent.name) for stat in Path("/proc").glob("[0-9]*/stat") if _parent_of(stat) == pid]


# -- private servers --------------------------------------------------------------------------------
class RedisServer:
    """A throwaway `redis-server` without persistence: a restart on the same port comes back empty,
    as a crashed broker does, so every queued task is lost."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port(REDIS_PORTS)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=1)

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 (the child only calls prctl before exec)
        )
        client = self.client()

        def up() -> bool:
            assert self.proc is not None
            assert self.proc.poll() is None, "redis-server exited"
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        try:
            wait_for(up, timeout=15)
        finally:
            client.close()
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            _killpg(self.proc, signal.SIGKILL)
            self.proc.wait(timeout=15)

    def restart(self) -> RedisServer:
        self.kill()
        return self.start()


class PostgresServer:
    """A throwaway PostgreSQL cluster. initdb refuses root, so as root it runs as the postgres user."""

    def __init__(self, durable_commits: bool = False) -> None:
        # Off by default, for speed. On for tests that SIGKILL the server and then count what a client
        # was told was committed: with synchronous_commit off, a commit returns before its WAL is written.
        self.durable_commits = durable_commits
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        pg_ctl = str(found[-1]) if found else shutil.which("pg_ctl")
        if pg_ctl is None:
            pytest.skip("the PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        self.bindir = Path(pg_ctl).parent
        self.port = free_port(POSTGRES_PORTS)
        self.root = Path(tempfile.mkdtemp(prefix="ccl-faults-pg-"))
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.data = self.root / "data"
        try:
            self._run(
                "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"
            )
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [*self.as_user, str(self.bindir / tool), *args], capture_output=True, timeout=90, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stderr.decode(errors='replace')[-2000:]}")

    def start(self) -> PostgresServer:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_connections=60"
        )
        if not self.durable_commits:
            options += " -c synchronous_commit=off"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        """`fast` ends every session at once (clients see their connections drop) and shuts down cleanly."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend at once, as a crash would; start() then runs crash
        recovery. (fsync is off: a killed process loses nothing the kernel already has, and a commit
        returns only once its WAL is written to the kernel when `durable_commits` is on.)"""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        victims = [pid, *children_of(pid)]
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        wait_for(lambda: not any(Path(f"/proc/{victim}").exists() for victim in victims), timeout=30)

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def remove(self) -> None:
        try:
            if self.running:
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
