"""Security properties that only show on a served instance (gunicorn, several worker processes).

- a revoked key is refused by every API worker process within about a second (the auth cache TTL);
- a 100 KB header is refused by the server with a 4xx;
- secrets (the identity key, the database password, API keys) never appear in logs, /readyz, error
  bodies or `ledger ... --json` output, apart from the one-time display of a new key.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from dataclasses import replace
from typing import Any

import pytest

from ledger.config import Settings
from tests.support import ServedApp, env_for, incident_body, run_ledger

SECRET_PASSWORD = "pw-Zq8vY3nT1kL"  # trust auth accepts any password, so it can ride in the URL


def request(
    served: ServedApp,
    method: str,
    path: str,
    key: str | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if key:
        all_headers["Authorization"] = f"Bearer {key}"
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=all_headers)
    response = conn.getresponse()
    text = response.read().decode(errors="replace")
    conn.close()
    return response.status, dict(response.getheaders()), text


@pytest.fixture
def secret_settings(settings: Settings, clean: None) -> Settings:
    assert settings.database_url
    url = settings.database_url.replace("postgresql://postgres@", f"postgresql://postgres:{SECRET_PASSWORD}@")
    return replace(settings, database_url=url)


@pytest.fixture
def served(secret_settings: Settings) -> Any:
    app = ServedApp(secret_settings, workers=3).start()
    yield app
    app.stop()


@pytest.mark.timeout(120)
def test_revoked_key_refused_by_every_worker_within_a_second(
    served: ServedApp, secret_settings: Settings
) -> None:
    created = json.loads(
        run_ledger(secret_settings, "platforms", "create", "gamma", "--name", "Gamma", "--json").stdout
    )
    key = created["key"]
    statuses = {request(served, "GET", "/v1/disputes", key)[0] for _ in range(30)}
    assert statuses == {200}  # warm every worker's auth cache with the valid key
    revoked = run_ledger(secret_settings, "keys", "revoke", created["key_id"])
    assert revoked.returncode == 0, revoked.stderr
    time.sleep(1.5)  # the documented bound on revocation (auth cache TTL 1 s), plus margin
    # 18 requests reach all three workers, yet stay under the brute-force limit (20 failures -> 429).
    statuses = {request(served, "GET", "/v1/disputes", key)[0] for _ in range(18)}
    assert statuses == {401}


@pytest.mark.timeout(120)
def test_huge_header_is_refused(served: ServedApp) -> None:
    status, _, _ = request(served, "GET", "/healthz", headers={"X-Padding": "a" * 100_000})
    assert 400 <= status < 500


@pytest.mark.timeout(120)
def test_secrets_never_leak(served: ServedApp, secret_settings: Settings) -> None:
    created = run_ledger(secret_settings, "platforms", "create", "delta", "--name", "Delta", "--json")
    key = json.loads(created.stdout)["key"]
    outputs = [
        request(served, "GET", "/readyz")[2],
        request(served, "GET", "/metrics")[2],
        request(served, "POST", "/v1/incidents", key, {"external_id": 1})[2],
        request(served, "POST", "/v1/incidents", key + "x", incident_body())[2],
        request(
            served,
            "POST",
            "/v1/lookups",
            key,
            {"identifiers": [{"type": "phone", "value": "12"}], "purpose": "refund_review"},
        )[2],
    ]
    for args in (
        ("platforms", "list", "--json"),
        ("verify", "--json"),
        ("keys", "rotate", "delta", "--json"),
        ("lookups", "fishing", "--json"),
        ("platforms", "stats", "--json"),
    ):
        result = run_ledger(secret_settings, *args)
        assert result.returncode == 0, result.stderr
        text = result.stdout + result.stderr
        if args[:2] == ("keys", "rotate"):
            text = text.replace(json.loads(result.stdout)["key"], "")  # the one-time display of the new key
        outputs.append(text)
    bad_env = {**env_for(secret_settings), "REDIS_URL": f"http://user:{SECRET_PASSWORD}@nowhere"}
    bad = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "verify"],
        env=bad_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode != 0
    assert "REDIS_URL" in bad.stderr
    assert "Traceback" not in bad.stderr
    outputs.append(bad.stdout + bad.stderr)
    served.stop()
    outputs.append(served.log.read_text(errors="replace"))
    for text in outputs:
        assert SECRET_PASSWORD not in text
        assert secret_settings.identity_key not in text
        assert key not in text
