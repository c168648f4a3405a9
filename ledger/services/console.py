"""Use cases of the operator console: sessions, the action log, and the figures its pages show.

The console is a second front door to the same services the API and the `ledger` command use
(platforms, disputes, reliability, access reports, the fishing report); this module adds only what a
browser needs on top: a server-side session opened with an API key, and aggregates for charts.

Who may sign in follows the key's scopes: `admin` makes an operator (every page), `dispute` the
consumer desk (subject reports and disputes, which is what that scope allows in the API). The session
holds the key id, never the key, and is checked against the key on every request, so revoking the key
ends its sessions within the key cache's second.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger.domain.labels import BEIJING
from ledger.errors import CacheUnavailable, Forbidden, LedgerError, Unauthorized
from ledger.services import access, lookups, reliability
from ledger.services.platforms import KeyResolver, Principal
from ledger.services.runtime import Runtime
from ledger.storage import console as store
from ledger.storage import sessions

log = logging.getLogger(__name__)

CONSOLE_SCOPES = ("admin", "dispute")
IDLE_SECONDS = 30 * 60
LIFETIME_SECONDS = 8 * 3600
LOOKUP_MINUTES = 60
REPORT_DAYS = 30
SPARK_DAYS = 30
QUEUE_LIMIT = 200
# The overview's aggregates cost a few hundred milliseconds of database time at a million incidents, so
# beat recomputes them every OVERVIEW_REFRESH_SECONDS (`ledger console refresh` by hand) and pages read
# the snapshot; a page finding none younger than OVERVIEW_MAX_AGE_SECONDS computes it itself.
OVERVIEW_REFRESH_SECONDS = 30
OVERVIEW_MAX_AGE_SECONDS = 90


@dataclass(frozen=True)
class Session:
    session_id: str
    key_id: str
    platform_id: int
    slug: str
    scopes: tuple[str, ...]
    csrf: str
    created: float
    desk_tokens: tuple[str, ...] = ()

    @property
    def role(self) -> str:
        return "operator" if "admin" in self.scopes else "desk"

    def can(self, scope: str) -> bool:
        return scope in self.scopes

    def as_record(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "platform_id": self.platform_id,
            "slug": self.slug,
            "scopes": list(self.scopes),
            "csrf": self.csrf,
            "created": self.created,
            "desk_tokens": list(self.desk_tokens),
        }


# -- sessions ----------------------------------------------------------------------------------------
def sign_in(rt: Runtime, resolver: KeyResolver, key: str, client: str) -> Session:
    """Authenticate a key as the API does (same brute-force limit per client address) and open a
    session. Unauthorized, Forbidden (a key without a console scope) or QuotaExceeded otherwise."""
    principal = resolver.resolve(f"Bearer {key.strip()}", client)
    scopes = tuple(s for s in CONSOLE_SCOPES if s in principal.scopes)
    if not scopes:
        record_action(rt, principal.platform_id, principal.key_id, "anonymous", "sign_in", "refused", {})
        raise Forbidden("this key has neither the 'admin' nor the 'dispute' scope")
    session = Session(
        session_id=secrets.token_urlsafe(32),
        key_id=principal.key_id,
        platform_id=principal.platform_id,
        slug=principal.slug,
        scopes=scopes,
        csrf=secrets.token_urlsafe(32),
        created=time.time(),
    )
    sessions.save(rt.redis.client, session.session_id, session.as_record(), IDLE_SECONDS)
    record_action(rt, session.platform_id, session.key_id, session.role, "sign_in", "ok", {})
    return session


def load_session(rt: Runtime, resolver: KeyResolver, session_id: str) -> Session | None:
    """The live session behind a cookie, or None: unknown, idle too long, too old, or its key revoked or
    stripped of the scopes it signed in with."""
    record = sessions.load(rt.redis.client, session_id, IDLE_SECONDS)
    if record is None:
        return None
    if time.time() - float(record["created"]) > LIFETIME_SECONDS:
        sessions.delete(rt.redis.client, session_id)
        return None
    try:
        principal = resolver.principal_for(record["key_id"])
    except Unauthorized:
        sessions.delete(rt.redis.client, session_id)
        return None
    scopes = tuple(s for s in record["scopes"] if s in principal.scopes)
    if not scopes:
        sessions.delete(rt.redis.client, session_id)
        return None
    return Session(
        session_id=session_id,
        key_id=record["key_id"],
        platform_id=int(record["platform_id"]),
        slug=record["slug"],
        scopes=scopes,
        csrf=record["csrf"],
        created=float(record["created"]),
        desk_tokens=tuple(record.get("desk_tokens") or ()),
    )


def remember_desk_tokens(rt: Runtime, session: Session, tokens: list[str]) -> Session:
    """The desk's current consumer, as tokens only: the dispute form refers to them, so the raw
    identifiers never have to travel back through the page."""
    updated = Session(**{**session.__dict__, "desk_tokens": tuple(tokens)})
    remaining = max(1, int(LIFETIME_SECONDS - (time.time() - session.created)))
    sessions.save(rt.redis.client, session.session_id, updated.as_record(), min(IDLE_SECONDS, remaining))
    return updated


def sign_out(rt: Runtime, session: Session) -> None:
    sessions.delete(rt.redis.client, session.session_id)
    record_action(rt, session.platform_id, session.key_id, session.role, "sign_out", "ok", {})


def principal_of(resolver: KeyResolver, session: Session) -> Principal:
    return resolver.principal_for(session.key_id)


# -- the action log ----------------------------------------------------------------------------------
def record_action(
    rt: Runtime,
    platform_id: int | None,
    key_id: str | None,
    role: str,
    action: str,
    outcome: str,
    detail: dict[str, Any],
) -> None:
    with rt.db.transaction() as conn:
        store.record_action(conn, platform_id, key_id, role, action, outcome, detail)


def record(rt: Runtime, session: Session, action: str, outcome: str, detail: dict[str, Any]) -> None:
    record_action(rt, session.platform_id, session.key_id, session.role, action, outcome, detail)


def recent_actions(rt: Runtime, limit: int = 50) -> list[dict[str, Any]]:
    with rt.db.transaction() as conn:
        return store.recent_actions(conn, limit)


# -- pages -------------------------------------------------------------------------------------------
def overview_snapshot(rt: Runtime) -> dict[str, Any]:
    """The latest overview: beat's snapshot when it is fresh enough, otherwise computed now."""
    try:
        snapshot = sessions.load_overview(rt.redis.client)
    except CacheUnavailable:
        snapshot = None
    if snapshot is not None:
        age = time.time() - datetime.fromisoformat(snapshot["computed_at"]).timestamp()
        if age <= OVERVIEW_MAX_AGE_SECONDS:
            return snapshot
    return refresh_overview(rt)


