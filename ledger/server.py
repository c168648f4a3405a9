"""Running the API under a production WSGI server: granian or gunicorn.

Workers build their own app (and so their own pool and audit writer) after fork. Prometheus runs in
multiprocess mode so /metrics adds up every worker. Both servers stop gracefully on SIGTERM: they stop
accepting, let requests in flight finish, then exit. docs/performance.md has the measurements behind the
default server and its worker and thread counts.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication

SERVERS = ("granian", "gunicorn")
# How long a client may take to send its request headers before the server drops the connection (a
# slow client must not hold a worker's thread): gunicorn's sync and gthread workers use `timeout`,
# granian its own header-read timeout.
HEADER_TIMEOUT_SECONDS = 10
# The largest request head (request line and headers) either server reads: gunicorn refuses a line or a
# header field over 8,190 bytes; granian's read buffer is capped at 16 KiB (its floor is 8 KiB).
MAX_HEAD_BYTES = 16384


def _metrics_dir() -> None:
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ledger-metrics-")


class _Gunicorn(BaseApplication):
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from ledger import create_app

        return create_app()


def _child_exit(_server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def run_gunicorn(bind: str, workers: int, threads: int, worker_class: str) -> None:
    _metrics_dir()
    _Gunicorn(
        {
            "bind": bind,
            "workers": workers,
            "threads": threads,
            "worker_class": worker_class,
            "accesslog": None,  # access logs would carry client addresses; metrics cover traffic
            "errorlog": "-",
            "loglevel": "warning",
            "timeout": 30,
            "graceful_timeout": 10,
            "keepalive": 5,
            "limit_request_field_size": 8190,
            "limit_request_line": 8190,
            "child_exit": _child_exit,
        }
    ).run()


# The WSGI app granian's workers load (`factory=True`: each worker calls it after fork). Tests and
# benchmarks may point LEDGER_WSGI_FACTORY at another "module:callable".
GRANIAN_TARGET = "ledger:create_app"


def run_granian(bind: str, workers: int, threads: int, target: str | None = None) -> None:
    """granian: a Rust HTTP server; each worker process runs `threads` Python threads for the WSGI app.
    Killed workers are respawned, as gunicorn does."""
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server import Server

    _metrics_dir()
    host, _, port = bind.rpartition(":")
    Server(
        target or os.environ.get("LEDGER_WSGI_FACTORY") or GRANIAN_TARGET,
        address=host or "127.0.0.1",
        port=int(port),
        interface=Interfaces.WSGI,
        workers=workers,
        blocking_threads=threads,
        factory=True,
        http1_settings=HTTP1Settings(
            header_read_timeout=HEADER_TIMEOUT_SECONDS * 1000,
            keep_alive=True,
            max_buffer_size=MAX_HEAD_BYTES,
        ),
        log_level=LogLevels.warning,
        log_access=False,  # access logs would carry client addresses; metrics cover traffic
        respawn_failed_workers=True,
        respawn_interval=0.5,
        workers_kill_timeout=10,
    ).serve()


def run(server: str, bind: str, workers: int, threads: int, worker_class: str) -> None:
    runners: dict[str, Callable[[], None]] = {
        "granian": lambda: run_granian(bind, workers, threads),
        "gunicorn": lambda: run_gunicorn(bind, workers, threads, worker_class),
    }
    runners[server]()
