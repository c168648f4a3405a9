"""The decision cache: per identity token, the decision the lookup path answers with, in Redis.

Under `ccl:t:<token>` Redis holds what the lookup path needs to decide without PostgreSQL: the decision
of the token's subject (a `SubjectView`), or, for a device token, how many subjects share that device (a
`DeviceSignal`). Tokens are HMAC pseudonyms, never raw identifiers. Scoring writes (`put_decisions`)
and lookups read (`lookup`) through `encode` and `decode` here, so the single-letter keys below are
written down once.

The stored text is the 20-digit ledger sequence the value was computed from, then compact JSON with
sorted keys: `{"at","last","n","o","p","pv","s","score","tier","why"}` for a subject, `{"at","d","o","pv"}`
for a device. `o` is when the value was computed, in microseconds since the epoch. The compare-and-set
script (`_SET_IF_NEWER` below) reads the sequence prefix and `o` itself, in Lua, to refuse an older
value; that is why the keys stay short and the sequence stays a fixed-width prefix.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from ledger.domain.decisions import SubjectView
from ledger.errors import CacheUnavailable
from ledger.storage.pending_work import PENDING_KEY
from ledger.storage.quota import QUOTA_KEY, Quota, refill_lua, store_lua
from ledger.storage.rebuild_markers import WARM_KEY
from ledger.storage.redis_guard import GuardedRedis

TOKEN_KEY = "ccl:t:"
SEQ_WIDTH = 20
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class DeviceSignal:
    """A device token's weak signal: how many subjects reported with this device. It never merges them
    (ledger/domain/decisions.py); `policy_version` and `computed_at` are None when read from PostgreSQL."""

    subjects: int
    policy_version: str | None = None
    computed_at: str | None = None


# What one token's cache entry holds.
CachedDecision = SubjectView | DeviceSignal


def subject_view(
    subject_id: int,
    score: int,
    tier: str,
    reasons: tuple[str, ...] | list[str],
    incidents: int,
    platforms: int,
    last_incident_at: datetime | None,
    policy_version: str,
    computed_at: datetime,
) -> SubjectView:
    """A subject's cached decision from what scoring computed or `risk_scores` stored."""
    return SubjectView(
        subject_id=int(subject_id),
        score=int(score),
        tier=tier,
        reasons=tuple(reasons),
        incidents=int(incidents),
        platforms=int(platforms),
        last_incident_at=last_incident_at.isoformat() if last_incident_at else None,
        policy_version=policy_version,
        computed_at=computed_at.isoformat(),
    )


def order(value: CachedDecision) -> int:
    """When a value was computed, in microseconds: orders two values computed from one sequence."""
    at = value.computed_at
    if not at:
        return 0
    return (datetime.fromisoformat(at) - _EPOCH) // timedelta(microseconds=1)


def _fields(value: CachedDecision) -> dict[str, Any]:
    if isinstance(value, DeviceSignal):
        fields: dict[str, Any] = {"d": value.subjects}
        if value.policy_version is not None:
            fields["pv"] = value.policy_version
        if value.computed_at is not None:
            fields["at"] = value.computed_at
        return fields
    return {
        "s": value.subject_id,
        "score": value.score,
        "tier": value.tier,
        "why": list(value.reasons),
        "n": value.incidents,
        "p": value.platforms,
        "last": value.last_incident_at,
        "pv": value.policy_version,
        "at": value.computed_at,
    }


def encode(seq: int, value: CachedDecision) -> str:
    """The stored text: the sequence, zero-padded to SEQ_WIDTH digits, then the value's JSON with `o`."""
    if not 0 <= seq < 10**SEQ_WIDTH:
        raise ValueError(f"sequence {seq} does not fit {SEQ_WIDTH} digits")
    body = json.dumps({**_fields(value), "o": order(value)}, separators=(",", ":"), sort_keys=True)
    return f"{seq:0{SEQ_WIDTH}d}{body}"


def _value(fields: Mapping[str, Any]) -> CachedDecision:
    if "s" in fields:
        return SubjectView(
            subject_id=int(fields["s"]),
            score=int(fields["score"]),
            tier=fields["tier"],
            reasons=tuple(fields["why"]),
            incidents=int(fields["n"]),
            platforms=int(fields["p"]),
            last_incident_at=fields["last"],
            policy_version=fields["pv"],
            computed_at=fields["at"],
        )
    return DeviceSignal(int(fields["d"]), fields.get("pv"), fields.get("at"))


