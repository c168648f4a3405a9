"""Redis: the lookup hot path's cache of decisions per identity token, pending flags and quotas.

Keys (tokens are HMAC pseudonyms, never raw identifiers):
  ccl:t:<token>   decision of the token's subject (or a device signal), prefixed by the 20-digit ledger
                  sequence it was computed from (the format: ledger/storage/decision_cache.py); a Lua script
                  refuses to replace it with an older one (at an equal sequence, with one computed earlier:
                  its "o" field orders them)
  ccl:p:<token>   set while a recompute for that token is pending (report accepted, not yet scored)
  ccl:q:<platform> token bucket of one platform, shared by all its keys, charged by every authenticated
                  request (a lookup costs one unit per identifier, an image one unit)
  ccl:q:<platform>:rights  the operator's separate bucket for subject reports and disputes
  ccl:af:<digest> failed authentications from one (hashed) client address, for brute-force protection
  ccl:relay       the outbox relay's wake-up: a list of at most one element, pushed after every commit that
                  queued work, popped (BLPOP) by the relay in `ledger worker` (workers/relay.py)
  ccl:warm        set when a full rebuild from PostgreSQL completed on this Redis; a Redis restarted
                  without persistence comes back without it, and a miss then no longer means "no decision"
A short circuit breaker skips Redis for a moment after a failure, so a dead Redis costs the lookup path
one failed connection per second rather than one per request.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from ledger.storage.decision_cache import CachedDecision, decode, encode, order

TOKEN_KEY = "ccl:t:"
PENDING_KEY = "ccl:p:"
QUOTA_KEY = "ccl:q:"
AUTH_FAIL_KEY = "ccl:af:"
WARM_KEY = "ccl:warm"
REBUILD_KEY = "ccl:rebuild:"
REBUILD_LOCK_KEY = "ccl:rebuild-lock"
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
_SETTLE_REPORT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[2], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate) - cost
redis.call('HSET', KEYS[2], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[2], math.ceil((burst - tokens) / rate * 1000) + 1000)
for i = 3, #KEYS do
  redis.call('SET', KEYS[i], '1', 'EX', ARGV[4])
end
if ARGV[5] == '1' then
  redis.call('LPUSH', KEYS[1], '1')
  redis.call('LTRIM', KEYS[1], 0, 0)
end
return tostring(tokens)
"""

_SET_IF_NEWER = """
local seq = tonumber(ARGV[1])
local n = #KEYS
local written = 0
for i, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  local newer = true
  if current then
    local current_seq = tonumber(string.sub(current, 1, 20))
    if current_seq > seq then
      newer = false
    elseif current_seq == seq then
      -- Linking and decay recompute without advancing the sequence: the later computation wins.
      local ok, decoded = pcall(cjson.decode, string.sub(current, 21))
      local current_order = (ok and type(decoded) == 'table' and tonumber(decoded['o'])) or 0
      newer = current_order <= tonumber(ARGV[n + 1 + i])
    end
  end
  if newer then
    redis.call('SET', key, ARGV[i + 1])
    written = written + 1
  end
end
return written
"""

# The rebuild's marker is wiped by a Redis restart, so a rebuild interrupted by one never claims warm.
_MARK_WARM = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('SET', KEYS[2], '1')
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

# The whole hot-path read in one script call: the key's token bucket (KEYS[1]), then the decisions, the
# pending flags and the warm marker (KEYS[2..]). One command rather than a pipeline of two: redis-py's
# pipeline machinery cost about 30 us of the API's CPU per lookup, a third of this call.
# `unpack` is bounded by Lua's stack (about 8,000 values): a full batch, 100 lookups of 10 identifiers,
# unpacks 2,001 keys.
_LOOKUP = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
-- A request costing more than the burst (a large batch) goes through once the bucket is full and leaves
-- it in debt; otherwise it could never pass, and Retry-After would promise what never comes.
local need = math.min(cost, burst)
local allowed = 0
if tokens >= need then
  tokens = tokens - cost
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
local retry = 0
if allowed == 0 then retry = math.max(1, math.ceil((need - tokens) / rate)) end
return {allowed, math.max(0, math.floor(tokens)), retry, redis.call('MGET', unpack(KEYS, 2))}
"""


# A token bucket alone (KEYS[1]): the same arithmetic as _LOOKUP's. A negative cost returns units charged
# in advance and not used (an upload that carried fewer images than the most it could).
_CHARGE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local need = math.min(cost, burst)
local allowed = 0
if tokens >= need then
  tokens = math.min(burst, tokens - cost)
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
local retry = 0
if allowed == 0 then retry = math.max(1, math.ceil((need - tokens) / rate)) end
return {allowed, math.max(0, math.floor(tokens)), retry}
"""


