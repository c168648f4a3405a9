"""Settings for the ledger, read once from the environment.

Everything configurable lives here as one frozen dataclass so that the app, the workers and the CLI
agree on the same values, and tests can build their own `Settings` without touching `os.environ`.
This module deliberately imports nothing from Flask, psycopg or Celery.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from ledger.errors import ConfigError
from ledger.jurisdiction import DEFAULT_PROFILE, PROFILES, Profile

DEMO_IDENTITY_KEY = "demo-identity-key-not-for-production"
DEFAULT_LOG_ORIGIN = "consumer-credit-ledger.invalid/log"


def _log_key(env: dict[str, str]) -> str | None:
    raw = env.get("LEDGER_LOG_KEY") or None
    if raw is None:
        return None
    try:
        seed = base64.b64decode(raw, validate=True)
    except ValueError:
        seed = b""
    if len(seed) != 32:
        # Never echo the value: it is a private key.
        raise ConfigError("LEDGER_LOG_KEY must be the base64 of a 32-byte Ed25519 seed (`ledger log keygen`)")
    return raw


def _origin(env: dict[str, str]) -> str:
    origin = env.get("LEDGER_LOG_ORIGIN") or DEFAULT_LOG_ORIGIN
    if any(c.isspace() or c == "+" for c in origin) or len(origin) > 200:
        raise ConfigError("LEDGER_LOG_ORIGIN must be a schema-less URL without spaces or '+'")
    return origin


log = logging.getLogger(__name__)


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


def _optional_int(env: dict[str, str], name: str) -> int | None:
    """A positive integer, or None when unset (the jurisdiction profile's value applies)."""
    return _int(env, name, 0, minimum=1) if env.get(name) else None


def _networks(env: dict[str, str]) -> str:
    import ipaddress

    text = env.get("LEDGER_WEBHOOK_ALLOW_NETWORKS", "")
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            ipaddress.ip_network(part, strict=False)
    except ValueError:
        raise ConfigError("LEDGER_WEBHOOK_ALLOW_NETWORKS must be comma-separated CIDRs") from None
    return text


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

    # The URLs may carry passwords and the key is a secret: none of them appears in the repr.
    database_url: str | None = field(default=None, repr=False)
    redis_url: str | None = field(default=None, repr=False)
    identity_key: str | None = field(default=None, repr=False)
    # Server-only: stored tokens are HMAC(token_key, member token), so a member's leaked identity key
    # does not make a dump reversible. Never given to members.
    token_key: str | None = field(default=None, repr=False)
    environment: str = "production"  # production | demo | test
    policy_path: Path | None = None
    # The governing law's profile (ledger/jurisdiction.py); the two overrides below replace its values.
    jurisdiction: str = DEFAULT_PROFILE
    retention_days_override: int | None = None
    audit_retention_days: int = 2 * 365
    dispute_days_override: int | None = None
    max_body_bytes: int = 1024 * 1024
    pool_min: int = 1
    pool_max: int = 8
    rate_limit_per_second: int = 200
    rate_limit_burst: int = 400
    auth_cache_seconds: float = 1.0
    outbox_grace_seconds: int = 5
    log_level: str = "INFO"
    # The transparency log (docs/transparency.md): its Ed25519 key (base64 seed), origin line, maximum
    # merge delay, and how often and how much the sequencer integrates.
    log_key: str | None = field(default=None, repr=False)  # a private key: never in the repr
    log_origin: str = DEFAULT_LOG_ORIGIN
    log_mmd_seconds: int = 10
    log_batch_ms: int = 200
    log_batch_max: int = 5000
    # Webhooks (docs/webhooks.md): CIDRs the operator allows despite the SSRF rules, the per-attempt timeout,
    # the first retry delay (doubling, at most 2 h), how long to keep trying, and when to disable an endpoint.
    webhook_allow_networks: str = ""
    webhook_timeout_seconds: int = 10
    webhook_backoff_ms: int = 5000
    webhook_max_age_hours: int = 24
    webhook_disable_after: int = 25
    webhook_max_endpoints: int = 10
    # How many reverse proxies in front of the API append to X-Forwarded-For. 0 trusts none: the client
    # address is the TCP peer, and a client cannot choose it by sending the header.
    trusted_proxy_hops: int = 0
    # The database role every pooled connection acts as (schema.sql grants `ledger_app` no UPDATE or
    # DELETE on the history). None: the login user's own privileges.
    db_role: str | None = None
    # Subject reports plus disputes per minute, for the operator (each opens a consumer's whole file).
    consumer_rights_per_minute: int = 30
    # Where API processes share their match indexes as memory-mapped snapshots (docs/evidence.md,
    # "One copy per host"); None: each process builds its own in memory.
    index_dir: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.jurisdiction not in PROFILES:
            raise ConfigError(f"LEDGER_JURISDICTION must be one of {', '.join(PROFILES)}")

    @property
    def profile(self) -> Profile:
        return PROFILES[self.jurisdiction]

    @property
    def dispute_days(self) -> int:
        return self.dispute_days_override or self.profile.dispute_days

    @property
    def retention_days(self) -> int:
        """Counted from `occurred_at`, the end of the act."""
        return self.retention_days_override or self.profile.retention_days

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
        token_key = env.get("LEDGER_TOKEN_KEY") or None
        if token_key is not None and (len(token_key) < 32 or token_key == key):
            raise ConfigError(
                "LEDGER_TOKEN_KEY must be at least 32 characters and differ from LEDGER_IDENTITY_KEY"
            )
        db_role = env.get("LEDGER_DB_ROLE") or None
        if db_role is not None and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", db_role):
            raise ConfigError("LEDGER_DB_ROLE must be a plain lowercase role name, such as ledger_app")
        return cls(
            db_role=db_role,
            database_url=_url(env, "DATABASE_URL", ("postgresql", "postgres")),
            redis_url=_url(env, "REDIS_URL", ("redis", "rediss")),  # Celery has no unix:// transport
            identity_key=key,
            token_key=token_key,
            environment=environment,
            policy_path=policy_path,
            jurisdiction=env.get("LEDGER_JURISDICTION") or DEFAULT_PROFILE,
            retention_days_override=_optional_int(env, "LEDGER_RETENTION_DAYS"),
            audit_retention_days=_int(env, "LEDGER_AUDIT_RETENTION_DAYS", 2 * 365, minimum=1),
            dispute_days_override=_optional_int(env, "LEDGER_DISPUTE_DAYS"),
            max_body_bytes=_int(env, "LEDGER_MAX_BODY_BYTES", 1024 * 1024, minimum=1024),
            pool_min=_int(env, "LEDGER_DB_POOL_MIN", 1, minimum=1),
            pool_max=_int(env, "LEDGER_DB_POOL_MAX", 8, minimum=1),
            rate_limit_per_second=_int(env, "LEDGER_RATE_LIMIT_PER_SECOND", 200, minimum=1),
            rate_limit_burst=_int(env, "LEDGER_RATE_LIMIT_BURST", 400, minimum=1),
            outbox_grace_seconds=_int(env, "LEDGER_OUTBOX_GRACE_SECONDS", 5, minimum=1),
            log_level=_log_level(env),
            log_key=_log_key(env),
            log_origin=_origin(env),
            log_mmd_seconds=_int(env, "LEDGER_LOG_MMD_SECONDS", 10, minimum=1),
            log_batch_ms=_int(env, "LEDGER_LOG_BATCH_MS", 200, minimum=1),
            log_batch_max=_int(env, "LEDGER_LOG_BATCH_MAX", 5000, minimum=1),
            webhook_allow_networks=_networks(env),
            webhook_timeout_seconds=_int(env, "LEDGER_WEBHOOK_TIMEOUT_SECONDS", 10, minimum=1),
            webhook_backoff_ms=_int(env, "LEDGER_WEBHOOK_BACKOFF_MS", 5000, minimum=1),
            webhook_max_age_hours=_int(env, "LEDGER_WEBHOOK_MAX_AGE_HOURS", 24, minimum=1),
            webhook_disable_after=_int(env, "LEDGER_WEBHOOK_DISABLE_AFTER", 25, minimum=1),
            webhook_max_endpoints=_int(env, "LEDGER_WEBHOOK_MAX_ENDPOINTS", 10, minimum=1),
            trusted_proxy_hops=_int(env, "LEDGER_TRUSTED_PROXY_HOPS", 0, minimum=0),
            consumer_rights_per_minute=_int(env, "LEDGER_CONSUMER_RIGHTS_PER_MINUTE", 30, minimum=1),
            index_dir=env.get("LEDGER_INDEX_DIR") or None,
        )

    def require_services(self) -> Settings:
        """Check what a running service needs; raise ConfigError naming the first missing setting."""
        if not self.database_url:
            raise ConfigError("DATABASE_URL is not set")
        if not self.redis_url:
            raise ConfigError("REDIS_URL is not set")
        settings = self
        if not settings.identity_key:
            if settings.environment == "production":
                raise ConfigError("LEDGER_IDENTITY_KEY is not set (required outside demo and test)")
            log.warning(
                "LEDGER_IDENTITY_KEY is not set: using the built-in %s key, which is public; "
                "tokens made with it are not secret",
                self.environment,
            )
            settings = replace(settings, identity_key=DEMO_IDENTITY_KEY)
        if not settings.log_key:
            if settings.environment == "production":
                raise ConfigError("LEDGER_LOG_KEY is not set (required outside demo and test)")
            settings = replace(settings, log_key=demo_log_key(settings.identity_key or DEMO_IDENTITY_KEY))
        return settings

    @property
    def inquiry_log_origin(self) -> str:
        """The inquiry log's origin: the event log's, with `/inquiries` appended (a different key name, so
        no checkpoint of one log can pass for the other's)."""
        return f"{self.log_origin}/inquiries"

    def log_signer_seed(self) -> bytes:
        """The log key's seed; demo and test settings without one derive it (see `demo_log_key`)."""
        key = self.log_key
        if key is None:
            if self.environment == "production":
                raise ConfigError("LEDGER_LOG_KEY is not set (required outside demo and test)")
            key = demo_log_key(self.identity_key or DEMO_IDENTITY_KEY)
        return base64.b64decode(key)

    def require_database(self) -> Settings:
        """Check what a command that only reads or writes PostgreSQL needs: DATABASE_URL, nothing else.
        `ledger verify`, `platforms list` and the like run against a demo or a replica with that alone."""
        if not self.database_url:
            raise ConfigError("DATABASE_URL is not set")
        return self

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def demo_log_key(identity_key: str) -> str:
    """A log key for demo and test mode, derived from the identity key so that every process of one demo
    (API, sequencer, CLI) signs with the same key without sharing a file. Never for production: anyone
    who knows the identity key knows it."""
    return base64.b64encode(
        hashlib.sha256(b"ledger demo log key\n" + identity_key.encode()).digest()
    ).decode()
