"""Commands that only read PostgreSQL need only DATABASE_URL.

An operator pointing `ledger verify` at the demo's database, or at a read replica, should not have to
invent a Redis URL and an identity key it never uses. Each such command runs here as the installed
command (in this process, `tests.support.invoke_ledger`) with an environment that holds DATABASE_URL
and nothing else of the ledger's, in the default (production) mode. Commands that change state keep the full check, so a misconfigured
production still stops them in one line naming the setting.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ledger.config import Settings
from ledger.services import platforms as platform_service
from tests.support import incident_body, invoke_ledger


def only_database(settings: Settings) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LEDGER_", "DATABASE_URL", "REDIS_URL", "TEST_", "BENCH_"))
    }
    env["DATABASE_URL"] = settings.database_url or ""
    return env


def test_read_only_commands_need_only_database_url(
    settings: Settings, clean: None, client: Any, rt: Any
) -> None:
    issued = platform_service.create_platform(rt, "solo", "Solo", "report,lookup")
    reported = client.post(
        "/v1/incidents", json=incident_body("only-db-1"), headers={"Authorization": f"Bearer {issued.key}"}
    )
    assert reported.status_code == 201, reported.get_json()
    env = only_database(settings)
    for args in (
        ["platforms", "list", "--json"],
        ["platforms", "stats", "--json"],
        ["lookups", "fishing", "--json"],
    ):
        done = invoke_ledger(env, *args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    verified = invoke_ledger(env, "verify", "--json")
    assert verified.returncode == 0, verified.stderr
    result = json.loads(verified.stdout.strip().splitlines()[-1])
    assert result["ok"] is True


def test_a_command_that_changes_state_still_checks_everything(settings: Settings) -> None:
    for args in (["outbox", "flush", "--json"], ["keys", "rotate", "solo"]):
        done = invoke_ledger(only_database(settings), *args)
        assert done.returncode == 2
        assert done.stderr.strip().splitlines()[-1] == "error: REDIS_URL is not set"
