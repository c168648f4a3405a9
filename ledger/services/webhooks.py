"""Signed webhooks: registering endpoints, emitting events, delivering them at least once.

Events leave through the outbox, as scoring does: `emit` writes the event and an outbox row in the
transaction of the change that caused it, so an event exists exactly when its change committed, and a
dead Redis or worker only delays it. The worker that processes the outbox row fans the event out to the
platform's endpoints (one delivery row each) and sends a `ledger.deliver_webhook` task per delivery.

A delivery is claimed with a lease, attempted once (DNS checked again, the connection pinned to the
checked address, a timeout, capped reads), and then marked delivered or given its next attempt time
(exponential backoff, for up to `LEDGER_WEBHOOK_MAX_AGE_HOURS`). Short waits are scheduled as task
countdowns; the beat sweep (`ledger webhooks sweep`) sends every due delivery whose lease is free, which
also recovers a worker killed mid-attempt. An endpoint that fails `LEDGER_WEBHOOK_DISABLE_AFTER` times in
a row is disabled: its log, its status and the `ledger_webhook_endpoints_disabled` metric say so.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from ledger import metrics
from ledger.domain import webhooks as rules
from ledger.errors import Conflict, InvalidInput, NotFound
from ledger.services.platforms import Principal
from ledger.services.runtime import Runtime
from ledger.storage import outbox
from ledger.storage import platforms as platform_store
from ledger.storage import webhooks as store
from ledger.storage.queue import DELIVER_WEBHOOK, DELIVER_WEBHOOKS, PROCESS_OUTBOX

log = logging.getLogger(__name__)

SWEEP_LIMIT = 500
PER_TASK = 20  # deliveries per task from a fan-out
PARALLEL_ATTEMPTS = 8  # attempts in flight per worker process (each holds a pool connection briefly)
COUNTDOWN_LIMIT_SECONDS = 60.0  # longer waits are left to the sweep rather than held by a worker


# -- endpoints ------------------------------------------------------------------------------------------


def _https_only(rt: Runtime) -> bool:
    return rt.settings.environment not in ("demo", "test")


def _resolve(host: str, port: int) -> list[str]:
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in found})


def check_target(rt: Runtime, url: str) -> tuple[rules.Target, str]:
    """The parsed URL and the address to connect to; InvalidInput naming `url` if either rule refuses."""
    try:
        target = rules.parse_url(url, https_only=_https_only(rt))
    except ValueError as exc:
        raise InvalidInput(f"the endpoint URL {exc}", {"url": [str(exc)]}) from None
    addresses = _resolve(target.host, target.port)
    why = rules.refusal(addresses, rules.parse_networks(rt.settings.webhook_allow_networks))
    if why is not None:
        reason = f"is refused: {why} (an operator may allow it with LEDGER_WEBHOOK_ALLOW_NETWORKS)"
        raise InvalidInput(f"the endpoint URL {reason}", {"url": [reason]})
    return target, addresses[0]


def register(rt: Runtime, platform_id: int, url: str, events: Sequence[str]) -> dict[str, Any]:
    """A new endpoint and its secret, which this is the only place to see."""
    unknown = sorted(set(events) - set(rules.EVENT_TYPES))
    if unknown or not events:
        raise InvalidInput("unknown event types", {"events": [f"choose from {', '.join(rules.EVENT_TYPES)}"]})
    check_target(rt, url)
    secret = rules.new_secret()
    with rt.db.transaction() as conn:
        platform_store.lock(conn, platform_id)  # serialise the cap
        if store.count_endpoints(conn, platform_id) >= rt.settings.webhook_max_endpoints:
            raise Conflict(f"a platform may register at most {rt.settings.webhook_max_endpoints} endpoints")
        created = store.add_endpoint(conn, uuid.uuid4(), platform_id, url, sorted(set(events)), secret)
    return {**created, "secret": secret}


def list_endpoints(rt: Runtime, principal: Principal) -> list[dict[str, Any]]:
    with rt.db.transaction() as conn:
        return store.endpoints_of(conn, principal.platform_id)


def _own(conn: Any, endpoint_id: UUID, platform_id: int | None) -> dict[str, Any]:
    row = store.endpoint(conn, endpoint_id, platform_id)
    if row is None:
        raise NotFound("no such webhook endpoint")
    return row


def delete(rt: Runtime, platform_id: int | None, endpoint_id: UUID) -> None:
    with rt.db.transaction() as conn:
        _own(conn, endpoint_id, platform_id)
        store.delete_endpoint(conn, endpoint_id)


def enable(rt: Runtime, platform_id: int | None, endpoint_id: UUID) -> dict[str, Any]:
    """Turn a disabled endpoint back on; its abandoned deliveries can then be redelivered."""
    with rt.db.transaction() as conn:
        _own(conn, endpoint_id, platform_id)
        store.set_endpoint_status(conn, endpoint_id, "active", None)
        return _own(conn, endpoint_id, platform_id)


def deliveries(rt: Runtime, platform_id: int | None, endpoint_id: UUID, limit: int = 100) -> dict[str, Any]:
    with rt.db.transaction() as conn:
        endpoint = _own(conn, endpoint_id, platform_id)
        rows = store.deliveries_of(conn, endpoint_id, limit)
    endpoint.pop("platform_id", None)
    for row in rows:  # the log comes as JSON from PostgreSQL: its times as text
        for attempt in row["log"]:
            attempt["at"] = datetime.fromisoformat(attempt["at"])
    return {"endpoint": endpoint, "deliveries": rows}


def redeliver(rt: Runtime, platform_id: int | None, delivery_id: UUID) -> dict[str, Any]:
    with rt.db.transaction() as conn:
        row = store.redeliver(conn, delivery_id, platform_id)
    if row is None:
        raise NotFound("no such delivery")
    rt.queue.send(DELIVER_WEBHOOK, str(delivery_id))
    return {"id": row["id"], "status": "pending"}


# -- events ---------------------------------------------------------------------------------------------


def emit(conn: Any, event_type: str, platform_id: int, data: Mapping[str, Any]) -> str:
    """Record an event for one platform, in the caller's transaction, with the outbox row that fans it out.
    The caller wakes the relay after commit (`incidents.after_commit`), as for any outbox row."""
    assert event_type in rules.EVENT_TYPES
    event_id = f"msg_{uuid.uuid4().hex}"
    payload = {"type": event_type, "timestamp": datetime.now(UTC).isoformat(), "data": dict(data)}
    store.add_event(conn, event_id, event_type, platform_id, payload)
    outbox.add(conn, PROCESS_OUTBOX, {"webhooks": [event_id]})
    return event_id


def emit_cleared(conn: Any, tokens: Sequence[str], now: datetime | None = None) -> int:
    """subject.cleared (FCRA §611(d)) to each platform that looked these tokens up for refund_review in the
    last 180 days and got a restriction; each learns only its own lookup ids. Returns how many events."""
    if not tokens:
        return 0
    since = (now or datetime.now(UTC)) - timedelta(days=rules.CLEARED_LOOKBACK_DAYS)
    recipients = store.restricted_lookups(conn, tokens, since)
    for platform_id, lookup_ids in sorted(recipients.items()):
        emit(conn, "subject.cleared", platform_id, {"lookup_ids": lookup_ids})
    return len(recipients)


def fan_out(rt: Runtime, event_ids: Sequence[str]) -> int:
    """The outbox's part: a delivery per entitled endpoint, sent to the workers in tasks of up to
    `PER_TASK` deliveries on one connection. Safe to run again. A failed publish raises, so the outbox row
    stays pending and is processed again."""
    with rt.db.transaction() as conn:
        pending = [str(d) for d in store.fan_out(conn, event_ids)]
    if pending:
        rt.queue.publish(
            DELIVER_WEBHOOKS, [[pending[i : i + PER_TASK]] for i in range(0, len(pending), PER_TASK)]
        )
    return len(pending)


def deliver_many(rt: Runtime, delivery_ids: Sequence[UUID]) -> dict[UUID, float | None]:
    """Attempt several deliveries at once, on threads: each waits on its receiver, not on the others."""
    if len(delivery_ids) == 1:
        return {delivery_ids[0]: deliver(rt, delivery_ids[0])}
    with ThreadPoolExecutor(max_workers=min(PARALLEL_ATTEMPTS, len(delivery_ids))) as pool:
        waits = list(pool.map(lambda d: deliver(rt, d), delivery_ids))
    return dict(zip(delivery_ids, waits, strict=True))


# -- delivery -------------------------------------------------------------------------------------------


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to the address that passed the checks, not to whatever the name resolves to next."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)  # type: ignore[attr-defined]


def _post(target: rules.Target, address: str, headers: Mapping[str, str], body: bytes, timeout: float) -> int:
    """One POST; the status code. The whole exchange must finish within `timeout`: each socket operation
    has it, and a response trickling in is cut off at the deadline."""
    deadline = time.monotonic() + timeout
    kind = _PinnedHTTPS if target.scheme == "https" else _PinnedHTTP
    connection = kind(target.host, target.port, address, timeout)
    try:
        connection.request("POST", target.path, body=body, headers=dict(headers))
        response = connection.getresponse()
        remaining = rules.MAX_RESPONSE_BYTES
        while remaining > 0 and time.monotonic() < deadline:
            chunk = response.read(min(remaining, 4096))
            if not chunk:
                break
            remaining -= len(chunk)
        if time.monotonic() >= deadline:
            raise TimeoutError("the response did not finish in time")
        return int(response.status)
    finally:
        connection.close()


def deliver(rt: Runtime, delivery_id: UUID, now: datetime | None = None) -> float | None:
    """One attempt at a delivery, if it is due and no other worker holds it. Returns the seconds until the
    next attempt when it failed and will be retried, else None."""
    settings = rt.settings
    timeout = float(settings.webhook_timeout_seconds)
    with rt.db.transaction() as conn:
        claimed = store.claim(conn, delivery_id, timeout + 5)
    if claimed is None:
        return None
    if claimed["endpoint_status"] != "active":
        with rt.db.transaction() as conn:
            store.skip(conn, delivery_id)
        return None
    body = json.dumps(claimed["payload"], separators=(",", ":"), ensure_ascii=False)
    started = time.monotonic()
    status_code: int | None = None
    error: str | None = None
    try:
        encoded = body.encode()
        if len(encoded) > rules.MAX_BODY_BYTES:
            raise ValueError("the event is larger than the body cap")
        target, address = check_target(rt, claimed["url"])  # again: DNS may have changed since registration
        headers = {
            "content-type": "application/json",
            "user-agent": "consumer-credit-ledger-webhooks",
            **rules.sign(claimed["secret"], claimed["event_id"], datetime.now(UTC), body),
        }
        status_code = _post(target, address, headers, encoded, timeout)
        if not 200 <= status_code < 300:
            error = f"HTTP {status_code}"
    except InvalidInput as exc:
        error = f"refused: {exc.detail}"
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # The class, never the message: it could echo a URL's query or a response line.
        error = "timed out" if isinstance(exc, TimeoutError | socket.timeout) else type(exc).__name__
    duration_ms = int((time.monotonic() - started) * 1000)
    with rt.db.transaction() as conn:
        store.record_attempt(conn, delivery_id, claimed["endpoint_id"], status_code, error, duration_ms)
        if error is None:
            store.delivered(conn, delivery_id, claimed["endpoint_id"])
            metrics.WEBHOOKS.labels("delivered").inc()
            return None
        at = now or datetime.now(UTC)
        wait = rules.backoff_seconds(claimed["attempts"], settings.webhook_backoff_ms / 1000)
        expires = claimed["first_attempt_at"] + timedelta(hours=settings.webhook_max_age_hours)
        retry_at = at + timedelta(seconds=wait) if at + timedelta(seconds=wait) <= expires else None
        failures = store.failed(conn, delivery_id, claimed["endpoint_id"], retry_at)
        metrics.WEBHOOKS.labels("failed" if retry_at else "abandoned").inc()
        if failures >= settings.webhook_disable_after:
            store.set_endpoint_status(
                conn,
                claimed["endpoint_id"],
                "disabled",
                f"disabled after {failures} failed attempts in a row; enable it once it answers again",
            )
            log.warning("webhook endpoint %s disabled after %d failures", claimed["endpoint_id"], failures)
            return None
    return wait if retry_at is not None else None


def sweep(rt: Runtime, limit: int = SWEEP_LIMIT) -> int:
    """Send every due delivery whose lease is free: retries too long for a countdown, and the work of a
    worker that died mid-attempt. The beat task and `ledger webhooks sweep` call this."""
    with rt.db.transaction() as conn:
        due = [str(d) for d in store.due(conn, limit)]
    if due:
        rt.queue.publish(DELIVER_WEBHOOKS, [[due[i : i + PER_TASK]] for i in range(0, len(due), PER_TASK)])
    return len(due)


def deliver_due_now(rt: Runtime, limit: int = SWEEP_LIMIT) -> int:
    """Attempt every due delivery in this process (`ledger webhooks sweep --here`): no broker needed."""
    with rt.db.transaction() as conn:
        due = store.due(conn, limit)
    for delivery_id in due:
        deliver(rt, delivery_id)
    return len(due)


def disabled_counts(rt: Runtime) -> list[dict[str, Any]]:
    with rt.db.transaction() as conn:
        return store.disabled_by_platform(conn)