class CacheUnavailable(Exception):
    """Redis could not be reached; the caller falls back to PostgreSQL."""


@dataclass(frozen=True)
class Quota:
    allowed: bool
    remaining: int
    retry_after: int
    limit: int


@dataclass(frozen=True)
class CachedLookup:
    entries: dict[str, CachedDecision]  # token -> its decision (only tokens that have one)
    pending: set[str]
    quota: Quota


class RelayWakeups:
    """The outbox relay's side of the wake-up list. It has a connection of its own: a blocking pop outlasts
    the cache client's 0.5 s socket timeout, and must never hold a connection the lookup path needs."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(
            url, socket_timeout=10.0, socket_connect_timeout=0.5, health_check_interval=0
        )

    def wait(self, timeout: float) -> bool:
        """Block until a commit wakes the relay (True) or `timeout` seconds pass (False)."""
        try:
            return self.client.blpop([RELAY_WAKE_KEY], timeout=timeout) is not None
        except redis.RedisError:
            raise CacheUnavailable("relay wake-up") from None

    def close(self) -> None:
        self.client.close()


class Cache:
    def __init__(self, url: str, breaker_seconds: float = 1.0) -> None:
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            health_check_interval=0,
            retry_on_timeout=False,
        )
        self._set_if_newer = self.client.register_script(_SET_IF_NEWER)
        self._mark_warm = self.client.register_script(_MARK_WARM)
        self._mark_pending = self.client.register_script(_MARK_PENDING)
        self._charge = self.client.register_script(_CHARGE)
        self._settle_report = self.client.register_script(_SETTLE_REPORT)
        self._seen_warm = False
        self._lookup_sha = hashlib.sha1(_LOOKUP.encode()).hexdigest()  # noqa: S324 (Redis names scripts by SHA-1)
        self._breaker_seconds = breaker_seconds
        self._down_until = 0.0
        self._lock = threading.Lock()

    def _load_scripts(self) -> None:
        try:
            self.client.script_load(_LOOKUP)
        except redis.RedisError as exc:
            self._trip()
            raise CacheUnavailable(str(type(exc).__name__)) from None

    # -- circuit breaker -------------------------------------------------------------------------
    def _guard(self) -> None:
        if time.monotonic() < self._down_until:
            raise CacheUnavailable("redis recently failed")

    def _trip(self) -> None:
        with self._lock:
            self._down_until = time.monotonic() + self._breaker_seconds

    @property
    def is_tripped(self) -> bool:
        return time.monotonic() < self._down_until

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            self._trip()
            return False

    # -- hot path --------------------------------------------------------------------------------
    def lookup(
        self, tokens: Sequence[str], quota_key: str, rate: int, burst: int, cost: int = 1
    ) -> CachedLookup:
        """One round trip: the quota bucket, the decisions and the pending flags."""
        self._guard()
        keys = [QUOTA_KEY + quota_key, *[TOKEN_KEY + t for t in tokens], *[PENDING_KEY + t for t in tokens]]
        keys.append(WARM_KEY)
        for attempt in range(2):
            try:
                # EVALSHA by hand: a registered Script object checks SCRIPT EXISTS first.
                allowed, remaining, retry, values = self.client.execute_command(
                    "EVALSHA", self._lookup_sha, len(keys), *keys, rate, burst, cost
                )
                break
            except redis.exceptions.NoScriptError:
                if attempt:
                    raise
                self._load_scripts()  # a restarted Redis has forgotten them
            except redis.RedisError as exc:
                self._trip()
                raise CacheUnavailable(str(type(exc).__name__)) from None
        if values[-1] is not None:
            self._seen_warm = True
        elif self._seen_warm:
            # Redis lost its data since this process saw it warm (a restart without persistence): a miss
            # no longer means "no decision", so answer from PostgreSQL until a rebuild completes.
            raise CacheUnavailable("cold")
        quota = Quota(bool(allowed), int(remaining), int(retry), burst)
        n = len(tokens)
        entries = {t: decode(v)[1] for t, v in zip(tokens, values[:n], strict=True) if v}
        pending = {t for t, v in zip(tokens, values[n : 2 * n], strict=True) if v}
        return CachedLookup(entries, pending, quota)

    def charge(self, quota_key: str, rate: float, burst: int, cost: int = 1) -> Quota:
        """Take `cost` units from a token bucket (give them back when negative), in one round trip."""
        self._guard()
        try:
            allowed, remaining, retry = self._charge(keys=[QUOTA_KEY + quota_key], args=[rate, burst, cost])
        except redis.RedisError as exc:
            self._trip()
            raise CacheUnavailable(str(type(exc).__name__)) from None
        return Quota(bool(allowed), int(remaining), int(retry), burst)

    def count_auth_failure(self, client_digest: str, window_seconds: int) -> int:
        """Count one failed authentication for a (hashed) client address in a fixed window."""
        self._guard()
        key = AUTH_FAIL_KEY + client_digest
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, window_seconds, nx=True)
            count, _ = pipe.execute()
        except redis.RedisError:
            self._trip()
            raise CacheUnavailable("auth failures") from None
        return int(count)

    # -- writers (workers, CLI) ------------------------------------------------------------------
    def put_decisions(self, seq: int, by_token: Mapping[str, CachedDecision]) -> int:
        """Write each token's decision computed from ledger position `seq`, unless its entry is newer."""
        if not by_token:
            return 0
        keys = [TOKEN_KEY + t for t in by_token]
        orders = [order(v) for v in by_token.values()]
        values = [encode(seq, v) for v in by_token.values()]
        try:
            written = int(self._set_if_newer(keys=keys, args=[seq, *values, *orders]))
            self.client.delete(*[PENDING_KEY + t for t in by_token])
        except redis.RedisError:
            self._trip()
            raise CacheUnavailable("write") from None
        return written

    def mark_pending_and_wake(self, tokens: Sequence[str]) -> None:
        """Flag the tokens as pending and wake the outbox relay, in one round trip (called after commit).

        One script call, not one SET per token: a 1,000-incident batch flags about 3,000 tokens and packing
        that many pipeline commands cost more CPU than the rest of the batch's Redis work."""
        try:
            self._mark_pending(
                keys=[RELAY_WAKE_KEY, *[PENDING_KEY + t for t in tokens]], args=[PENDING_TTL_SECONDS]
            )
        except redis.RedisError:
            self._trip()
            raise CacheUnavailable("pending") from None

    def settle_report(
        self, quota_key: str, rate: float, burst: int, cost: int, tokens: Sequence[str], wake: bool
    ) -> float:
        """After a report: charge its bucket, flag its new tokens as pending and wake the outbox relay if it
        committed outbox work, in one round trip. Returns the units left in the bucket (negative in debt)."""
        self._guard()
        try:
            left = self._settle_report(
                keys=[RELAY_WAKE_KEY, QUOTA_KEY + quota_key, *[PENDING_KEY + t for t in tokens]],
                args=[rate, burst, cost, PENDING_TTL_SECONDS, 1 if wake else 0],
            )
        except redis.RedisError as exc:
            self._trip()
            raise CacheUnavailable(str(type(exc).__name__)) from None
        return float(left)

    def forget(self, tokens: Sequence[str]) -> None:
        if tokens:
            try:
                self.client.delete(*[TOKEN_KEY + t for t in tokens], *[PENDING_KEY + t for t in tokens])
            except redis.RedisError:
                self._trip()
                raise CacheUnavailable("forget") from None

    # -- refilling after a restart ----------------------------------------------------------------
    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except redis.RedisError:
            self._trip()
            raise CacheUnavailable(what) from None

    def is_warm(self) -> bool:
        return bool(self._call("warm", self.client.exists, WARM_KEY))

    def begin_rebuild(self) -> str:
        marker = REBUILD_KEY + uuid.uuid4().hex
        self._call("rebuild", self.client.set, marker, 1, ex=3600)
        return marker

    def finish_rebuild(self, marker: str) -> bool:
        """Mark the cache warm, unless Redis restarted (and so lost the marker) during the rebuild."""
        return bool(self._call("rebuild", self._mark_warm, keys=[marker, WARM_KEY]))

    def lock_rebuild(self, seconds: int) -> bool:
        return bool(self._call("rebuild lock", self.client.set, REBUILD_LOCK_KEY, 1, nx=True, ex=seconds))

    def unlock_rebuild(self) -> None:
        self._call("rebuild lock", self.client.delete, REBUILD_LOCK_KEY)

    def clear_decisions(self) -> int:
        self.client.delete(WARM_KEY)
        removed = 0
        for key in self.client.scan_iter(match=TOKEN_KEY + "*", count=1000):
            removed += int(self.client.delete(key))
        return removed
