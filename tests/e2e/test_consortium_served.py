"""The simulated consortium, scaled down, replayed through the served system: the same decisions.

benchmarks/consortium_sim.py drives the pure domain code (the linking rule, `assess`, `decide`, the
reliability formula) for a million consumers, because only that is fast enough. This test proves that
shortcut decides as the served system does: it runs the simulator in process, then replays its ledger
through `ledger serve` (gunicorn), a real Celery worker, PostgreSQL and Redis — every report through the
batch API, every dispute opened by the operator and answered by the reporting platform through the API,
every SLA expiry through `ledger disputes expire` — and looks every consumer up through the API. Each
consumer's tier, restrictions, score and reasons must equal the in-process decision.

Two things differ from the simulated 24 months and are pinned so that both paths see the same inputs:
- the served run happens in minutes, so every dispute falls inside the reliability window; the policy of
  both paths therefore uses a window longer than the run (otherwise the default policy);
- the decision is taken at one instant for both: the test rescored every subject at `at` and the
  in-process path decides at the same `at`.

SIM_SERVED_CONSUMERS sets the population: 20,000 by default, so that the whole suite stays within its
budget on a 2-core machine; `SIM_SERVED_CONSUMERS=50000` is the issue's scale (docs/decision-quality.md
gives its run time).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from benchmarks import consortium_sim as cs
from ledger import create_app
from ledger.config import Settings
from ledger.domain.policy import DEFAULT_POLICY_PATH, load_policy
from ledger.services import platforms as platform_service
from ledger.services import reliability, scoring
from ledger.services.runtime import Runtime
from tests.support import ServedApp, WorkerProcess, free_port, incident_body, run_ledger, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

CONSUMERS = int(os.environ.get("SIM_SERVED_CONSUMERS", "20000"))
SEED = 11


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture
def served_settings(isolated_settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """A database no worker watches and a private broker (only this test's worker takes these tasks), and the
    default policy with a reliability window longer than the simulated run."""
    text = DEFAULT_POLICY_PATH.read_text()
    assert "window_days = 365" in text
    policy = tmp_path / "policy.toml"
    policy.write_text(
        text.replace("window_days = 365", "window_days = 1000").replace('version = "', 'version = "sim-', 1)
    )
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _pings(redis.Redis(port=port)))
        yield replace(isolated_settings, redis_url=f"redis://127.0.0.1:{port}/0", policy_path=policy)
    finally:
        server.kill()
        server.wait(timeout=10)


def _identifiers(tokens: tuple[int, ...]) -> list[dict[str, str]]:
    return [{"type": t, "value": v} for t, v in map(cs.raw_identifier, tokens)]


def _pending(rt: Runtime) -> int:
    with rt.db.transaction() as conn:
        row = conn.execute(
            """SELECT (SELECT count(*) FROM outbox WHERE done_at IS NULL)
                    + (SELECT count(*) FROM incidents WHERE subject_id IS NULL) AS n"""
        ).fetchone()
    assert row is not None
    return int(row["n"])


def _post(http: requests.Session, url: str, key: str, body: dict[str, Any], expect: int = 200) -> Any:
    response = http.post(url, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=120)
    assert response.status_code == expect, response.text
    return response.json()


def test_the_served_system_decides_every_consumer_as_the_simulator_does(served_settings: Settings) -> None:
    policy = load_policy(served_settings.policy_path)
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=732)
    scenario = cs.Scenario(consumers=CONSUMERS, seed=SEED, start=start)
    sim = cs.Sim(scenario, policy)
    sim.run()
    assert len(sim.incidents) > CONSUMERS // 100  # a population with something to decide

    app = create_app(served_settings)
    rt: Runtime = app.extensions["ledger.runtime"]
    keys: list[str] = []
    for spec in scenario.platforms:
        slug = f"sim-{spec.name.replace('_', '-')}"
        keys.append(platform_service.create_platform(rt, slug, spec.name, "report,lookup").key)
        platform_service.set_rate_limit(rt, slug, 100_000, 100_000)
    operator = platform_service.create_platform(rt, "sim-operator", "Operator", "dispute", operator=True).key
    platform_service.set_rate_limit(rt, "sim-operator", 100_000, 100_000)

    worker = WorkerProcess(served_settings, concurrency=2).start()
    served = ServedApp(served_settings, workers=2).start()
    http = requests.Session()
    try:
        # Reports: each platform's, in the order the simulation filed them.
        incident_ids: dict[int, str] = {}
        for p, key in enumerate(keys):
            mine = [i for i in sim.incidents if i.platform == p]
            for at in range(0, len(mine), 1000):
                chunk = mine[at : at + 1000]
                bodies = [
                    incident_body(
                        f"sim-{i.id}",
                        category=i.category,
                        confirmation=i.confirmation,
                        amount={"value": i.amount_minor, "currency": "CNY"},
                        occurred_at=i.occurred_at.isoformat(),
                        identifiers=_identifiers((*i.strong, i.device)),
                    )
                    for i in chunk
                ]
                result = _post(http, f"{served.base}/v1/incidents/batch", key, {"incidents": bodies})
                for i, item in zip(chunk, result["results"], strict=True):
                    assert item["status"] == 201, item
                    incident_ids[i.id] = item["incident"]["id"]
        wait_for(lambda: _pending(rt) == 0, timeout=600, interval=0.5)

        # Disputes: those the SLA expired first (the job retracts every overdue one), then the rest.
        disputed = [i for i in sim.incidents if i.dispute is not None]
        expiring = [i for i in disputed if i.dispute == "expired"]
        answered = [i for i in disputed if i.dispute != "expired"]

        def open_dispute(i: cs.Incident) -> str:
            body = {"identifiers": _identifiers(i.strong[:1]), "incident_id": incident_ids[i.id]}
            opened = _post(http, f"{served.base}/v1/disputes", operator, body, expect=201)
            return str(opened["disputes"][0]["id"])

        for i in expiring:
            open_dispute(i)
        if expiring:
            later = (datetime.now(UTC) + timedelta(days=served_settings.dispute_days + 1)).isoformat()
            done = run_ledger(served_settings, "disputes", "expire", "--now", later, "--json")
            assert done.returncode == 0, done.stderr
        for i in answered:
            dispute_id = open_dispute(i)
            if i.dispute in ("upheld", "retracted"):
                body = {"outcome": i.dispute}
                if i.dispute == "upheld":
                    body["basis"] = i.confirmation
                _post(http, f"{served.base}/v1/disputes/{dispute_id}/response", keys[i.platform], body)
        reliability.refresh(rt)  # the answers refreshed their reporters; this refreshes every platform
        wait_for(lambda: _pending(rt) == 0, timeout=600, interval=0.5)
        with rt.db.transaction() as conn:
            trust = {
                r["slug"]: float(r["effective_trust"])
                for r in conn.execute("SELECT slug, effective_trust FROM platforms").fetchall()
            }
        for p, spec in enumerate(scenario.platforms):
            assert trust[f"sim-{spec.name.replace('_', '-')}"] == sim.trust[p], spec.name

        # One instant for both paths.
        at = datetime.now(UTC)
        with rt.db.transaction() as conn:
            live = [int(r["id"]) for r in conn.execute("SELECT id FROM subjects WHERE merged_into IS NULL")]
        scoring.rescore(rt, live, now=at)
        expected = sim.final(at=at)

        looker = keys[3]  # the platform that only looks up
        mismatches: list[tuple[int, Any, Any]] = []
        restricted = 0
        for first in range(0, CONSUMERS, 100):
            batch = range(first, min(CONSUMERS, first + 100))
            people = [sim.consumer(idx) for idx in batch]
            body = {
                "lookups": [
                    {"purpose": "refund_review", "identifiers": _identifiers((*c.strong, c.device))}
                    for c in people
                ]
            }
            result = _post(http, f"{served.base}/v1/lookups/batch", looker, body)
            for c, item in zip(people, result["results"], strict=True):
                assert item["status"] == 200, item
                got = item["lookup"]["decision"]
                want = expected[c.idx]
                mine = (want.tier, list(want.restrictions), want.score, list(want.reasons))
                theirs = (got["tier"], got["restrictions"], got["score"], [r["code"] for r in got["reasons"]])
                restricted += want.tier != "clear"
                if mine != theirs:
                    mismatches.append((c.idx, mine, theirs))
        assert not mismatches, mismatches[:10]
        assert restricted > 0
    finally:
        served.stop()
        worker.stop()
        rt.close()
