"""The lookup hot path when its dependencies fail.

A refund system calls the ledger before it approves a refund, so a lookup must keep answering when it
can answer correctly and refuse plainly when it cannot:
- Redis gone: answer from PostgreSQL (`risk_scores`) with the same decision, and say so in /readyz and
  /metrics;
- PostgreSQL gone: no answer, because an answer must never go out without its audit record;
- both gone: 503 problem+json with Retry-After;
- the scoring worker behind: answer, flagged `stale`, until the worker catches up.

The shared PostgreSQL and Redis of the test session are never stopped. Each test that kills something
starts its own `redis-server` or PostgreSQL cluster on a free port and points an app at it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from ledger import create_app
from ledger.config import Settings
from ledger.services import cache_rebuild
from ledger.services import platforms as platform_service
from ledger.services.runtime import Runtime
from ledger.storage.db import apply_schema
from tests import support
from tests.private_services import PostgresServer, RedisServer
from tests.support import Member, WorkerProcess, audit_count, incident_body, metric, wait_for

PHONE = {"type": "phone", "value": "13800138000"}
UNKNOWN = {"type": "phone", "value": "13700137000"}
# `return_required` from one platform: a confirmation exempt from the single-platform cap.
SERIOUS = {"amount": {"value": 450_000, "currency": "CNY"}, "confirmation": "court_or_police"}
PROBLEM = "application/problem+json"


# Every test here starts a worker or a private server.
pytestmark = pytest.mark.process


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.kill()


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.remove()


def build_app(settings: Settings) -> Flask:
    application = create_app(settings)
    application.config["TESTING"] = True
    return application


def runtime_of(application: Flask) -> Runtime:
    return application.extensions["ledger.runtime"]


def new_member(rt: Runtime, slug: str) -> Member:
    issued = platform_service.create_platform(rt, slug, slug.title(), "report,lookup")
    return Member(slug, issued.key, issued.key_id)


def post_lookup(client: Any, member: Member, *identifiers: dict[str, str]) -> Any:
    """A lookup (tests.support.post_lookup) by PHONE unless told, with a refund reference."""
    return support.post_lookup(client, member, *(identifiers or [PHONE]), refund={"reference": "R-1"})


def lookup(client: Any, member: Member, *identifiers: dict[str, str]) -> dict[str, Any]:
    return support.lookup(client, member, *(identifiers or [PHONE]), refund={"reference": "R-1"})


def same_decision(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["decision"] == b["decision"]
    assert a["summary"]["incidents"] == b["summary"]["incidents"]
    assert a["summary"]["platforms"] == b["summary"]["platforms"]
    assert datetime.fromisoformat(a["summary"]["last_incident_at"]) == datetime.fromisoformat(
        b["summary"]["last_incident_at"]
    )
    assert datetime.fromisoformat(a["computed_at"]) == datetime.fromisoformat(b["computed_at"])
    assert (a["policy_version"], a["stale"]) == (b["policy_version"], b["stale"])


def test_redis_stopped_mid_test_answers_from_postgres_with_the_same_decision(
    client: Any, alpha: Member, beta: Member, settings: Settings, worker: Any, private_redis: RedisServer
) -> None:
    # Scored by the real worker through the session's Redis.
    created = client.post("/v1/incidents", json=incident_body("order-1", **SERIOUS), headers=alpha.headers)
    assert created.status_code == 201
    scored = wait_for(
        lambda: (r := lookup(client, beta, PHONE))["decision"]["score"] > 0 and not r["stale"] and r
    )
    assert scored["decision"]["tier"] == "return_required"

    # A second API process whose Redis we own; `ledger cache rebuild` fills it as after a Redis restart.
    application = build_app(settings.with_(redis_url=private_redis.url))
    rt = runtime_of(application)
    try:
        api = application.test_client()
        assert cache_rebuild.rebuild_cache(rt) > 0
        before = lookup(api, beta, PHONE)
        same_decision(before, scored)
        ready = api.get("/readyz")
        assert ready.status_code == 200
        assert ready.get_json()["checks"]["lookup_path"] == "redis"
        fallbacks = metric(api, "ledger_cache_fallbacks_total")
        records = audit_count(rt)

        private_redis.kill()

        after = lookup(api, beta, PHONE)
        unknown = lookup(api, beta, UNKNOWN)
        same_decision(after, before)
        assert unknown["decision"] == {"tier": "clear", "restrictions": [], "score": 0, "reasons": []}
        ready = api.get("/readyz")
        assert ready.status_code == 503
        body = ready.get_json()
        assert body["checks"].pop("log").startswith(("ok (lag", "behind (lag"))  # the log's lag (PostgreSQL)
        assert body == {
            "status": "degraded",
            "checks": {"postgres": "ok", "redis": "down", "lookup_path": "postgres-fallback"},
        }
        assert metric(api, "ledger_cache_fallbacks_total") == fallbacks + 2
        # Answers from the fallback are recorded like any other.
        assert audit_count(rt) == records + 2
        get = api.get(f"/v1/lookups/{after['lookup_id']}", headers=beta.headers)
        assert get.get_json() == after

        # Redis back on the same port: the hot path returns to it without a restart.
        private_redis.start()
        # The circuit breaker keeps skipping Redis for a moment after its last failure.
        wait_for(lambda: api.get("/readyz").status_code == 200 and not rt.redis.is_tripped)
        assert cache_rebuild.rebuild_cache(rt) > 0
        fallbacks = metric(api, "ledger_cache_fallbacks_total")
        same_decision(lookup(api, beta, PHONE), before)
        assert metric(api, "ledger_cache_fallbacks_total") == fallbacks
    finally:
        rt.close()


def test_postgres_down_refuses_rather_than_answer_unrecorded_and_both_down_is_503(
    settings: Settings, private_redis: RedisServer, private_postgres: PostgresServer
) -> None:
    apply_schema(private_postgres.url)
    # Keys stay resolved for the whole test, so what fails below is the lookup path, not authentication.
    application = build_app(
        settings.with_(
            database_url=private_postgres.url, redis_url=private_redis.url, auth_cache_seconds=600.0
        )
    )
    rt = runtime_of(application)
    try:
        api = application.test_client()
        alpha = new_member(rt, "alpha")
        assert post_lookup(api, alpha).status_code == 200
        answered = metric(api, "ledger_lookups_total", tier="clear", purpose="refund_review")
        fallbacks = metric(api, "ledger_cache_fallbacks_total")

        # PostgreSQL down, Redis up: the decision is in Redis, but its audit record cannot be written.
        private_postgres.stop()  # fast: every session ends at once, and committed work survives
        unrecorded = post_lookup(api, alpha)
        assert unrecorded.status_code == 503
        assert unrecorded.mimetype == PROBLEM
        ready = api.get("/readyz")
        assert ready.status_code == 503
        assert ready.get_json()["checks"] == {"postgres": "down", "redis": "ok", "lookup_path": "unavailable"}

        # Both down.
        private_redis.kill()
        refused = post_lookup(api, alpha)
        assert refused.status_code == 503
        assert refused.mimetype == PROBLEM
        assert refused.get_json()["status"] == 503
        assert int(refused.headers["Retry-After"]) >= 1
        # Neither refusal counts as an answered lookup, nor as one answered from PostgreSQL.
        assert metric(api, "ledger_lookups_total", tier="clear", purpose="refund_review") == answered
        assert metric(api, "ledger_cache_fallbacks_total") == fallbacks

        # Both back: the same process recovers by itself, and only answered lookups were recorded.
        private_postgres.start()
        private_redis.start()
        wait_for(lambda: post_lookup(api, alpha).status_code == 200, timeout=30, interval=0.5)
        assert api.get("/readyz").status_code == 200
        assert audit_count(rt) == 2
    finally:
        rt.close()


def test_answers_are_stale_while_the_worker_is_behind(
    isolated_settings: Settings, private_redis: RedisServer
) -> None:
    # No worker consumes this private broker, nor relays from this database, until we start one.
    private = isolated_settings.with_(redis_url=private_redis.url)
    application = build_app(private)
    rt = runtime_of(application)
    try:
        api = application.test_client()
        alpha, beta = new_member(rt, "alpha"), new_member(rt, "beta")
        created = api.post("/v1/incidents", json=incident_body("order-1", **SERIOUS), headers=alpha.headers)
        assert created.status_code == 201

        pending = lookup(api, beta, PHONE)
        assert pending["stale"] is True
        assert pending["decision"]["tier"] == "clear"

        backlog = WorkerProcess(private).start()
        try:
            fresh = wait_for(lambda: not (r := lookup(api, beta, PHONE))["stale"] and r)
        finally:
            backlog.stop()
        assert fresh["decision"]["tier"] == "return_required"
        assert fresh["summary"]["incidents"] == 1
    finally:
        rt.close()
