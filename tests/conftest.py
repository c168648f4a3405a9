"""Shared fixtures: private PostgreSQL and Redis databases per test session, reset before each test, an
app and client wired to them, and a real Celery worker process when a test needs one.

Two databases: the tests that take the `worker` run on the worker's database and Redis database, every
other test on a database that no worker watches. So a test without the worker never meets a task or
an outbox relay it did not start, and the worker tests run one after another on a worker that has
finished the previous test's work (`WorkerProcess.settle`).

The plain helpers (request bodies, `report`, `lookup`, the subprocess wrappers) are in tests/support.py.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from ledger import create_app
from ledger.config import Settings
from ledger.services import platforms as platform_service
from ledger.services.platforms import KeyResolver
from ledger.services.runtime import Runtime
from ledger.storage.db import apply_schema
from tests.support import (
    IDENTITY_KEY,
    PG_SERVER,
    REDIS_URL,
    ROOT,
    TOKEN_KEY,
    WORKER_REDIS_URL,
    Member,
    WorkerProcess,
    close_reset_connections,
    reset_state,
)


# -- tiers -------------------------------------------------------------------------------------------
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks by place and by fixture, before `-m` selects: everything under e2e/ and faults/ starts
    processes (and the fault tests take minutes); so does every test that takes the `worker`, and every
    browser test. The other tests that start one carry `@pytest.mark.process` themselves."""
    for item in items:
        where = item.path.relative_to(ROOT / "tests").parts[0]
        if where in ("e2e", "faults") or "worker" in item.fixturenames or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.process)
        if where == "faults":
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _processes_are_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test not marked `process` is in the fast tier, which promises to start no process: starting
    one fails the test, so the marks cannot fall behind the tests."""
    if request.node.get_closest_marker("process") is not None:
        return
    test = request.node.nodeid

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"{test} starts a process: mark it @pytest.mark.process")

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)


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
    close_reset_connections()
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def session_database_url() -> Iterator[str]:
    """The database of every test that does not take the `worker`: no worker process ever watches it."""
    yield from _session_database()


@pytest.fixture(scope="session")
def worker_database_url() -> Iterator[str]:
    """The database of the session's Celery worker, and of the tests that take it."""
    yield from _session_database()


@pytest.fixture(scope="session")
def base_settings(session_database_url: str) -> Settings:
    return Settings(
        database_url=session_database_url,
        redis_url=REDIS_URL,
        identity_key=IDENTITY_KEY,
        token_key=TOKEN_KEY,
        db_role="ledger_app",  # the suite runs as the application's restricted role, as production should
        # Far above what any test but the rate-limit attack needs (that one builds its own app).
        consumer_rights_per_minute=100_000,
        environment="test",
        outbox_grace_seconds=1,
        pool_max=16,
        # Webhook tests run a receiver on this host: the operator's allowance, short timeouts and backoff.
        webhook_allow_networks="127.0.0.1/32",
        webhook_timeout_seconds=2,
        webhook_backoff_ms=200,
    )


@pytest.fixture(scope="session")
def worker_settings(base_settings: Settings, worker_database_url: str) -> Settings:
    """The session worker's settings: a database and a Redis database (its broker and cache) of its own,
    so that its outbox relay and tasks never touch the state of a test that did not ask for it."""
    return base_settings.with_(database_url=worker_database_url, redis_url=WORKER_REDIS_URL)


@pytest.fixture(scope="session")
def worker_process(worker_settings: Settings) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(worker_settings).start()
    yield proc
    proc.stop()


@pytest.fixture
def worker(worker_process: WorkerProcess) -> Iterator[WorkerProcess]:
    """A real `ledger worker`, shared by the tests that take this fixture (they run on its database).

    When the test ends, the worker has finished the work the test gave it, or it is replaced by a new
    one: the next test starts on an idle worker and an empty database, and never waits for a lock."""
    yield worker_process
    worker_process.settle()


@pytest.fixture
def settings(request: pytest.FixtureRequest, base_settings: Settings) -> Settings:
    """This test's settings: the worker's (its database and Redis) for a test that takes the `worker`,
    else the session database, which no worker watches."""
    if "worker" in request.fixturenames:
        return request.getfixturevalue("worker_settings")  # type: ignore[no-any-return]
    return base_settings


@pytest.fixture
def database_url(settings: Settings) -> str:
    """This test's database (see `settings`)."""
    assert settings.database_url is not None
    return settings.database_url


@pytest.fixture
def clean(settings: Settings) -> None:
    reset_state(settings)


@pytest.fixture
def isolated_settings(request: pytest.FixtureRequest, base_settings: Settings) -> Settings:
    """The session database's settings, emptied, for a test that builds its own app and processes on
    them (a broker of its own, or none) and expects its outbox rows to wait for the worker or sweep it
    starts itself: no worker watches this database."""
    assert not {"app", "worker"} & set(request.fixturenames), "isolated_settings is for a test's own stack"
    reset_state(base_settings)
    return base_settings


# What create_app puts in app.extensions. The two per-runtime entries are rebuilt for every test; a new
# entry fails the suite until this list says whether it holds per-test state.
RUNTIME_EXTENSIONS = {"ledger.runtime", "ledger.keys"}
SHARED_EXTENSIONS = {"ledger.api"}


@pytest.fixture(scope="session")
def app_shells() -> list[tuple[Settings, Any]]:
    """Flask apps already wired, one per distinct settings, reused by every test with those settings.

    Building an app costs about 0.1 s (flask-smorest writes the OpenAPI document as the blueprints
    register, werkzeug compiles the routes), which across the suite's tests came to about a third of
    the fast tier's time. Everything that holds state lives in the Runtime and the key resolver
    (`RUNTIME_EXTENSIONS`), and every test gets new ones: a test sees no other test's pool, caches,
    quota or sessions."""
    return []


@pytest.fixture
def app(settings: Settings, clean: None, app_shells: list[tuple[Settings, Any]]) -> Iterator[Any]:
    application = next((shell for wired, shell in app_shells if wired == settings), None)
    if application is None:
        application = create_app(settings)
        application.config["TESTING"] = True
        extensions = {name for name in application.extensions if name.startswith("ledger.")}
        assert extensions == RUNTIME_EXTENSIONS | SHARED_EXTENSIONS, extensions
        application.extensions["ledger.runtime"].close()
        app_shells.append((settings, application))
    rt = Runtime(settings.require_services())  # as create_app builds it
    application.extensions["ledger.runtime"] = rt
    application.extensions["ledger.keys"] = KeyResolver(rt)
    yield application
    rt.close()


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
