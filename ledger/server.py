"""Running the API under a production WSGI server: granian or gunicorn.

Workers build their own app (and so their own pool and audit writer) after fork. Prometheus runs in
multiprocess mode so /metrics adds up every worker. Both servers stop gracefully on SIGTERM: they stop
accepting, let requests in flight finish, then exit. docs/performance.md has the measurements behind the
default server and its worker and thread counts.

Under gunicorn, the gthread worker hands a connection to a request thread as soon as its first byte
arrives, and the thread then reads the rest of the request line and headers with no deadline: 32
clients trickling a header line each second held every thread, and health probes timed out
(slowloris). `ledger serve --server gunicorn` therefore runs gthread as `HeaderDeadlineWorker`, which
reads the request line and headers in the worker's event loop instead, without a thread, and drops a
client that has not sent them whole within HEADER_TIMEOUT_SECONDS. Only a complete head (or one over
HEADER_LIMIT bytes, which the parser refuses at once) reaches a thread, and there each later read of
the body waits at most BODY_READ_TIMEOUT seconds. `tests/e2e/test_slowloris.py` is the attack; it runs
against whichever server `ledger serve` starts.
"""

from __future__ import annotations

import collections
import contextlib
import os
import socket
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from gunicorn import http
from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import TConn, ThreadWorker

SERVERS = ("granian", "gunicorn")
# How long a client may take to send its request headers before the server drops the connection (a
# slow client must not hold a worker's thread): granian's own header-read timeout, and under gunicorn
# HeaderDeadlineWorker's deadline (the sync worker has none: use it only behind a buffering proxy).
HEADER_TIMEOUT_SECONDS = 10
# The largest request head (request line and headers) either server reads: gunicorn refuses a line or a
# header field over 8,190 bytes; granian's read buffer is capped at 16 KiB (its floor is 8 KiB).
MAX_HEAD_BYTES = 16384
HEADER_DEADLINE = float(HEADER_TIMEOUT_SECONDS)
HEADER_LIMIT = 64 * 1024  # bytes of request line and headers; gunicorn's own field limits apply as well
BODY_READ_TIMEOUT = 15.0  # seconds any one read of a request body may wait, in the request thread
_END_OF_HEAD = b"\r\n\r\n"


class _TimedReads:
    """The socket as the request parser reads it: every read waits at most BODY_READ_TIMEOUT. (The thread
    puts the socket back in blocking mode before it parses, so the timeout is set on each read.)"""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def recv(self, size: int) -> bytes:
        self._sock.settimeout(BODY_READ_TIMEOUT)
        return self._sock.recv(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class HeaderDeadlineWorker(ThreadWorker):
    """gthread, with the request head read in the event loop under a deadline (see the module docstring).
    TLS and HTTP/2 are not used by this service and are left to gthread's own path."""

    def init_process(self) -> None:
        self.reading: collections.deque[TConn] = collections.deque()  # by deadline (a constant offset)
        super().init_process()

    def _buffered(self) -> bool:
        return not self.cfg.is_ssl

    def accept(self, listener: socket.socket) -> None:
        if not self._buffered():
            super().accept(listener)
            return
        try:
            client_sock, client_addr = listener.accept()
        except OSError:
            return  # EAGAIN / ECONNABORTED: another worker took it, or the client went away
        self.nr_conns += 1
        self._read_head(TConn(self.cfg, client_sock, client_addr, listener.getsockname()))

    def on_client_socket_readable(self, conn: TConn, client: socket.socket) -> None:
        """A kept-alive connection's next request: its head is read under the deadline too."""
        if not self._buffered():
            super().on_client_socket_readable(conn, client)
            return
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._read_head(conn)

    def _read_head(self, conn: TConn) -> None:
        conn.sock.setblocking(False)
        conn.head = bytearray()
        conn.head_deadline = time.monotonic() + HEADER_DEADLINE
        self.reading.append(conn)
        self.poller.register(conn.sock, 1, partial(self._on_head_bytes, conn))  # 1: EVENT_READ

    def _on_head_bytes(self, conn: TConn, _client: socket.socket) -> None:
        try:
            chunk = conn.sock.recv(HEADER_LIMIT)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(conn)
            return
        searched_from = max(0, len(conn.head) - 3)
        conn.head += chunk
        # Over the limit, the parser has enough to refuse it with gunicorn's own 4xx, without a wait.
        if conn.head.find(_END_OF_HEAD, searched_from) >= 0 or len(conn.head) > HEADER_LIMIT:
            self.poller.unregister(conn.sock)
            self.reading.remove(conn)
            self._dispatch(conn)

    def _dispatch(self, conn: TConn) -> None:
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, _TimedReads(conn.sock), conn.client)
            conn.initialized = True
        conn.parser.unreader.unread(bytes(conn.head))
        conn.head = None
        conn.data_ready = True
        self.enqueue_req(conn)

    def _drop(self, conn: TConn) -> None:
        with contextlib.suppress(OSError, KeyError, ValueError):
            self.poller.unregister(conn.sock)
        if conn in self.reading:
            self.reading.remove(conn)
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        while self.reading and self.reading[0].head_deadline <= now:
            self._drop(self.reading[0])

    def murder_keepalived(self, force: bool = False) -> None:
        super().murder_keepalived(force)
        if force:
            while self.reading:
                self._drop(self.reading[0])


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
            # gthread is served by its subclass with a deadline on request heads (module docstring).
            "worker_class": "ledger.server.HeaderDeadlineWorker"
            if worker_class == "gthread"
            else worker_class,
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
