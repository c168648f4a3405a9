"""Settings never show their secrets (the review printed the identity key and the database password from
a repr), and the public built-in identity key is never used silently."""

from __future__ import annotations

import logging

import pytest

from ledger.config import DEMO_IDENTITY_KEY, Settings
from ledger.errors import ConfigError

PASSWORD = "pw-Zq8vY3nT1kL"
IDENTITY = "identity-key-that-is-secret-0123"
TOKEN = "server-token-key-that-is-secret-0123456789"


def test_repr_hides_urls_and_keys() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": f"postgresql://ledger:{PASSWORD}@db:5432/ledger",
            "REDIS_URL": f"redis://:{PASSWORD}@cache:6379/0",
            "LEDGER_IDENTITY_KEY": IDENTITY,
            "LEDGER_TOKEN_KEY": TOKEN,
        }
    )
    for shown in (repr(settings), str(settings), f"{settings!r}"):
        for secret in (PASSWORD, IDENTITY, TOKEN):
            assert secret not in shown


def test_the_built_in_identity_key_is_announced(caplog: pytest.LogCaptureFixture) -> None:
    env = {"DATABASE_URL": "postgresql://db/ledger", "REDIS_URL": "redis://cache/0", "LEDGER_ENV": "demo"}
    with caplog.at_level(logging.WARNING, logger="ledger.config"):
        settings = Settings.from_env(env).require_services()
    assert settings.identity_key == DEMO_IDENTITY_KEY
    assert "public" in caplog.text
    with pytest.raises(ConfigError):
        Settings.from_env({**env, "LEDGER_ENV": "production"}).require_services()


@pytest.mark.parametrize("token_key", ["short", IDENTITY])
def test_the_token_key_is_long_and_not_the_identity_key(token_key: str) -> None:
    with pytest.raises(ConfigError, match="LEDGER_TOKEN_KEY"):
        Settings.from_env({"LEDGER_IDENTITY_KEY": IDENTITY, "LEDGER_TOKEN_KEY": token_key})


def test_the_database_role_is_a_plain_name() -> None:
    with pytest.raises(ConfigError, match="LEDGER_DB_ROLE"):
        Settings.from_env({"LEDGER_DB_ROLE": "ledger_app -c statement_timeout=0"})
    assert Settings.from_env({"LEDGER_DB_ROLE": "ledger_app"}).db_role == "ledger_app"
