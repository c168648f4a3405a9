"""Request quotas: one token bucket per platform in Redis, shared by all its keys.

Keys: `ccl:q:<platform>` is the bucket every authenticated request is charged to (a lookup costs one unit
per identifier, an image one unit); `ccl:q:<platform>:rights` is the operator's separate bucket for
subject reports and disputes. The same bucket arithmetic also runs inside the lookup's read
(ledger/storage/decision_cache.py) and the report's settlement (ledger/storage/pending_work.py), so that
each of those hot paths makes one Redis call.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.storage.redis_guard import GuardedRedis

QUOTA_KEY = "ccl:q:"


def refill_lua(key: str) -> str:
    """Lua that reads the bucket at `key` (such as "KEYS[1]") with ARGV[1..3] = rate, burst and cost, and
    refills it to the server's time: it leaves `rate`, `burst`, `cost`, `now` and `tokens` set. The
    lookup's read and the report's settlement use it too, so that all three keep one arithmetic."""
    return f"""local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', {key}, 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
"""


def store_lua(key: str) -> str:
    """Lua that stores `tokens` at `now` in the bucket at `key`, expiring once it would be full again."""
    return f"""redis.call('HSET', {key}, 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', {key}, math.ceil((burst - tokens) / rate * 1000) + 1000)
"""


# A token bucket alone (KEYS[1]). A negative cost returns units charged in advance and not used (an
# upload that carried fewer images than the most it could).
_CHARGE = (
    refill_lua("KEYS[1]")
    + """local need = math.min(cost, burst)
local allowed = 0
if tokens >= need then
  tokens = math.min(burst, tokens - cost)
  allowed = 1
end
"""
    + store_lua("KEYS[1]")
    + """local retry = 0
if allowed == 0 then retry = math.max(1, math.ceil((need - tokens) / rate)) end
return {allowed, math.max(0, math.floor(tokens)), retry}
"""
)


@dataclass(frozen=True)
class Quota:
    allowed: bool
    remaining: int
    retry_after: int
    limit: int


class Quotas:
    def __init__(self, redis: GuardedRedis) -> None:
        self.redis = redis
        self._charge = redis.client.register_script(_CHARGE)

    def charge(self, quota_key: str, rate: float, burst: int, cost: int = 1) -> Quota:
        """Take `cost` units from a token bucket (give them back when negative), in one round trip."""
        self.redis.guard()
        with self.redis.errors("charge"):
            allowed, remaining, retry = self._charge(keys=[QUOTA_KEY + quota_key], args=[rate, burst, cost])
        return Quota(bool(allowed), int(remaining), int(retry), burst)
