"""`ledger demo` end to end: it comes up, serves a report and a lookup, and SIGTERM stops all of it.

Both DATABASE_URL and REDIS_URL point at the real services (a fresh database, Redis db 6), so the
demo must start nothing embedded; the embedded path is checked by hand (see the README's caveats),
because pgserver as root adds a system user and changes directory permissions.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from ledger.domain import merkle, note
from tests.support import PG_SERVER, ROOT, free_port, wait_for

REDIS_URL = os.environ.get("TEST_DEMO_REDIS_URL", "redis://127.0.0.1:6379/6")
PHONE = {"type": "phone", "value": "13900139000"}


def _post(url: str, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(  # noqa: S310 (the demo's own http:// URL)
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _get(url: str, key: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (the demo's own http:// URL)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _live_members(pgids: set[int]) -> list[str]:
    """Processes, not zombies, in any of these process groups."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) in pgids and fields[0] != "Z":
            found.append(stat.parent.name)
    return found


@pytest.fixture
def demo_database() -> Iterator[str]:
    name = f"ledger_demo_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{PG_SERVER.rpartition('/')[0]}/{name}"
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_demo_serves_and_stops_everything_on_sigterm(demo_database: str, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update(DATABASE_URL=demo_database, REDIS_URL=REDIS_URL, PYTHONUNBUFFERED="1")
    stderr = (tmp_path / "demo.err").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ledger.cli",
            "demo",
            "--json",
            "--workers",
            "1",
            "--bind",
            f"127.0.0.1:{port}",
            "--state-dir",
            str(tmp_path / "state"),
        ],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        start_new_session=True,
    )
    pgids: set[int] = set()
    try:
        # The demo prints one JSON line once the API answers /readyz and the worker is ready.
        assert proc.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 40
        announced: dict[str, Any] | None = None
        while announced is None:
            if time.monotonic() > deadline:  # a bound on the wait, not a timing assertion
                pytest.fail("the demo did not come up: " + (tmp_path / "demo.err").read_text())
            assert proc.poll() is None, (tmp_path / "demo.err").read_text()
            if selector.select(timeout=0.5):
                line = proc.stdout.readline()
                with contextlib.suppress(ValueError):
                    announced = json.loads(line)
        pgids = set(announced["processes"].values())
        assert announced["embedded"] == {"postgres": None, "redis": None}, "both URLs are set"
        keys = {k["platform"]: k["key"] for k in announced["platforms"]}
        assert set(keys) == {"demo-shop", "demo-market", "demo-desk"}
        scopes = {k["platform"]: set(k["scopes"]) for k in announced["platforms"]}
        # Consumer-rights access is the operator desk's alone: no member platform holds it.
        assert scopes == {
            "demo-shop": {"report", "lookup"},
            "demo-market": {"report", "lookup"},
            "demo-desk": {"dispute"},
        }
        api = announced["api"]

        status, created = _post(
            f"{api}/v1/incidents",
            keys["demo-shop"],
            {
                "external_id": "demo-e2e-1",
                "category": "fabricated_evidence",
                "confirmation": "platform_review",
                "amount": {"value": 45_000, "currency": "CNY"},
                "occurred_at": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
                "consumer_notified_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
                "identifiers": [PHONE],
            },
        )
        assert status == 201, created

        # The demo's sequencer integrates the report within the MMD; the proof checks out against the
        # signed checkpoint with the key the log publishes.
        leaf = bytes.fromhex(created["receipt"]["leaf_hash"])

        def proved() -> dict[str, Any] | None:
            status, body = _get(f"{api}/v1/log/inclusion?leaf_hash={leaf.hex()}", keys["demo-shop"])
            return body if status == 200 else None

        proof = wait_for(proved, timeout=10, interval=0.2)
        _, key = _get(f"{api}/v1/log/key")
        signed = note.open_checkpoint(proof["checkpoint"], note.Verifier.parse(key["vkey"]), key["origin"])
        merkle.verify_inclusion(
            proof["leaf_index"], signed.size, leaf, [bytes.fromhex(p) for p in proof["proof"]], signed.root
        )

        def scored() -> dict[str, Any] | None:
            status, body = _post(
                f"{api}/v1/lookups", keys["demo-market"], {"identifiers": [PHONE], "purpose": "refund_review"}
            )
            assert status == 200, body
            return body if body["decision"]["score"] > 0 else None

        # The worker the demo started scores the report; the lookup of another platform sees it.
        result = wait_for(scored, timeout=15, interval=0.2)
        assert result["summary"]["incidents"] == 1
        assert result["decision"]["tier"] != "clear"

        # Another shell reaches the demo through the export block, also written to <state>/env (0600, it
        # holds the keys); `ledger verify` needs nothing from it but DATABASE_URL.
        env_file = Path(announced["env_file"])
        assert env_file == tmp_path / "state" / "env"
        assert env_file.stat().st_mode & 0o777 == 0o600
        exported = {}
        for line in env_file.read_text().splitlines():
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").partition("=")
                exported[name] = shlex.split(value)[0]
        assert exported == announced["env"]
        assert exported["DATABASE_URL"] == demo_database
        assert exported["DEMO_SHOP_KEY"] == keys["demo-shop"]
        shell = {
            k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "DATABASE_URL", "REDIS_URL"))
        }
        verified = subprocess.run(
            [sys.executable, "-m", "ledger.cli", "verify", "--json"],
            env={**shell, "DATABASE_URL": exported["DATABASE_URL"]},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert verified.returncode == 0, verified.stderr
        assert json.loads(verified.stdout.strip().splitlines()[-1])["ok"] is True

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=25) == 0, (tmp_path / "demo.err").read_text()
        assert not env_file.exists()
        assert _live_members(pgids) == [], "a child of the demo outlived it"
        assert not (tmp_path / "state" / "demo.json").exists()
    finally:
        stderr.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pgid in pgids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        redis.Redis.from_url(
            REDIS_URL
        ).flushdb()  # db 6 belongs to this test: drop the demo's queue and cache
