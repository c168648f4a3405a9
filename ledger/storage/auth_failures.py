"""Failed authentications per client address, for brute-force protection (ledger/services/platforms.py).

`ccl:af:<digest>` counts the failures of one client address, hashed, in a fixed window; the address
itself is never stored.
"""

from __future__ import annotations

from ledger.storage.redis_guard import GuardedRedis

AUTH_FAIL_KEY = "ccl:af:"


class AuthFailures:
    def __init__(self, redis: GuardedRedis) -> None:
        self.redis = redis

    def count(self, client_digest: str, window_seconds: int) -> int:
        """Count one failed authentication for a (hashed) client address; returns the window's count."""
        self.redis.guard()
        key = AUTH_FAIL_KEY + client_digest
        with self.redis.errors("auth failures"):
            pipe = self.redis.client.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, window_seconds, nx=True)
            count, _ = pipe.execute()
        return int(count)
