"""The PostgreSQL connection pool and the one transaction helper every storage function runs inside.

Driver errors that mean "the database is not there" become `Unavailable`, so the API answers 503 with
Retry-After and the pool heals by itself once PostgreSQL is back; views never see psycopg exceptions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import psycopg
import psycopg.errors
import psycopg_pool
from psycopg.rows import dict_row

from ledger.errors import Contention, Unavailable

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schema.sql"

Connection = psycopg.Connection[dict[str, Any]]


class Database:
    """A lazily opened pool, so forked gunicorn and Celery workers each open their own connections."""

    def __init__(self, url: str, min_size: int = 1, max_size: int = 8, role: str | None = None) -> None:
        self.url = url
        self._min, self._max = min_size, max_size
        # Every pooled connection acts as this role (schema.sql: no UPDATE or DELETE on the history). JIT
        # is off: these are short statements, and a misestimated plan once cost 0.2 s of JIT compilation
        # for a query that runs in 0.1 ms (an inclusion proof at 10,000,000 leaves, docs/performance.md).
        self._options = "-c statement_timeout=30000 -c jit=off" + (f" -c role={role}" if role else "")
        self._pool: psycopg_pool.ConnectionPool | None = None

    @property
    def pool(self) -> psycopg_pool.ConnectionPool:
        if self._pool is None:
            self._pool = psycopg_pool.ConnectionPool(
                self.url,
                min_size=self._min,
                max_size=self._max,
                kwargs={
                    "row_factory": dict_row,
                    "connect_timeout": 3,
                    "options": self._options,
                },
                timeout=2.0,  # a request waits at most this long for a connection, then 503
                # The background refill gives up at once when PostgreSQL is down; requests then open
                # connections on demand, so the service recovers as soon as it is back, without a
                # restart (tests/faults/test_postgres_restart.py, tests/integration/test_lookup_faults.py).
                reconnect_timeout=0,
                open=False,
            )
            self._pool.open(wait=False)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    @contextmanager
    def transaction(self, isolation: str | None = None) -> Iterator[Connection]:
        """One transaction: commit on success, roll back on any error; driver outages become Unavailable."""
        try:
            with self.pool.connection() as conn:
                if isolation:
                    conn.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
                yield cast(Connection, conn)
        except (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected) as exc:
            raise Contention() from exc
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise Unavailable("the database is unavailable; retry shortly") from exc

    @contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """A pooled connection in autocommit mode: each statement is its own transaction, atomic and durable
        when it returns, in one round trip instead of three (BEGIN, statement, COMMIT). For hot-path writes
        that are a single statement, such as a lookup's audit record."""
        try:
            with self.pool.connection() as conn:
                conn.autocommit = True
                try:
                    yield cast(Connection, conn)
                finally:
                    conn.autocommit = False
        except (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected) as exc:
            raise Contention() from exc
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise Unavailable("the database is unavailable; retry shortly") from exc

    def ping(self) -> bool:
        try:
            with self.transaction() as conn:
                conn.execute("SELECT 1")
            return True
        except Unavailable:
            return False


@contextmanager
def session(url: str, connect_timeout: int | None = None) -> Iterator[Connection]:
    """A connection of its own, outside the pool, in autocommit mode, for a holder of a session-level
    advisory lock (the sequencer): the lock lives exactly as long as this connection. Any driver error
    inside the block, the connection lost with it, becomes Unavailable."""
    options: dict[str, Any] = {"connect_timeout": connect_timeout} if connect_timeout is not None else {}
    try:
        with psycopg.connect(url, autocommit=True, row_factory=dict_row, **options) as conn:
            yield conn
    except psycopg.Error as exc:
        raise Unavailable(f"the database session was lost ({type(exc).__name__})") from exc


def apply_schema(url: str, path: Path = SCHEMA_PATH) -> int:
    """Apply schema.sql; every statement in it is idempotent. An advisory lock keeps two inits apart.
    A database of the release before the transparency log is upgraded in place (ledger/storage/upgrade.py);
    returns how many of its events were queued as the log's first leaves (0 when there was nothing to do)."""
    from ledger.storage import upgrade

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("SELECT pg_advisory_lock(7311001)")
        try:
            upgrade.before_schema(conn)
            conn.execute(path.read_text())
            return upgrade.after_schema(conn)
        finally:
            conn.execute("SELECT pg_advisory_unlock(7311001)")
