"""Settings for the ledger, read once from the environment.

Everything configurable lives here as one frozen dataclass so that the app, the workers and the CLI
agree on the same values, and tests can build their own `Settings` without touching `os.environ`.
This module deliberately imports nothing from Flask, psycopg or Celery.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ledger.errors import ConfigError

DEMO_IDENTITY_KEY = "demo-identity-key-not-for-production"


def _int(env: dict[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _url(env: dict[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    if not raw.startswith(tuple(s + "://" for s in schemes)):
        # Never echo the URL: it may carry a password.
        raise ConfigError(f"{name} must be a URL starting with one of {', '.join(schemes)}://")
    return raw


def _log_level(env: dict[str, str]) -> str:
    level = env.get("LEDGER_LOG_LEVEL", "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("LEDGER_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR")
    return level


@dataclass(frozen=True)
class Settings:
    """Every setting the service reads. See the README's configuration table."""

    database_url: str | None = None
    redis_url: str | None = None
    identity_key: str | None = None
    environment: str = "production"  # production | demo | test
    policy_path: Path | None = None
    retention_days: int = 5 * 365
    audit_retention_days: int = 2 * 365
    dispute_days: int = 30
    max_body_bytes: int = 1024 * 1024
    pool_min: int = 1
    pool_max: int = 8
    rate_limit_per_second: int = 200
    rate_limit_burst: int = 400
    auth_cache_seconds: float = 1.0
    outbox_grace_seconds: int = 5
    log_level: str = "INFO"
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        environment = env.get("LEDGER_ENV", "production")
        if environment not in ("production", "demo", "test"):
            raise ConfigError("LEDGER_ENV must be one of production, demo, test")
        policy = env.get("LEDGER_POLICY_FILE") or None
        policy_path = Path(policy) if policy else None
        if policy_path is not None and not policy_path.is_file():
            raise ConfigError("LEDGER_POLICY_FILE does not name a readable file")
        key = env.get("LEDGER_IDENTITY_KEY") or None
        if key is not None and len(key) < 16:
            raise ConfigError("LEDGER_IDENTITY_KEY must be at least 16 characters")
        return cls(
            database_url=_url(env, "DATABASE_URL", ("postgresql", "postgres")),
            redis_url=_url(env, "REDIS_URL", ("redis", "rediss")),  # Celery has no unix:// transport
            identity_key=key,
            environment=environment,
            policy_path=policy_path,
            retention_days=_int(env, "LEDGER_RETENTION_DAYS", 5 * 365, minimum=1),
            audit_retention_days=_int(env, "LEDGER_AUDIT_RETENTION_DAYS", 2 * 365, minimum=1),
            dispute_days=_int(env, "LEDGER_DISPUTE_DAYS", 30, minimum=1),
            max_body_bytes=_int(env, "LEDGER_MAX_BODY_BYTES", 1024 * 1024, minimum=1024),
            pool_min=_int(env, "LEDGER_DB_POOL_MIN", 1, minimum=1),
            pool_max=_int(env, "LEDGER_DB_POOL_MAX", 8, minimum=1),
            rate_limit_per_second=_int(env, "LEDGER_RATE_LIMIT_PER_SECOND", 200, minimum=1),
            rate_limit_burst=_int(env, "LEDGER_RATE_LIMIT_BURST", 400, minimum=1),
            outbox_grace_seconds=_int(env, "LEDGER_OUTBOX_GRACE_SECONDS", 5, minimum=1),
            log_level=_log_level(env),
        )

    def require_services(self) -> Settings:
        """Check what a running service needs; raise ConfigError naming the first missing setting."""
        if not self.database_url:
            raise ConfigError("DATABASE_URL is not set")
        if not self.redis_url:
            raise ConfigError("REDIS_URL is not set")
        if not self.identity_key:
            if self.environment == "production":
                raise ConfigError("LEDGER_IDENTITY_KEY is not set (required outside demo and test)")
            return replace(self, identity_key=DEMO_IDENTITY_KEY)
        return self

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]
