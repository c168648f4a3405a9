"""The process's Redis client, the circuit breaker in front of it, and the one translation of its errors.

Every Redis call of the API and the workers goes through `GuardedRedis.errors`: a Redis error becomes
`CacheUnavailable`, which callers handle by falling back (lookups answer from PostgreSQL, reports leave
their work to the outbox relay's poll). The breaker then skips Redis for a moment, so a dead Redis costs
the hot paths one failed connection per second rather than one per request. The short socket timeouts
keep a hung Redis from stalling a request for longer than that.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import redis

from ledger.errors import CacheUnavailable


@contextmanager
def redis_errors(what: str, on_error: GuardedRedis | None = None) -> Iterator[None]:
    """Turn a Redis error inside the block into CacheUnavailable naming `what` (and trip `on_error`'s
    breaker, if given)."""
    try:
        yield
    except redis.RedisError as exc:
        if on_error is not None:
            on_error.trip()
        raise CacheUnavailable(f"{what} ({type(exc).__name__})") from None


class GuardedRedis:
    def __init__(self, url: str, breaker_seconds: float = 1.0) -> None:
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            health_check_interval=0,
            retry_on_timeout=False,
        )
        self._breaker_seconds = breaker_seconds
        self._down_until = 0.0
        self._lock = threading.Lock()

    def errors(self, what: str) -> AbstractContextManager[None]:
        """`redis_errors` with this client's breaker."""
        return redis_errors(what, self)

    def guard(self) -> None:
        """Refuse at once while the breaker is open (the hot paths call this before trying Redis)."""
        if time.monotonic() < self._down_until:
            raise CacheUnavailable("redis recently failed")

    def trip(self) -> None:
        with self._lock:
            self._down_until = time.monotonic() + self._breaker_seconds

    @property
    def is_tripped(self) -> bool:
        return time.monotonic() < self._down_until

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            self.trip()
            return False