def refresh_overview(rt: Runtime, now: datetime | None = None) -> dict[str, Any]:
    """Compute the overview and keep it in Redis for the pages (the beat job and its CLI twin)."""
    snapshot = overview(rt, now)
    with contextlib.suppress(CacheUnavailable):
        sessions.save_overview(rt.redis.client, snapshot, 5 * OVERVIEW_MAX_AGE_SECONDS)
    return snapshot


def overview(rt: Runtime, now: datetime | None = None) -> dict[str, Any]:
    """The four charts' series, each with its labels in order and one list of values per series."""
    now = now or datetime.now(UTC)
    minute0 = now.replace(second=0, microsecond=0) - timedelta(minutes=LOOKUP_MINUTES - 1)
    day0 = now.astimezone(BEIJING).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=REPORT_DAYS - 1
    )
    with rt.db.transaction(isolation="REPEATABLE READ") as conn:
        per_minute = store.lookups_per_minute(conn, minute0)
        per_day = store.reports_per_day(conn, day0)
        tiers = store.tier_distribution(conn)
        days_left = store.open_disputes_by_days_left(conn, now)
    tier_order = [t.name for t in rt.policy.tiers]
    minutes = [minute0 + timedelta(minutes=i) for i in range(LOOKUP_MINUTES)]
    days = [day0 + timedelta(days=i) for i in range(REPORT_DAYS)]
    return {
        "computed_at": now.isoformat(),
        "lookups": _grid(per_minute, "minute", "tier", minutes, tier_order, "%H:%M"),
        "reports": _grid(per_day, "day", "category", days, None, "%m-%d"),
        "tiers": {
            "labels": [t for t in tier_order if any(r["tier"] == t for r in tiers)]
            + sorted({r["tier"] for r in tiers} - set(tier_order)),
            "counts": {r["tier"]: int(r["n"]) for r in tiers},
        },
        "disputes": _days_left(days_left, rt.settings.dispute_days),
        "totals": {
            "lookups": sum(int(r["n"]) for r in per_minute),
            "reports": sum(int(r["n"]) for r in per_day),
            "scored": sum(int(r["n"]) for r in tiers),
            "open_disputes": sum(int(r["n"]) for r in days_left),
        },
    }


def _grid(
    rows: list[dict[str, Any]],
    at: str,
    key: str,
    slots: list[datetime],
    order: list[str] | None,
    fmt: str,
) -> dict[str, Any]:
    index = {slot.astimezone(UTC): i for i, slot in enumerate(slots)}
    series: dict[str, list[int]] = {}
    for row in rows:
        slot = index.get(row[at].astimezone(UTC))
        if slot is None:
            continue
        series.setdefault(row[key], [0] * len(slots))[slot] += int(row["n"])
    names = [n for n in (order or []) if n in series] + sorted(set(series) - set(order or []))
    labels = [s.astimezone(BEIJING).strftime(fmt) for s in slots]
    return {"labels": labels, "series": {n: series[n] for n in names}}


