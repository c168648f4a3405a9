"""No answered lookup loses its inquiry record, whatever process is SIGKILLed under load.

The promise (docs/audit.md): an answer is sent only once its record is durable, so a crash can only
cost lookups that were never answered. Each test runs 4 client threads making lookups against
`ledger serve` (both servers the CLI offers), kills one process in the middle, recovers, and then
compares the lookup ids the clients received with the trail in PostgreSQL: every one must be there,
with a row hash that verifies. Transport errors and 503s during the fault are expected (those lookups
were not answered); wrong answers are not.

- an API worker: the group-commit leader is a request thread of a worker, so this also kills the
  "writer" with a batch in flight; the server starts a new worker;
- Redis: killed and restarted empty; lookups answer from PostgreSQL meanwhile, still recorded;
- PostgreSQL: every process SIGKILLed, then crash recovery. The private server runs with
  `synchronous_commit = on` here, as production does, so a commit returns only once its WAL is written.

Also here: a record is visible to GET /v1/lookups/{id} and to the subject access report as soon as
the answer is (polled, not timed), and a refused lookup leaves no record.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.support import (
    Http,
    Stack,
    create_database,
    fault_settings,
    lookup_body,
    phone,
    rows,
)
from tests.private_services import PostgresServer, RedisServer, children_of
from tests.support import Member, wait_for

CLIENTS = 4
SERVERS = ("gunicorn", "granian")


class Clients:
    """CLIENTS threads making lookups back to back; each answered lookup id is kept with its phase."""

    def __init__(self, api: Http, member: Member) -> None:
        self.api = api
        self.member = member
        self.phase = "before"
        self.received: list[tuple[str, str]] = []
        self.refused: dict[str, int] = {}
        self.wrong: list[str] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(CLIENTS)]

    def _run(self, k: int) -> None:
        n = 0
        while not self.stopping.is_set():
            n += 1
            phase = self.phase
            try:
                reply = self.api.post("/v1/lookups", lookup_body(phone(k * 1000 + n % 1000)), self.member, 5)
            except OSError:
                outcome = "transport"
            else:
                if reply.status == 200:
                    with self.lock:
                        self.received.append((reply.body["lookup_id"], phase))
                    continue
                outcome = str(reply.status)
                if reply.status != 503:
                    with self.lock:
                        self.wrong.append(f"{reply.status} {reply.body!r}")
            with self.lock:
                self.refused[outcome] = self.refused.get(outcome, 0) + 1
            time.sleep(0.02)

    def answered(self, phase: str) -> int:
        with self.lock:
            return sum(1 for _, p in self.received if p == phase)

    def __enter__(self) -> Clients:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)


def trail_has_every_answer(database: str, clients: Clients) -> None:
    received = [lookup_id for lookup_id, _ in clients.received]
    assert len(received) == len(set(received))
    stored = {
        r["id"]
        for r in rows(database, "SELECT id::text AS id FROM lookups WHERE id = ANY(%s::uuid[])", (received,))
    }
    lost = sorted(set(received) - stored)
    assert lost == [], f"{len(lost)} answered lookups have no inquiry record"


@pytest.fixture
def durable_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer(durable_commits=True)
    try:
        yield server.start()
    finally:
        server.remove()


@pytest.fixture
def durable_stack(
    durable_postgres: PostgresServer, private_redis: RedisServer, workdir: Path
) -> Iterator[Stack]:
    database = create_database(durable_postgres.url)
    deployed = Stack(fault_settings(database, private_redis.url), workdir)
    try:
        yield deployed
    finally:
        deployed.close()


def run_with_fault(stack: Stack, server: str, fault: Callable[[Stack, int], None]) -> Clients:
    service, api = stack.serve(workers=2, threads=4, server=server)
    member = stack.member("alpha", "lookup")
    with Clients(api, member) as clients:
        wait_for(lambda: clients.answered("before") >= 40, timeout=60)
        clients.phase = "fault"
        fault(stack, service.pid)
        clients.phase = "after"
        wait_for(lambda: clients.answered("after") >= 40, timeout=90)
    assert clients.wrong == []
    assert service.alive, service.tail()
    trail_has_every_answer(stack.settings.database_url or "", clients)
    verified = stack.cli("verify", "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    return clients


def kill_a_worker(_stack: Stack, server_pid: int) -> None:
    workers = children_of(server_pid)
    assert workers, "the server has no worker processes"
    os.kill(workers[0], signal.SIGKILL)
    time.sleep(1)


@pytest.mark.parametrize("server", SERVERS)
def test_sigkill_of_an_api_worker_loses_no_answered_lookup(stack: Stack, server: str) -> None:
    run_with_fault(stack, server, kill_a_worker)


@pytest.mark.parametrize("server", SERVERS)
def test_sigkill_of_redis_loses_no_answered_lookup(
    stack: Stack, private_redis: RedisServer, server: str
) -> None:
    def kill_redis(_stack: Stack, _pid: int) -> None:
        private_redis.kill()
        time.sleep(1)  # lookups answer from PostgreSQL meanwhile, and are recorded
        private_redis.start()  # empty: no persistence

    clients = run_with_fault(stack, server, kill_redis)
    assert clients.answered("fault") > 0, "no lookup was answered from PostgreSQL while Redis was down"


@pytest.mark.parametrize("server", SERVERS)
def test_sigkill_of_postgresql_loses_no_answered_lookup(
    durable_stack: Stack, durable_postgres: PostgresServer, server: str
) -> None:
    def kill_postgres(_stack: Stack, _pid: int) -> None:
        durable_postgres.kill()
        time.sleep(0.5)
        try:
            durable_postgres.start()  # crash recovery replays the WAL
        except RuntimeError as exc:
            raise AssertionError(f"{exc}\n{(durable_postgres.root / 'log').read_text()[-3000:]}") from None

    clients = run_with_fault(durable_stack, server, kill_postgres)
    assert clients.refused.get("503", 0) + clients.refused.get("transport", 0) > 0, clients.refused


def test_a_record_is_visible_to_the_member_and_the_subject_report_when_its_answer_is(stack: Stack) -> None:
    _service, api = stack.serve(workers=2, threads=4)
    member = stack.member("alpha", "lookup")
    operator = stack.member("operator", "dispute")
    for n in range(5):
        reply = api.post("/v1/lookups", lookup_body(phone(n)), member)
        assert reply.status == 200, reply
        lookup_id = reply.body["lookup_id"]
        read_back = wait_for(
            lambda lid=lookup_id: (r := api.get(f"/v1/lookups/{lid}", member)).status == 200 and r
        )
        assert read_back.body == reply.body
        report = wait_for(
            lambda n=n: (
                (r := api.post("/v1/subjects/report", {"identifiers": [phone(n)]}, operator)).status == 200
                and r.body["lookups"]
                and r
            )
        )
        assert [entry["platform"]["slug"] for entry in report.body["lookups"]] == ["alpha"]


def test_refused_lookups_leave_no_record(stack: Stack) -> None:
    _service, api = stack.serve(workers=1, threads=2)
    member = stack.member("alpha", "lookup")
    bad = [
        {"identifiers": [], "purpose": "refund_review"},
        {"identifiers": [phone(1)], "purpose": "marketing"},
        {"identifiers": [{"type": "phone", "value": "not a phone"}], "purpose": "refund_review"},
        {"identifiers": [phone(1)], "purpose": "refund_review", "extra": 1},
    ]
    for body in bad:
        reply = api.post("/v1/lookups", body, member)
        assert reply.status in (400, 422), reply
        assert reply.headers["content-type"].startswith("application/problem+json")
    assert api.post("/v1/lookups", lookup_body(phone(1)), None).status == 401
    assert rows(stack.settings.database_url or "", "SELECT count(*) AS n FROM lookups")[0]["n"] == 0
