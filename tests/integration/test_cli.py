"""The `ledger` command as an operator uses it, against the test database, checked for what it prints
and what it leaves in the database.

An operator admits platforms and rotates keys from this command, so a key must be shown exactly once and
never listed again, a revoked key must stop working, and a bad setting must say which one in one line
rather than with a traceback. The commands run in this process through click's CliRunner
(`tests.support.invoke_ledger`), with the environment each case gives; the installed console script,
and the servers a bad setting must stop before they start, run as real processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click
import psycopg
import pytest
from click.testing import CliRunner

from ledger.cli import main
from ledger.config import Settings
from tests.support import ROOT, env_for, incident_body, invoke_ledger, run_ledger, wait_for

LEDGER = str(Path(sys.executable).with_name("ledger"))
KEY_RE = re.compile(r"\Accl_[0-9a-f]{12}_[A-Za-z0-9_-]{32,64}\Z")


def run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the console script in its own process group, so a server that wrongly starts can be stopped."""
    proc = subprocess.Popen(
        [LEDGER, *args], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"`ledger {' '.join(args)}` did not exit within {timeout}s:\n{out}\n{err}")
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def ledger(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    done = run_ledger(settings, *args)
    assert done.returncode == 0, f"ledger {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return done


def report(client: Any, key: str, external_id: str = "cli-1") -> int:
    response = client.post(
        "/v1/incidents", json=incident_body(external_id), headers={"Authorization": f"Bearer {key}"}
    )
    return int(response.status_code)


# -- database and platforms --------------------------------------------------------------------------
def test_db_init_is_safe_to_run_twice(settings: Settings, clean: None) -> None:
    first, second = ledger(settings, "db", "init", "--json"), ledger(settings, "db", "init", "--json")
    assert json.loads(first.stdout) == json.loads(second.stdout)
    with psycopg.connect(settings.database_url or "") as conn:
        assert conn.execute("SELECT to_regclass('ledger_head')").fetchone() == (None,)  # no chain head
        for table in ("ledger_events", "log_pending", "log_leaves", "log_nodes", "log_checkpoints"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)  # nothing invented


def test_a_new_platform_key_is_printed_once_and_stored_only_as_a_digest(
    settings: Settings, client: Any
) -> None:
    created = ledger(
        settings, "platforms", "create", "acme", "--name", "Acme Mall", "--scopes", "report,lookup", "--json"
    )
    printed = json.loads(created.stdout)
    key = printed["key"]
    assert KEY_RE.match(key)
    assert printed["platform"] == "acme"
    assert printed["scopes"] == ["report", "lookup"]
    assert (created.stdout + created.stderr).count(key) == 1
    assert key.split("_")[1] == printed["key_id"]

    with psycopg.connect(settings.database_url or "") as conn:
        digest, key_id = conn.execute("SELECT digest, key_id FROM api_keys").fetchone()  # type: ignore[misc]
        dump = repr(
            conn.execute("SELECT * FROM api_keys JOIN platforms ON platforms.id = platform_id").fetchall()
        )
    assert bytes(digest) == hashlib.sha256(key.encode()).digest()
    assert key_id == printed["key_id"]
    assert key.split("_", 2)[2] not in dump

    assert report(client, key) == 201

    listed = ledger(settings, "platforms", "list", "--json")
    rows = json.loads(listed.stdout)
    assert [row["slug"] for row in rows] == ["acme"]
    assert rows[0]["active_keys"] == 1
    for secret in (key, key.split("_", 2)[2], hashlib.sha256(key.encode()).hexdigest(), "digest"):
        assert secret not in listed.stdout
    text = ledger(settings, "platforms", "list")
    assert "acme" in text.stdout
    assert key.split("_", 2)[2] not in text.stdout


def test_a_duplicate_platform_is_refused_in_one_line(settings: Settings, clean: None) -> None:
    ledger(settings, "platforms", "create", "dup", "--name", "Dup")
    again = run_ledger(settings, "platforms", "create", "dup", "--name", "Dup")
    assert again.returncode != 0
    assert again.stderr.strip().count("\n") == 0
    assert "dup" in again.stderr
    assert "Traceback" not in again.stderr


# -- keys --------------------------------------------------------------------------------------------
def test_rotate_issues_a_working_key_and_keeps_the_old_one_until_revoked(
    settings: Settings, client: Any
) -> None:
    first = json.loads(ledger(settings, "platforms", "create", "acme", "--name", "Acme", "--json").stdout)
    rotated = json.loads(ledger(settings, "keys", "rotate", "acme", "--json").stdout)
    assert KEY_RE.match(rotated["key"])
    assert rotated["key"] != first["key"]
    assert rotated["key_id"] != first["key_id"]
    assert sorted(rotated["scopes"]) == sorted(first["scopes"])
    assert report(client, rotated["key"], "with-new") == 201
    assert report(client, first["key"], "with-old") == 201  # partners roll over without downtime

    third = json.loads(ledger(settings, "keys", "rotate", "acme", "--revoke-old", "--json").stdout)
    assert report(client, third["key"], "with-third") == 201
    wait_for(lambda: report(client, first["key"], "probe") == 401, timeout=10)
    wait_for(lambda: report(client, rotated["key"], "probe") == 401, timeout=10)
    listed = json.loads(ledger(settings, "platforms", "list", "--json").stdout)
    assert listed[0]["active_keys"] == 1


def test_a_revoked_key_is_refused_within_the_auth_cache_ttl(settings: Settings, client: Any) -> None:
    issued = json.loads(ledger(settings, "platforms", "create", "acme", "--name", "Acme", "--json").stdout)
    assert report(client, issued["key"]) == 201  # now cached by this API process
    revoked = ledger(settings, "keys", "revoke", issued["key_id"], "--json")
    assert json.loads(revoked.stdout) == {"revoked": issued["key_id"]}
    # The per-process cache trusts a key for at most auth_cache_seconds (1 s); wait, never time it.
    wait_for(lambda: report(client, issued["key"], "after-revoke") == 401, timeout=10)

    again = run_ledger(settings, "keys", "revoke", issued["key_id"])
    assert again.returncode != 0
    assert issued["key_id"] in again.stderr
    assert "Traceback" not in again.stderr


# -- configuration errors ----------------------------------------------------------------------------
def _env(settings: Settings, **changes: str | None) -> dict[str, str]:
    env = env_for(settings)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


BAD_SETTINGS: list[tuple[str, dict[str, str | None], list[str], str]] = [
    ("missing DATABASE_URL", {"DATABASE_URL": None}, ["platforms", "list"], "DATABASE_URL"),
    ("missing DATABASE_URL, db init", {"DATABASE_URL": None}, ["db", "init"], "DATABASE_URL"),
    (
        "malformed DATABASE_URL",
        {"DATABASE_URL": "mysql://ops:s3cretpw@db/ledger"},
        ["platforms", "list"],
        "DATABASE_URL",
    ),
    ("malformed DATABASE_URL, verify", {"DATABASE_URL": "not a url"}, ["verify"], "DATABASE_URL"),
    ("missing REDIS_URL", {"REDIS_URL": None}, ["keys", "rotate", "x"], "REDIS_URL"),
    ("malformed REDIS_URL", {"REDIS_URL": "http://localhost:6379"}, ["platforms", "list"], "REDIS_URL"),
    ("short identity key", {"LEDGER_IDENTITY_KEY": "short"}, ["platforms", "list"], "LEDGER_IDENTITY_KEY"),
    (
        "non-integer setting",
        {"LEDGER_RETENTION_DAYS": "five years"},
        ["platforms", "list"],
        "LEDGER_RETENTION_DAYS",
    ),
    ("unknown environment", {"LEDGER_ENV": "staging"}, ["platforms", "list"], "LEDGER_ENV"),
    (
        "production without identity key: serve",
        {"LEDGER_ENV": "production", "LEDGER_IDENTITY_KEY": None},
        ["serve", "--bind", "127.0.0.1:0", "--workers", "1"],
        "LEDGER_IDENTITY_KEY",
    ),
    (
        "production without identity key: worker",
        {"LEDGER_ENV": "production", "LEDGER_IDENTITY_KEY": None},
        ["worker"],
        "LEDGER_IDENTITY_KEY",
    ),
    (
        "production without identity key: platforms",
        {"LEDGER_ENV": "production", "LEDGER_IDENTITY_KEY": None},
        ["platforms", "create", "acme", "--name", "Acme"],
        "LEDGER_IDENTITY_KEY",
    ),
]


# The commands that start a server run as processes: if the check wrongly let one start, it is killed.
SERVERS = ("serve", "worker")


def test_bad_settings_fail_in_one_line_naming_the_setting(
    settings: Settings, clean: None, subtests: Any
) -> None:
    in_process = [case for case in BAD_SETTINGS if case[2][0] not in SERVERS]
    results = [invoke_ledger(_env(settings, **case[1]), *case[2]) for case in in_process]
    check_bad_settings(settings, subtests, in_process, results)


@pytest.mark.process
def test_bad_settings_stop_a_server_before_it_starts(settings: Settings, clean: None, subtests: Any) -> None:
    servers = [case for case in BAD_SETTINGS if case[2][0] in SERVERS]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda case: run(case[2], _env(settings, **case[1]), timeout=30), servers))
    check_bad_settings(settings, subtests, servers, results)


