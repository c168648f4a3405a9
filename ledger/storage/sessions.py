"""The console's state in Redis: sessions, and the overview's latest snapshot.

`ccl:cs:<SHA-256 of the session id>` holds a session as JSON.

The cookie carries a random session id; Redis holds only its digest, so a Redis dump cannot be replayed
as a cookie. A session names the key it was opened with by key id, never the key itself. The Redis TTL is
the idle timeout and is renewed on use; the absolute lifetime is checked against `created` by the caller.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import redis

from ledger.storage.redis_guard import redis_errors

SESSION_KEY = "ccl:cs:"
OVERVIEW_KEY = "ccl:console:overview"


def _key(session_id: str) -> str:
    return SESSION_KEY + hashlib.sha256(session_id.encode()).hexdigest()


def save(client: redis.Redis, session_id: str, session: dict[str, Any], ttl_seconds: int) -> None:
    with redis_errors("session store"):
        client.set(_key(session_id), json.dumps(session, separators=(",", ":")), ex=ttl_seconds)


def load(client: redis.Redis, session_id: str, ttl_seconds: int) -> dict[str, Any] | None:
    """The session, its idle timeout renewed; None when unknown or expired."""
    with redis_errors("session store"):
        pipe = client.pipeline(transaction=False)
        pipe.get(_key(session_id))
        pipe.expire(_key(session_id), ttl_seconds, xx=True)
        raw, _ = pipe.execute()
    if raw is None:
        return None
    session: dict[str, Any] = json.loads(raw)
    return session


def delete(client: redis.Redis, session_id: str) -> None:
    with redis_errors("session store"):
        client.delete(_key(session_id))


def save_overview(client: redis.Redis, overview: dict[str, Any], ttl_seconds: int) -> None:
    """The overview's aggregates (counts only, no identifier or token), as computed at `computed_at`."""
    with redis_errors("console overview"):
        client.set(OVERVIEW_KEY, json.dumps(overview, separators=(",", ":")), ex=ttl_seconds)


def load_overview(client: redis.Redis) -> dict[str, Any] | None:
    with redis_errors("console overview"):
        raw = client.get(OVERVIEW_KEY)
    if raw is None:
        return None
    overview: dict[str, Any] = json.loads(raw)
    return overview
