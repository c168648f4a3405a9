"""Shared fixtures: a private PostgreSQL database and Redis database per test session, reset before
each test, an app and client wired to them, and a real Celery worker process when a test needs one.

The plain helpers (request bodies, `report`, `lookup`, the subprocess wrappers) are in tests/support.py.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from ledger import create_app
from ledger.config import Settings
from ledger.services import platforms as platform_service
from ledger.services.runtime import Runtime
from ledger.storage.db import apply_schema
from tests.support import IDENTITY_KEY, PG_SERVER, REDIS_URL, TOKEN_KEY, Member, WorkerProcess, reset_state


def _db_url(name: str) -> str:
    base, _, _ = PG_SERVER.rpartition("/")
    return f"{base}/{name}"


def _session_database() -> Iterator[str]:
    name = f"ledger_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _db_url(name)
    apply_schema(url)
    yield url
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    yield from _session_database()


@pytest.fixture(scope="session")
def second_database_url() -> Iterator[str]:
    yield from _session_database()


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        identity_key=IDENTITY_KEY,
        token_key=TOKEN_KEY,
        db_role="ledger_app",
        # Far above what any test but the rate-limit attack needs (that one builds its own app).
        consumer_rights_per_minute=100_000,  # the suite runs as the application's restricted role, as production should
        environment="test",
        outbox_grace_seconds=1,
        pool_max=16,
        # Webhook tests run a receiver on this host: the operator's allowance, short timeouts and backoff.
        webhook_allow_networks="127.0.0.1/32",
        webhook_timeout_seconds=2,
        webhook_backoff_ms=200,
    )


@pytest.fixture
def clean(database_url: str) -> None:
    reset_state(database_url)


@pytest.fixture
def isolated_settings(settings: Settings, second_database_url: str) -> Settings:
    """The test settings on a second database, emptied for this test.

    The session worker's outbox relay sends every unsent row of the main database to the session broker
    within a second. A test that wires the API to a broker of its own (a private redis-server), or to no
    broker, and expects its rows to wait for the worker or sweep it starts, uses this database instead."""
    reset_state(second_database_url)
    return settings.with_(database_url=second_database_url)


@pytest.fixture
def app(settings: Settings, clean: None) -> Iterator[Any]:
    application = create_app(settings)
    application.config["TESTING"] = True
    yield application
    application.extensions["ledger.runtime"].close()


@pytest.fixture
def rt(app: Any) -> Runtime:
    return app.extensions["ledger.runtime"]  # type: ignore[no-any-return]


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def make_platform(rt: Runtime) -> Callable[..., Member]:
    def make(slug: str = "alpha", scopes: str = "report,lookup", operator: bool | None = None) -> Member:
        # Keys with only consumer-rights scopes belong to the operator's account (they exist nowhere else).
        if operator is None:
            operator = set(scopes.split(",")) <= platform_service.OPERATOR_SCOPES
        issued = platform_service.create_platform(rt, slug, slug.title(), scopes, operator=operator)
        return Member(slug, issued.key, issued.key_id)

    return make


@pytest.fixture
def alpha(make_platform: Callable[..., Member]) -> Member:
    return make_platform("alpha", "report,lookup")


@pytest.fixture
def beta(make_platform: Callable[..., Member]) -> Member:
    return make_platform("beta", "report,lookup")


@pytest.fixture(scope="session")
def worker(settings: Settings) -> Iterator[WorkerProcess]:
    """One worker for the session; tests that need it take this fixture."""
    proc = WorkerProcess(settings).start()
    yield proc
    proc.stop()
