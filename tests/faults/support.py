"""What the fault tests share: the ledger's own processes (`ledger serve`, `ledger worker`, `ledger
beat`) as subprocesses, a plain HTTP client, request bodies, and the checks every fault test ends with.
The fixtures that start private servers are in tests/faults/conftest.py.

Why a from-scratch recompute: the promise after any fault is not "some score exists" but "the stored
scores are what the model gives for the incidents now in the ledger". `score_mismatches` groups the
incidents into consumers by their strong tokens with its own union-find (it does not trust the
`subjects` tables it is checking), runs the pure model on each group, and compares with `risk_scores`.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ledger.config import Settings
from ledger.domain.policy import Policy, load_policy
from ledger.domain.scoring import IncidentFacts, assess
from ledger.identity import STRONG_TYPES
from ledger.services import platforms as platform_service
from ledger.services.runtime import Runtime
from ledger.storage.db import apply_schema
from tests.private_services import SERVE_PORTS, _killpg, free_port
from tests.support import IDENTITY_KEY, ROOT, Member, die_with_parent, env_for, wait_for

LOG_PROBLEM = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback")


def create_database(server_url: str) -> str:
    """A new database with the schema applied, on the server at `server_url`; returns its URL."""
    name = f"ledger_faults_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = server_url.rpartition("/")[0] + "/" + name
    apply_schema(url)
    return url


def drop_database(server_url: str, url: str) -> None:
    name = url.rpartition("/")[2]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- the ledger's processes -------------------------------------------------------------------------
class Service:
    """One `ledger ...` subprocess in its own session, with its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready: Callable[[Service], bool], timeout: float = 60) -> Service:
        with self.log_path.open("ab") as handle:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ledger.cli", *self.args],
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
                preexec_fn=die_with_parent,  # noqa: PLW1509 (the child only calls prctl before exec)
            )
        try:
            wait_for(lambda: not self.alive or ready(self), timeout=timeout, interval=0.1)
        except AssertionError:
            raise AssertionError(f"{self.name} not ready within {timeout}s:\n{self.tail()}") from None
        assert self.alive, f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}"
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def problems(self) -> list[str]:
        """Log lines at ERROR or above, and tracebacks."""
        return [line for line in self.log().splitlines() if LOG_PROBLEM.search(line)]

    def kill(self) -> None:
        """SIGKILL the whole process group: the parent and every child die without cleaning up."""
        if self.proc is not None and self.proc.poll() is None:
            _killpg(self.proc, signal.SIGKILL)
            self.proc.wait(timeout=15)
        if self.proc is not None:
            _killpg(self.proc, signal.SIGKILL)  # children the parent left behind

    def pause(self) -> None:
        """SIGSTOP the process group: alive, connected, and doing nothing (a stalled scheduler)."""
        assert self.proc is not None
        _killpg(self.proc, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        _killpg(self.proc, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            _killpg(self.proc, signal.SIGCONT)  # a paused process cannot act on SIGTERM
            _killpg(self.proc, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=15)
        self.kill()


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: Any

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.body!r})"