def check_bad_settings(
    settings: Settings,
    subtests: Any,
    cases: list[tuple[str, dict[str, str | None], list[str], str]],
    results: list[subprocess.CompletedProcess[str]],
) -> None:
    assert cases
    for (case, _, _, setting), done in zip(cases, results, strict=True):
        with subtests.test(case):
            assert done.returncode != 0
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            assert len(lines) == 1, done.stderr
            assert setting in lines[0]
            assert "Traceback" not in done.stdout + done.stderr
            assert "s3cretpw" not in done.stdout + done.stderr  # a URL may carry a password: never echoed
    with psycopg.connect(settings.database_url or "") as conn:
        assert conn.execute("SELECT count(*) FROM platforms").fetchone() == (0,)


def test_without_an_identity_key_outside_production_the_demo_key_is_used(
    settings: Settings, clean: None
) -> None:
    done = invoke_ledger(
        _env(settings, LEDGER_IDENTITY_KEY=None), "platforms", "create", "acme", "--name", "Acme", "--json"
    )
    assert done.returncode == 0, done.stderr


# -- help --------------------------------------------------------------------------------------------
def _commands(
    group: click.Group, prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], click.Command]]:
    found: list[tuple[tuple[str, ...], click.Command]] = []
    for name, command in sorted(group.commands.items()):
        found.append(((*prefix, name), command))
        if isinstance(command, click.Group):
            found.extend(_commands(command, (*prefix, name)))
    return found


COMMANDS = _commands(main)


def test_the_command_tree_has_the_documented_subcommands() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {
        "db init", "platforms create", "platforms list", "keys rotate", "keys revoke", "serve", "verify",
    } <= names  # fmt: skip


def test_every_subcommand_has_help_and_every_leaf_prints_json(subtests: Any) -> None:
    runner = CliRunner()
    for path, command in [((), main), *COMMANDS]:
        with subtests.test(" ".join(path) or "ledger"):
            result = runner.invoke(main, [*path, "--help"])
            assert result.exit_code == 0, result.output
            assert "Usage:" in result.output
            assert (command.help or "").split("\n")[0][:20] in result.output
            if not isinstance(command, click.Group):
                assert "--json" in {opt for param in command.params for opt in param.opts}


@pytest.mark.process
def test_the_installed_console_script_answers_help() -> None:
    done = run(["--help"], dict(os.environ), timeout=30)
    assert done.returncode == 0
    for name in ("db", "platforms", "keys", "serve", "verify"):
        assert name in done.stdout