def decode(raw: bytes | str) -> tuple[int, CachedDecision]:
    """The sequence and the value of a stored text (`encode`'s inverse)."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    return int(text[:SEQ_WIDTH]), _value(json.loads(text[SEQ_WIDTH:]))


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

# The whole hot-path read in one script call: the key's token bucket (KEYS[1]), then the decisions, the
# pending flags and the warm marker (KEYS[2..]). One command rather than a pipeline of two: redis-py's
# pipeline machinery cost about 30 us of the API's CPU per lookup, a third of this call.
# `unpack` is bounded by Lua's stack (about 8,000 values): a full batch, 100 lookups of 10 identifiers,
# unpacks 2,001 keys.
_LOOKUP = (
    refill_lua("KEYS[1]")
    + """-- A request costing more than the burst (a large batch) goes through once the bucket is full and leaves
-- it in debt; otherwise it could never pass, and Retry-After would promise what never comes.
local need = math.min(cost, burst)
local allowed = 0
if tokens >= need then
  tokens = tokens - cost
  allowed = 1
end
"""
    + store_lua("KEYS[1]")
    + """local retry = 0
if allowed == 0 then retry = math.max(1, math.ceil((need - tokens) / rate)) end
return {allowed, math.max(0, math.floor(tokens)), retry, redis.call('MGET', unpack(KEYS, 2))}
"""
)


@dataclass(frozen=True)
class CachedLookup:
    entries: dict[str, CachedDecision]  # token -> its decision (only tokens that have one)
    pending: set[str]
    quota: Quota


class DecisionCache:
    def __init__(self, redis: GuardedRedis) -> None:
        self.redis = redis
        self._set_if_newer = redis.client.register_script(_SET_IF_NEWER)
        self._lookup_sha = hashlib.sha1(_LOOKUP.encode()).hexdigest()  # noqa: S324 (Redis names scripts by SHA-1)
        self._seen_warm = False

    @property
    def client(self) -> redis.Redis:
        return self.redis.client

    def lookup(
        self, tokens: Sequence[str], quota_key: str, rate: int, burst: int, cost: int = 1
    ) -> CachedLookup:
        """One round trip: the quota bucket, the decisions and the pending flags."""
        self.redis.guard()
        keys = [QUOTA_KEY + quota_key, *[TOKEN_KEY + t for t in tokens], *[PENDING_KEY + t for t in tokens]]
        keys.append(WARM_KEY)
        with self.redis.errors("lookup"):
            try:
                # EVALSHA by hand: a registered Script object checks SCRIPT EXISTS first.
                allowed, remaining, retry, values = self.client.execute_command(
                    "EVALSHA", self._lookup_sha, len(keys), *keys, rate, burst, cost
                )
            except redis.exceptions.NoScriptError:
                self.client.script_load(_LOOKUP)  # a restarted Redis has forgotten it
                allowed, remaining, retry, values = self.client.execute_command(
                    "EVALSHA", self._lookup_sha, len(keys), *keys, rate, burst, cost
                )
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

    def put_decisions(self, seq: int, by_token: Mapping[str, CachedDecision]) -> int:
        """Write each token's decision computed from ledger position `seq`, unless its entry is newer, and
        clear the tokens' pending flags."""
        if not by_token:
            return 0
        keys = [TOKEN_KEY + t for t in by_token]
        orders = [order(v) for v in by_token.values()]
        values = [encode(seq, v) for v in by_token.values()]
        with self.redis.errors("write"):
            written = int(self._set_if_newer(keys=keys, args=[seq, *values, *orders]))
            self.client.delete(*[PENDING_KEY + t for t in by_token])
        return written

    def forget(self, tokens: Sequence[str]) -> None:
        """Drop the tokens' decisions and pending flags (erasure)."""
        if tokens:
            with self.redis.errors("forget"):
                self.client.delete(*[TOKEN_KEY + t for t in tokens], *[PENDING_KEY + t for t in tokens])

    def clear_decisions(self) -> int:
        """Drop every decision and the warm marker (`ledger cache clear`); returns how many decisions."""
        self.client.delete(WARM_KEY)
        removed = 0
        for key in self.client.scan_iter(match=TOKEN_KEY + "*", count=1000):
            removed += int(self.client.delete(key))
        return removed
