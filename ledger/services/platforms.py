"""Member platforms, the operator, API keys and authentication.

Two kinds of platform hold keys. Members report and look up (`report`, `lookup`). The consortium
operator acts for consumers (`dispute`, `admin`): a subject report names every reporter and every
platform that looked a consumer up, so these scopes are never issued to a member. The database refuses
such a key as well (`api_keys_scopes_fit_platform` in schema.sql).

A key looks like `ccl_<key id>_<secret>`. Only SHA-256 of the whole key is stored, found by its visible
key id and compared in constant time. Resolved keys are cached per process for at most
`auth_cache_seconds` (1 s), which bounds how long a revoked key keeps working in any API worker.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from ledger import metrics
from ledger.errors import (
    CacheUnavailable,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    QuotaExceeded,
    Unauthorized,
)
from ledger.services.runtime import Runtime
from ledger.storage import platforms as store
from ledger.storage.quota import Quota

SCOPES = ("report", "lookup", "dispute", "admin")
MEMBER_SCOPES = frozenset({"report", "lookup"})
OPERATOR_SCOPES = frozenset({"dispute", "admin"})
RIGHTS_BUCKET = ":rights"
# More than AUTH_FAILURES failed authentications from one client address within the window, and that
# address's further *failures* are answered 429. A key that verifies is never refused by this: behind a
# load balancer every member may share one address, and a stranger's bad keys must not lock them out.
AUTH_FAILURES = 20
AUTH_WINDOW_SECONDS = 60
# Across all addresses, per process: key ids not in the cache are fetched from PostgreSQL by at most
# this many threads at once, so unauthenticated traffic can hold at most this share of the pool.
KEY_FETCH_CONCURRENCY = 2
_KEY_RE = re.compile(r"\Accl_([0-9a-f]{12})_([A-Za-z0-9_-]{32,64})\Z")
_SLUG_RE = re.compile(r"\A[a-z0-9][a-z0-9_-]{1,62}\Z")


@dataclass(frozen=True)
class Principal:
    platform_id: int
    slug: str
    key_id: str
    scopes: frozenset[str]
    rate_per_second: int
    burst: int
    operator: bool = False

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"this API key lacks the '{scope}' scope")
        # A key issued before the operator was modelled may still carry an operator scope: never honoured.
        if (scope in OPERATOR_SCOPES) != self.operator:
            raise Forbidden(f"the '{scope}' scope is not available to this platform")


@dataclass(frozen=True)
class IssuedKey:
    platform: str
    key_id: str
    key: str
    scopes: tuple[str, ...]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_scopes(raw: str | list[str]) -> list[str]:
    scopes = [s.strip() for s in (raw.split(",") if isinstance(raw, str) else raw) if s.strip()]
    unknown = [s for s in scopes if s not in SCOPES]
    if not scopes or unknown:
        raise InvalidInput(
            f"scopes must be a non-empty subset of {', '.join(SCOPES)}", {"scopes": ["unknown scope"]}
        )
    return sorted(set(scopes), key=SCOPES.index)


def _check_kind(scopes: list[str], operator: bool) -> None:
    wrong = sorted(set(scopes) - (OPERATOR_SCOPES if operator else MEMBER_SCOPES), key=SCOPES.index)
    if wrong:
        who = "the operator" if operator else "a member platform"
        raise InvalidInput(
            f"{', '.join(wrong)} cannot be issued to {who}",
            {"scopes": [f"{scope} is not for {who}" for scope in wrong]},
        )


def _issue(conn: Any, platform_id: int, slug: str, scopes: list[str]) -> IssuedKey:
    key_id = secrets.token_hex(6)
    key = f"ccl_{key_id}_{secrets.token_urlsafe(32)}"
    store.insert_key(conn, key_id, platform_id, _digest(key), scopes)
    return IssuedKey(slug, key_id, key, tuple(scopes))


def create_platform(
    rt: Runtime, slug: str, name: str, scopes: str | list[str], operator: bool = False
) -> IssuedKey:
    """Admit a member platform, or (`operator`) create the operator's own account for consumer rights."""
    if not _SLUG_RE.match(slug):
        raise InvalidInput("slug must be 2-63 lowercase letters, digits, '-' or '_'", {"slug": ["invalid"]})
    if not name.strip() or len(name) > 200:
        raise InvalidInput("name must be 1-200 characters", {"name": ["invalid length"]})
    wanted = parse_scopes(scopes)
    _check_kind(wanted, operator)
    with rt.db.transaction() as conn:
        platform_id = store.create_platform(conn, slug, name.strip(), operator)
        if platform_id < 0:
            raise Conflict(f"platform '{slug}' already exists")
        return _issue(conn, platform_id, slug, wanted)