def _days_left(rows: list[dict[str, Any]], dispute_days: int) -> dict[str, Any]:
    """Open disputes per whole day left; everything past the deadline in one bucket, labelled -1."""
    counts = [0] * (dispute_days + 2)  # index 0: overdue; index d + 1: d days left
    for row in rows:
        days = int(row["days_left"])
        counts[0 if days < 0 else min(days, dispute_days) + 1] += int(row["n"])
    return {"days": [-1, *range(dispute_days + 1)], "counts": counts}


def disputes_queue(rt: Runtime, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    with rt.db.transaction(isolation="REPEATABLE READ") as conn:
        open_rows = store.open_disputes(conn, QUEUE_LIMIT)
        expired = store.expired_disputes(conn, now - timedelta(days=30), QUEUE_LIMIT)
    for row in open_rows:
        left = row["respond_by"] - now
        row["days_left"] = left.days if left.total_seconds() >= 0 else -1 - (-left).days
        row["overdue"] = left.total_seconds() < 0
    return {"open": open_rows, "expired": expired}


def platforms_page(rt: Runtime, now: datetime | None = None) -> list[dict[str, Any]]:
    """reliability.stats (as `ledger platforms stats`) plus daily sparklines over the last 30 days:
    reports, dispute rate and overturn rate over the trailing reliability window, and the effective
    trust those rates give with today's operator trust (the operator's past settings are not kept)."""
    now = now or datetime.now(UTC)
    policy = rt.policy
    window = timedelta(days=policy.trust_window_days)
    day0 = now.astimezone(BEIJING).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=SPARK_DAYS - 1
    )
    ends = [day0 + timedelta(days=i + 1) for i in range(SPARK_DAYS)]  # end of each day
    rows = reliability.stats(rt)
    with rt.db.transaction(isolation="REPEATABLE READ") as conn:
        reported = store.platform_reports_per_day(conn, day0)
        disputes = store.disputes_since(conn, day0 - window)
        keys = store.platform_keys(conn)
    daily: dict[int, list[int]] = defaultdict(lambda: [0] * SPARK_DAYS)
    for r in reported:
        i = (r["day"].astimezone(BEIJING) - day0).days
        if 0 <= i < SPARK_DAYS:
            daily[int(r["platform_id"])][i] += int(r["n"])
    by_platform: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for d in disputes:
        by_platform[int(d["platform_id"])].append(d)
    keys_of: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for k in keys:
        keys_of[int(k["platform_id"])].append(k)
    a, b = policy.trust_prior_a, policy.trust_prior_b
    for row in rows:
        pid = int(row["id"])
        volume = daily[pid]
        dispute_rate, overturn_rate, trust = [], [], []
        for i, end in enumerate(ends):
            opened = [d for d in by_platform[pid] if end - window <= d["opened_at"] < end]
            overturned = sum(
                1
                for d in opened
                if d["status"] in ("retracted", "expired") and d["resolved_at"] and d["resolved_at"] < end
            )
            week = sum(volume[max(0, i - 6) : i + 1])
            week_disputes = sum(1 for d in opened if end - timedelta(days=7) <= d["opened_at"])
            dispute_rate.append(week_disputes / week if week else 0.0)
            overturn_rate.append((overturned + a) / (len(opened) + a + b))
            trust.append(
                reliability.effective_trust(
                    row["operator_trust"], len(opened), overturned, a, b, policy.trust_min
                )
            )
        row["spark"] = {
            "volume": volume,
            "dispute_rate": dispute_rate,
            "overturn_rate": overturn_rate,
            "effective_trust": trust,
        }
        row["keys"] = keys_of[pid]
    rates = {r["id"]: r for r in _rate_limits(rt)}
    for row in rows:
        row["rate_per_second"] = rates.get(row["id"], {}).get("rate_per_second")
        row["rate_burst"] = rates.get(row["id"], {}).get("rate_burst")
    return rows


def _rate_limits(rt: Runtime) -> list[dict[str, Any]]:
    from ledger.services import platforms

    return platforms.list_platforms(rt)


def fishing(rt: Runtime, days: int = 30) -> list[dict[str, Any]]:
    return lookups.fishing_report(rt, days)


def ledger_status(rt: Runtime) -> dict[str, Any]:
    with rt.db.transaction() as conn:
        head = store.log_head(conn)
        last = store.last_verification(conn)
    return {"head": head, "verification": last}


def desk_report(rt: Runtime, principal: Principal, tokens: list[str]) -> dict[str, Any]:
    return access.report_for_tokens(rt, principal, tokens)


def safe_record(rt: Runtime, session: Session, action: str, outcome: str, detail: dict[str, Any]) -> None:
    """Record a refused or failed action; a failure to record must not hide the original error."""
    with contextlib.suppress(LedgerError):
        record(rt, session, action, outcome, detail)