class Http:
    """A deliberately plain HTTP/1.1 client: one connection per request, and a transport failure
    (reset, timeout, refused) raises instead of being mistaken for an answer."""

    def __init__(self, port: int) -> None:
        self.port = port

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 20.0,
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            payload = None if body is None else json.dumps(body).encode()
            all_headers = {"Content-Type": "application/json", **(headers or {})}
            conn.request(method, path, body=payload, headers=all_headers)
            response = conn.getresponse()
            raw = response.read()
            names = {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()
        parsed = json.loads(raw) if raw and "json" in names.get("content-type", "") else raw
        return Reply(response.status, names, parsed)

    def post(self, path: str, body: Any, member: Member | None = None, timeout: float = 20.0) -> Reply:
        return self.request("POST", path, body, member.headers if member else None, timeout)

    def get(self, path: str, member: Member | None = None, timeout: float = 20.0) -> Reply:
        return self.request("GET", path, None, member.headers if member else None, timeout)

    def healthy(self) -> bool:
        try:
            return self.get("/healthz", timeout=2).status == 200
        except OSError:
            return False


class Stack:
    """The ledger as deployed, on one database and one Redis: serve, workers and beats on demand, and
    an in-process Runtime for setting up members and reading the database."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.settings = settings
        self.workdir = workdir
        self.services: list[Service] = []
        self.metrics_dir = workdir / "metrics"
        self.metrics_dir.mkdir(exist_ok=True)

    def env(self, **extra: str) -> dict[str, str]:
        env = env_for(self.settings)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir)
        env.update(extra)
        return env

    def _service(self, name: str, args: list[str], **extra_env: str) -> Service:
        index = len(self.services)
        service = Service(name, args, self.env(**extra_env), self.workdir / f"{index:02d}-{name}.log")
        self.services.append(service)
        return service

    def serve(self, workers: int = 2, threads: int = 4, server: str = "gunicorn") -> tuple[Service, Http]:
        port = free_port(SERVE_PORTS)
        args = ["serve", "--bind", f"127.0.0.1:{port}", "--server", server, "--workers", str(workers)]
        args += ["--worker-class", "gthread", "--threads", str(threads)]
        http_client = Http(port)
        service = self._service("serve", args).start(lambda _: http_client.healthy())
        return service, http_client

    def worker(self, concurrency: int = 2) -> Service:
        name = f"faults-{uuid.uuid4().hex[:6]}@%h"
        args = ["worker", f"--concurrency={concurrency}", "--without-heartbeat", "--without-gossip"]
        args += ["--without-mingle", "-n", name]
        return self._service("worker", args).start(lambda s: "ready." in s.log())

    def beat(self) -> Service:
        state = self.workdir / f"beat-{uuid.uuid4().hex[:6]}"
        state.mkdir()
        service = self._service("beat", ["beat"], LEDGER_STATE_DIR=str(state))
        return service.start(lambda s: "beat: Starting" in s.log())

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ledger.cli", *args],
            env=self.env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    @cached_property
    def rt(self) -> Runtime:
        return Runtime(self.settings.require_services())

    def member(self, slug: str, scopes: str = "report,lookup") -> Member:
        operator = (
            set(scopes.split(",")) <= platform_service.OPERATOR_SCOPES
        )  # consumer rights: the operator's
        issued = platform_service.create_platform(self.rt, slug, slug.title(), scopes, operator=operator)
        # Faults, not quotas, are under test: clients running back to back on an idle machine outpace the
        # default 200/s, and a 429 would count as a wrong answer.
        platform_service.set_rate_limit(self.rt, slug, 1_000_000, 1_000_000)
        return Member(slug, issued.key, issued.key_id)

    def query(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        return rows(self.settings.database_url or "", sql, params)

    def close(self) -> None:
        try:
            for service in reversed(self.services):
                service.stop()
                # Shown by pytest only when the test failed.
                print(f"--- {service.name} ({service.log_path.name}) ---\n{service.tail(40)}")
        finally:
            if "rt" in self.__dict__:
                self.rt.close()


def fault_settings(database_url: str, redis_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        identity_key=IDENTITY_KEY,
        environment="test",
        outbox_grace_seconds=1,
    )


# -- request bodies ---------------------------------------------------------------------------------
def email(n: int) -> dict[str, str]:
    return {"type": "email", "value": f"consumer{n}@example.com"}


def phone(n: int) -> dict[str, str]:
    return {"type": "phone", "value": f"1380013{n:04d}"}


def report_body(external_id: str, identifiers: list[dict[str, str]], amount: int = 45_000) -> dict[str, Any]:
    return {
        "external_id": external_id,
        "category": "fabricated_evidence",
        "confirmation": "platform_review",
        "amount": {"value": amount, "currency": "CNY"},
        "occurred_at": "2026-01-15T10:00:00+08:00",
        "consumer_notified_at": "2026-01-16T10:00:00+08:00",
        "identifiers": identifiers,
    }


def lookup_body(*identifiers: dict[str, str]) -> dict[str, Any]:
    return {"identifiers": list(identifiers), "purpose": "refund_review", "refund": {"reference": "R-1"}}


# -- checks -----------------------------------------------------------------------------------------
def rows(database_url: str, sql: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(database_url, row_factory=dict_row, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def count(database_url: str, sql: str, params: Any = None) -> int:
    return int(next(iter(rows(database_url, sql, params)[0].values())))


def half_written(database_url: str) -> list[str]:
    """Incidents missing a part that the report transaction writes with them: identifiers, exactly one
    `reported` event, and an outbox row naming them. Also `reported` events without an incident."""
    problems = [
        f"incident {r['id']} has no identifiers"
        for r in rows(
            database_url,
            """SELECT id FROM incidents i
               WHERE NOT EXISTS (SELECT 1 FROM incident_identifiers ii WHERE ii.incident_id = i.id)""",
        )
    ]
    problems += [
        f"incident {r['id']} has {r['n']} reported events"
        for r in rows(
            database_url,
            """SELECT i.id, count(e.id) AS n FROM incidents i
               LEFT JOIN ledger_events e ON e.incident_id = i.id AND e.kind = 'reported'
               GROUP BY i.id HAVING count(e.id) <> 1""",
        )
    ]
    problems += [
        f"incident {r['id']} has no outbox row"
        for r in rows(
            database_url,
            """SELECT id FROM incidents i
               WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.args -> 'incidents' ? i.id::text)""",
        )
    ]
    problems += [
        f"event {r['id']} reports a missing incident"
        for r in rows(
            database_url,
            """SELECT id FROM ledger_events e WHERE kind = 'reported'
               AND NOT EXISTS (SELECT 1 FROM incidents i WHERE i.id = e.incident_id)""",
        )
    ]
    problems += [
        f"event {r['id']} is neither pending nor a log leaf"
        for r in rows(
            database_url,
            """SELECT id FROM ledger_events e
               WHERE NOT EXISTS (SELECT 1 FROM log_pending p WHERE p.event_id = e.id)
                 AND NOT EXISTS (SELECT 1 FROM log_leaves l WHERE l.event_id = e.id)""",
        )
    ]
    return problems


def _groups(incidents: list[dict[str, Any]], tokens: list[dict[str, Any]]) -> dict[Any, list[Any]]:
    """Union-find over incidents that share a strong token: the consumers, found from scratch."""
    parent = {i["id"]: i["id"] for i in incidents}

    def find(x: Any) -> Any:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first_with: dict[str, Any] = {}
    for t in tokens:
        if t["token"] in first_with:
            a, b = find(first_with[t["token"]]), find(t["incident_id"])
            if a != b:
                parent[a] = b
        else:
            first_with[t["token"]] = t["incident_id"]
    groups: dict[Any, list[Any]] = {}
    for i in incidents:
        groups.setdefault(find(i["id"]), []).append(i)
    return groups


def score_mismatches(database_url: str, policy: Policy | None = None) -> list[str]:
    """Differences between the stored subjects and scores and a from-scratch recompute (empty if none).

    Each group of incidents connected by strong tokens must share one live subject, distinct groups
    must have distinct subjects, and the subject's `risk_scores` row must equal the pure model's
    assessment of the group at the row's own `computed_at`."""
    policy = policy or load_policy()
    incidents = rows(
        database_url,
        """SELECT i.id, i.subject_id, i.platform_id, i.category, i.confirmation, i.amount_minor, i.currency,
                  i.occurred_at, i.status, p.effective_trust, s.merged_into,
                  EXISTS (SELECT 1 FROM disputes d WHERE d.incident_id = i.id AND d.status = 'open'
                          AND d.statement IS NOT NULL AND d.statement <> '') AS has_statement
           FROM incidents i JOIN platforms p ON p.id = i.platform_id
           LEFT JOIN subjects s ON s.id = i.subject_id""",
    )
    tokens = rows(
        database_url,
        "SELECT incident_id, token FROM incident_identifiers WHERE id_type = ANY(%s) ORDER BY incident_id, token",
        (list(STRONG_TYPES),),
    )
    stored = {r["subject_id"]: r for r in rows(database_url, "SELECT * FROM risk_scores")}
    problems: list[str] = []
    seen: dict[int, Any] = {}
    for root, group in _groups(incidents, tokens).items():
        subject_ids = {i["subject_id"] for i in group}
        if len(subject_ids) != 1 or None in subject_ids:
            problems.append(f"incidents of one consumer have subjects {sorted(map(str, subject_ids))}")
            continue
        subject = subject_ids.pop()
        if group[0]["merged_into"] is not None:
            problems.append(f"subject {subject} was merged away but still holds incidents")
        if subject in seen:
            problems.append(f"subject {subject} holds two unconnected consumers")
        seen[subject] = root
        row = stored.get(subject)
        if row is None:
            problems.append(f"subject {subject} ({len(group)} incidents) has no score")
            continue
        facts = [
            IncidentFacts(
                platform_id=int(i["platform_id"]),
                category=i["category"],
                confirmation=i["confirmation"],
                amount_minor=int(i["amount_minor"]),
                currency=i["currency"].strip(),
                occurred_at=i["occurred_at"],
                status=i["status"],
                platform_trust=float(i["effective_trust"]),
                has_statement=bool(i["has_statement"]),
            )
            for i in group
        ]
        expected = assess(facts, row["computed_at"], policy)
        want = (
            expected.score,
            expected.tier,
            list(expected.restrictions),
            list(expected.reasons),
            expected.incidents,
            expected.platforms,
            expected.last_incident_at,
        )
        have = (
            row["score"],
            row["tier"],
            list(row["restrictions"]),
            list(row["reasons"]),
            row["incidents"],
            row["platforms"],
            row["last_incident_at"],
        )
        if want != have:
            problems.append(f"subject {subject}: stored {have}, recomputed {want}")
    return problems


def outbox_pending(database_url: str) -> int:
    return count(database_url, "SELECT count(*) FROM outbox WHERE done_at IS NULL")


def settled(database_url: str) -> bool:
    """Every outbox row is done and every incident has a subject."""
    return (
        outbox_pending(database_url) == 0
        and count(database_url, "SELECT count(*) FROM incidents WHERE subject_id IS NULL") == 0
    )


def wait_settled(database_url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not settled(database_url):
        if time.monotonic() > deadline:
            pending = rows(database_url, "SELECT id, attempts, sent_at FROM outbox WHERE done_at IS NULL")
            raise AssertionError(f"outbox not drained within {timeout}s: {pending[:10]}")
        time.sleep(0.2)