def rotate_key(
    rt: Runtime, slug: str, scopes: str | list[str] | None = None, revoke_old: bool = False
) -> IssuedKey:
    """Issue a new key. Old keys stay valid unless `revoke_old`, so partners can roll over without downtime."""
    with rt.db.transaction() as conn:
        platform = store.platform_by_slug(conn, slug)
        if platform is None:
            raise NotFound(f"no platform '{slug}'")
        operator = bool(platform["operator"])
        wanted = (
            parse_scopes(scopes)
            if scopes
            else store.active_scopes(conn, platform["id"])
            or (["dispute"] if operator else ["report", "lookup"])
        )
        _check_kind(wanted, operator)
        if revoke_old:
            store.revoke_platform_keys(conn, platform["id"])
        return _issue(conn, platform["id"], slug, wanted)


def revoke_key(rt: Runtime, key_id: str) -> None:
    with rt.db.transaction() as conn:
        if not store.revoke_key(conn, key_id):
            raise NotFound(f"no active key '{key_id}'")


def list_platforms(rt: Runtime) -> list[dict[str, Any]]:
    with rt.db.transaction() as conn:
        return store.list_platforms(conn)


def set_trust(rt: Runtime, slug: str, trust: float) -> int:
    policy = rt.policy
    if not policy.trust_min <= trust <= policy.trust_max:
        raise InvalidInput(f"trust must be between {policy.trust_min} and {policy.trust_max}")
    with rt.db.transaction() as conn:
        platform = store.platform_by_slug(conn, slug)
        if platform is None:
            raise NotFound(f"no platform '{slug}'")
        store.set_operator_trust(conn, platform["id"], trust)
        return int(platform["id"])


def set_rate_limit(rt: Runtime, slug: str, per_second: int | None, burst: int | None) -> None:
    with rt.db.transaction() as conn:
        platform = store.platform_by_slug(conn, slug)
        if platform is None:
            raise NotFound(f"no platform '{slug}'")
        store.set_rate_limit(conn, platform["id"], per_second, burst)


