"""Fixtures for the fault tests: private Redis and PostgreSQL servers that a test may kill, a fresh
database per test, and the ledger deployed on them (tests/faults/support.py has the helpers).

Why private servers: the shared PostgreSQL and Redis serve every other test and agent on this machine,
so they are never stopped. Each test that cuts a service starts its own `redis-server` (ports
16300-16399) or PostgreSQL cluster (initdb + pg_ctl, ports 15500-15599). Every process runs in its own
session so that its whole tree can be killed with killpg, and every fixture removes its processes and
directories in a `finally`, whatever the test did.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.support import Stack, create_database, drop_database, fault_settings
from tests.private_services import PostgresServer, RedisServer
from tests.support import PG_SERVER


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ccl-faults-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def private_redis(workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(workdir)
    try:
        yield server.start()
    finally:
        server.kill()


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.remove()


@pytest.fixture
def fault_db() -> Iterator[str]:
    """A fresh database on the shared PostgreSQL for one test, dropped afterwards."""
    url = create_database(PG_SERVER)
    try:
        yield url
    finally:
        drop_database(PG_SERVER, url)


@pytest.fixture
def stack(fault_db: str, private_redis: RedisServer, workdir: Path) -> Iterator[Stack]:
    """The ledger on a fresh database of the shared PostgreSQL and on a private Redis."""
    deployed = Stack(fault_settings(fault_db, private_redis.url), workdir)
    try:
        yield deployed
    finally:
        deployed.close()
