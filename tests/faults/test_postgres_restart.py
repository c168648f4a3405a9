"""PostgreSQL stopped and started again while platforms keep reporting.

The promise to a reporting platform: an answer is either 201 (the incident, its identifiers, its
hash-chained `reported` event and its outbox row are committed) or 503 with Retry-After (try again;
retrying the same body is safe). Never a 500, never a dropped connection, never an incident half
written. And the API must heal by itself: the same `ledger serve` process answers 201 again once
PostgreSQL is back, and `ledger verify` finds the hash chain intact.

The cluster is a private one (initdb + pg_ctl), stopped with `pg_ctl stop -m fast`, which ends every
session at once, as a restart or failover does.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults.support import (
    Http,
    Reply,
    Stack,
    create_database,
    email,
    fault_settings,
    half_written,
    report_body,
    rows,
)
from tests.private_services import PostgresServer, RedisServer
from tests.support import Member, wait_for

CLIENTS = 4
PROBLEM = "application/problem+json"


@dataclass(frozen=True)
class Attempt:
    phase: str  # when the request was sent: before, down or after the outage
    body: dict[str, object]
    result: Reply | Exception


class Reporters:
    """Client threads reporting new incidents as fast as the API answers, recording every outcome."""

    def __init__(self, api: Http, member: Member) -> None:
        self.api = api
        self.member = member
        self.phase = "before"
        self.attempts: list[Attempt] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(CLIENTS)]

    def _run(self, k: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            phase = self.phase
            body = report_body(f"c{k}-{n}", [email(k * 100_000 + n)])
            result: Reply | Exception
            try:
                result = self.api.post("/v1/incidents", body, self.member, timeout=30)
            except (OSError, http.client.HTTPException) as exc:  # reset, refused, timeout, bad reply
                result = exc
            self.attempts.append(Attempt(phase, body, result))
            if not isinstance(result, Reply) or result.status != 201:
                time.sleep(0.05)

    def count(self, status: int, phase: str | None = None) -> int:
        return sum(
            1
            for a in list(self.attempts)
            if isinstance(a.result, Reply) and a.result.status == status and phase in (None, a.phase)
        )

    def __enter__(self) -> Reporters:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


@pytest.fixture
def pg_stack(private_postgres: PostgresServer, private_redis: RedisServer, workdir: Path) -> Iterator[Stack]:
    """The ledger on a private PostgreSQL cluster (the test stops it) and a private Redis."""
    deployed = Stack(fault_settings(create_database(private_postgres.url), private_redis.url), workdir)
    try:
        yield deployed
    finally:
        deployed.close()


@pytest.mark.timeout(170)
def test_reports_across_a_postgres_restart_get_201_or_503_and_nothing_is_half_written(
    pg_stack: Stack, private_postgres: PostgresServer
) -> None:
    database = pg_stack.settings.database_url or ""
    alpha = pg_stack.member("alpha")
    pg_stack.rt.close()  # hold no connection of our own across the outage
    serve, api = pg_stack.serve(workers=2, threads=4)
    serve_pid = serve.pid

    with Reporters(api, alpha) as reporters:
        wait_for(lambda: reporters.count(201) >= 20, timeout=60)
        reporters.phase = "down"
        private_postgres.stop("fast")
        wait_for(lambda: reporters.count(503) >= 2 * CLIENTS, timeout=60)
        private_postgres.start()
        reporters.phase = "after"
        wait_for(lambda: reporters.count(201, "after") >= 20, timeout=60)
    attempts = reporters.attempts

    # Only 201 or 503 with Retry-After, as problem+json; no transport error of any kind.
    assert [a for a in attempts if isinstance(a.result, Exception)] == []
    replies = [a.result for a in attempts if isinstance(a.result, Reply)]
    assert {r.status for r in replies} <= {201, 503}, [r for r in replies if r.status not in (201, 503)][:3]
    refused = [r for r in replies if r.status == 503]
    assert refused
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
    assert all(r.headers["content-type"].startswith(PROBLEM) for r in refused)

    # The same serve process recovered by itself.
    assert serve.alive
    assert serve.pid == serve_pid
    assert reporters.count(201, "after") >= 20

    # Every 201 is stored, and nothing is stored half-written.
    created = {r.body["id"] for r in replies if r.status == 201}
    stored = {r["id"] for r in rows(database, "SELECT id::text AS id FROM incidents")}
    assert created <= stored
    assert half_written(database) == []

    # A refused report retried with the same body lands exactly once (200 if the refused attempt had
    # in fact committed before its connection died).
    retried = [a.body for a in attempts if isinstance(a.result, Reply) and a.result.status == 503]
    for body in retried:
        assert api.post("/v1/incidents", body, alpha).status in (200, 201)
    sent = {str(a.body["external_id"]) for a in attempts}
    external_ids = [r["external_id"] for r in rows(database, "SELECT external_id FROM incidents")]
    assert sorted(external_ids) == sorted(sent)

    # The log survived: every report's event is integrated once, and `ledger verify` re-checks them all.
    integrated = pg_stack.cli("sequencer", "--once", "--json")
    assert integrated.returncode == 0, integrated.stdout + integrated.stderr
    verify = pg_stack.cli("verify", "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    result = json.loads(verify.stdout)
    assert result["ok"] is True
    assert (result["leaves"], result["pending"]) == (len(external_ids), 0)