class KeyResolver:
    """Authenticates bearer keys, caching each key id's record briefly in this process."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._blocked: dict[str, float] = {}
        self._lock = threading.Lock()
        self._fetch_slots = threading.BoundedSemaphore(KEY_FETCH_CONCURRENCY)

    def _record(self, key_id: str) -> dict[str, Any] | None:
        now = time.monotonic()
        hit = self._cache.get(key_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        with self._fetch_slots, self.rt.db.transaction() as conn:
            record = store.key_record(conn, key_id)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key_id] = (now + self.rt.settings.auth_cache_seconds, record)
        return record

    def resolve(self, authorization: str | None, client: str = "") -> Principal:
        """Authenticate first, then protect against brute force: a key that verifies is always accepted;
        a failure from a client address that keeps failing is answered 429 instead of 401 for a while."""
        try:
            return self._resolve(authorization)
        except Unauthorized:
            blocked_until = self._blocked.get(client, 0.0)
            if blocked_until > time.monotonic():
                raise QuotaExceeded(
                    "too many failed authentication attempts",
                    int(blocked_until - time.monotonic()) + 1,
                    AUTH_FAILURES,
                ) from None
            self._note_failure(client)
            raise

    def _note_failure(self, client: str) -> None:
        digest = hashlib.sha256(client.encode()).hexdigest()[:32]  # no client address at rest
        try:
            failures = self.rt.auth_failures.count(digest, AUTH_WINDOW_SECONDS)
        except CacheUnavailable:
            return
        if failures > AUTH_FAILURES:
            with self._lock:
                if len(self._blocked) > 10_000:
                    self._blocked.clear()
                self._blocked[client] = time.monotonic() + AUTH_WINDOW_SECONDS

    def _resolve(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthorized("missing Authorization: Bearer <key> header")
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise Unauthorized("expected Authorization: Bearer <key>")
        match = _KEY_RE.match(key)
        if not match:
            raise Unauthorized("unknown or revoked API key")
        record = self._record(match.group(1))
        # Compare even when the record is missing, so timing does not reveal which key ids exist.
        expected = bytes(record["digest"]) if record else b"\0" * 32
        if (
            not hmac.compare_digest(expected, _digest(key))
            or record is None
            or record["revoked_at"] is not None
        ):
            raise Unauthorized("unknown or revoked API key")
        return self._principal(record)

    def principal_for(self, key_id: str) -> Principal:
        """The principal of an active key, by key id: a console session, which holds no key, re-checks
        the key it was opened with this way on every request."""
        record = self._record(key_id)
        if record is None or record["revoked_at"] is not None:
            raise Unauthorized("unknown or revoked API key")
        return self._principal(record)

    def _principal(self, record: dict[str, Any]) -> Principal:
        settings = self.rt.settings
        return Principal(
            platform_id=int(record["platform_id"]),
            slug=record["slug"],
            key_id=record["key_id"],
            scopes=frozenset(record["scopes"]),
            rate_per_second=int(record["rate_per_second"] or settings.rate_limit_per_second),
            burst=int(record["rate_burst"] or settings.rate_limit_burst),
            operator=bool(record["operator"]),
        )


def charge(rt: Runtime, principal: Principal, cost: int = 1) -> Quota | None:
    """Charge the platform's request bucket, shared by all its keys (429 when empty). While Redis is down
    quotas are not enforced, as on the lookup path; None then."""
    try:
        quota = rt.quotas.charge(str(principal.platform_id), principal.rate_per_second, principal.burst, cost)
    except CacheUnavailable:
        return None
    if not quota.allowed:
        metrics.RATE_LIMITED.inc()
        raise QuotaExceeded("rate limit exceeded for this platform", quota.retry_after, quota.limit)
    return quota


class QuotaGate:
    """Reports are charged after their work, in the Redis call that flags their tokens
    (`PendingWork.settle_report`), so that a report makes one Redis round trip rather than two. Each API process
    remembers, from the answer, until when each platform's bucket is empty and refuses that platform's
    reports itself until then (429, with no round trip). A platform can therefore overshoot its limit by
    at most the requests in flight when its bucket empties (the server's threads), and every one of them
    is charged: the bucket goes into debt and the wait grows accordingly."""

    def __init__(self) -> None:
        self._empty_until: dict[int, tuple[float, int]] = {}  # platform id -> (monotonic time, limit)

    def check(self, principal: Principal) -> None:
        blocked = self._empty_until.get(principal.platform_id)
        if blocked is None:
            return
        wait = blocked[0] - time.monotonic()
        if wait <= 0:
            self._empty_until.pop(principal.platform_id, None)
            return
        metrics.RATE_LIMITED.inc()
        raise QuotaExceeded("rate limit exceeded for this platform", max(1, math.ceil(wait)), blocked[1])

    def settle(self, rt: Runtime, principal: Principal, cost: int, tokens: list[str], wake: bool) -> None:
        """Charge `cost`, flag `tokens` as pending and wake the relay if `wake`, in one Redis call. A Redis
        failure is fine: quotas go unenforced while Redis is down (as for lookups), and the committed
        outbox rows are the guarantee of the scoring work, which the relay also polls for."""
        try:
            left = rt.pending.settle_report(
                str(principal.platform_id), principal.rate_per_second, principal.burst, cost, tokens, wake
            )
        except CacheUnavailable:
            return
        if left < 1:
            if len(self._empty_until) > 10_000:
                self._empty_until.clear()
            wait = (1 - left) / principal.rate_per_second
            self._empty_until[principal.platform_id] = (time.monotonic() + wait, principal.burst)
        else:
            self._empty_until.pop(principal.platform_id, None)


def charge_consumer_rights(rt: Runtime, principal: Principal) -> None:
    """Subject reports and disputes draw on their own, much smaller bucket: each one opens a consumer's
    whole file, so even the operator's key must not be able to walk the ledger."""
    per_minute = rt.settings.consumer_rights_per_minute
    try:
        quota = rt.quotas.charge(str(principal.platform_id) + RIGHTS_BUCKET, per_minute / 60, per_minute, 1)
    except CacheUnavailable:
        # Unlike lookups, consumer-rights requests are rare and never urgent: refuse rather than go unbounded.
        raise QuotaExceeded("the consumer-rights rate limit cannot be checked now", 5, per_minute) from None
    if not quota.allowed:
        metrics.RATE_LIMITED.inc()
        raise QuotaExceeded("too many subject reports and disputes", quota.retry_after, quota.limit)
