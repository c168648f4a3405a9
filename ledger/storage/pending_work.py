"""Signals that work is pending: a flag per identity token awaiting a recompute, and the outbox relay's
wake-up.

Keys: `ccl:p:<token>` is set while a recompute for that token is pending (a report accepted, not yet
scored; lookups then say `stale`); the recompute clears it (ledger/storage/decision_cache.py) and the
TTL only bounds leftovers. `ccl:relay` is a list of at most one element, pushed after every commit that
queued outbox work and popped (BLPOP) by the relay in `ledger worker` (workers/relay.py).

Both are set after commit, in one round trip with whatever else that path needs: nothing is lost if the
call fails, because the outbox row is the guarantee and the relay also polls PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from ledger.storage.quota import QUOTA_KEY, refill_lua, store_lua
from ledger.storage.redis_guard import GuardedRedis, redis_errors

PENDING_KEY = "ccl:p:"
RELAY_WAKE_KEY = "ccl:relay"
PENDING_TTL_SECONDS = 24 * 3600  # cleared by the recompute; the TTL only bounds leftovers

# KEYS[1] is the relay's wake-up list, the rest are pending flags. However many commits push before the
# relay looks, one element wakes it and it then claims every new outbox row: the list never grows.
_MARK_PENDING = """
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], '1', 'EX', ARGV[1])
end
redis.call('LPUSH', KEYS[1], '1')
redis.call('LTRIM', KEYS[1], 0, 0)
return #KEYS - 1
"""

# A report's one Redis call, made after its work is done: charge the platform's bucket (KEYS[2]) by
# ARGV[3], which may leave it in debt since the report is already committed, flag the new incidents' tokens
# as pending (KEYS[3..]) and, if ARGV[5] is 1, wake the outbox relay (KEYS[1]). Returns the tokens left,
# as a string (Lua numbers lose their fraction on the way back), so that the API process can refuse the
# platform's next requests itself while the bucket is empty (ledger/services/platforms.py, QuotaGate).
_SETTLE_REPORT = (
    refill_lua("KEYS[2]")
    + """tokens = tokens - cost
"""
    + store_lua("KEYS[2]")
    + """for i = 3, #KEYS do
  redis.call('SET', KEYS[i], '1', 'EX', ARGV[4])
end
if ARGV[5] == '1' then
  redis.call('LPUSH', KEYS[1], '1')
  redis.call('LTRIM', KEYS[1], 0, 0)
end
return tostring(tokens)
"""
)


class PendingWork:
    def __init__(self, redis: GuardedRedis) -> None:
        self.redis = redis
        self._mark_pending = redis.client.register_script(_MARK_PENDING)
        self._settle_report = redis.client.register_script(_SETTLE_REPORT)

    def mark_pending_and_wake(self, tokens: Sequence[str]) -> None:
        """Flag the tokens as pending and wake the outbox relay, in one round trip (called after commit).

        One script call, not one SET per token: a 1,000-incident batch flags about 3,000 tokens and packing
        that many pipeline commands cost more CPU than the rest of the batch's Redis work."""
        with self.redis.errors("pending"):
            self._mark_pending(
                keys=[RELAY_WAKE_KEY, *[PENDING_KEY + t for t in tokens]], args=[PENDING_TTL_SECONDS]
            )

    def settle_report(
        self, quota_key: str, rate: float, burst: int, cost: int, tokens: Sequence[str], wake: bool
    ) -> float:
        """After a report: charge its bucket, flag its new tokens as pending and wake the outbox relay if it
        committed outbox work, in one round trip. Returns the units left in the bucket (negative in debt)."""
        self.redis.guard()
        with self.redis.errors("settle report"):
            left = self._settle_report(
                keys=[RELAY_WAKE_KEY, QUOTA_KEY + quota_key, *[PENDING_KEY + t for t in tokens]],
                args=[rate, burst, cost, PENDING_TTL_SECONDS, 1 if wake else 0],
            )
        return float(left)


class RelayWakeups:
    """The outbox relay's side of the wake-up list. It has a connection of its own: a blocking pop outlasts
    the shared client's 0.5 s socket timeout, and must never hold a connection the lookup path needs."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(
            url, socket_timeout=10.0, socket_connect_timeout=0.5, health_check_interval=0
        )

    def wait(self, timeout: float) -> bool:
        """Block until a commit wakes the relay (True) or `timeout` seconds pass (False)."""
        with redis_errors("relay wake-up"):
            return self.client.blpop([RELAY_WAKE_KEY], timeout=timeout) is not None

    def close(self) -> None:
        self.client.close()
