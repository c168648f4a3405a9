"""Slowloris (M1): slow clients without a key must not take the served API down.

32 sockets that trickle header bytes used to hold every request thread, so that every /healthz probe
timed out. The attacker here keeps 32 connections trickling a header line every half second and opens a
new one whenever the server drops one. Whatever serves `ledger serve`, a probe must still be answered.
The probe's timeout is what "answered" means for a load balancer's health check, not a measurement.
"""

from __future__ import annotations

import http.client
import socket
import threading
from typing import Any

import pytest

from ledger.config import Settings
from tests.support import ServedApp

SLOW_SOCKETS = 32
PROBES = 6
PROBE_TIMEOUT = 10.0  # a typical load-balancer health-check timeout


class Slowloris:
    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        self.sockets: list[socket.socket] = []
        self.opened = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: ledger\r\n")
        except OSError:
            return
        self.sockets.append(sock)
        self.opened += 1

    def _run(self) -> None:
        line = 0
        while not self.stop.is_set():
            while len(self.sockets) < self.count and not self.stop.is_set():
                self._open()
            for sock in list(self.sockets):
                try:
                    sock.sendall(b"X-Trickle-%d: a\r\n" % line)
                except OSError:
                    self.sockets.remove(sock)
                    sock.close()
            line += 1
            self.stop.wait(0.5)

    def __enter__(self) -> Slowloris:
        for _ in range(self.count):
            self._open()
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        self.thread.join(5)
        for sock in self.sockets:
            sock.close()


def probe(port: int) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


@pytest.mark.timeout(300)
def test_health_probes_are_answered_while_32_slow_clients_trickle(settings: Settings, clean: None) -> None:
    served = ServedApp(settings, workers=2).start()
    try:
        with Slowloris(served.port, SLOW_SOCKETS) as attack:
            threading.Event().wait(2.0)  # let the slow sockets reach whatever would serve them
            statuses = []
            for _ in range(PROBES):
                statuses.append(probe(served.port))
                threading.Event().wait(1.0)
            assert attack.opened >= SLOW_SOCKETS  # the attack was running throughout
        assert statuses == [200] * PROBES
    finally:
        served.stop()
