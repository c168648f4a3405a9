"""A real HTTP receiver for webhook tests: a threaded server on 127.0.0.1 that records every request and
answers as each path's script says (fail N times, hang, then succeed)."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    answered: int


@dataclass
class Script:
    """How a path answers: `fail` requests get 500 first, `hang` requests then wait `hang_seconds`."""

    fail: int = 0
    hang: int = 0
    hang_seconds: float = 10.0
    seen: int = field(default=0)


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.scripts: dict[str, Script] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    script = receiver.scripts.setdefault(self.path, Script())
                    script.seen += 1
                    n = script.seen
                hang = script.fail < n <= script.fail + script.hang
                status = 500 if n <= script.fail else 200 if hang else 204
                with receiver._lock:  # recorded on arrival, so a request whose sender died still counts
                    receiver.requests.append(
                        Received(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            time.time(),
                            status,
                        )
                    )
                if hang:
                    time.sleep(script.hang_seconds)
                with contextlib.suppress(OSError):  # the sender may have timed out or died meanwhile
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.base = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path == path]
