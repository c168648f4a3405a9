"""Redis dies while platforms report, then comes back empty.

Redis is the broker and the lookup cache, never the record: a report is durable in PostgreSQL (with
its outbox row) before the API answers 201. So while Redis is down every report must still be accepted
and stored, and lookups must keep answering from PostgreSQL with the decisions they gave before. A
restarted Redis without persistence has lost every queued task and every cached decision: the outbox
relay in `ledger worker` (for rows it never managed to send) and the sweep that `ledger beat` schedules
(for rows sent but lost) must get every stranded report scored, and the cache must be refilled (until
then lookups answer from PostgreSQL, since a miss in an emptied cache proves nothing), without anyone
restarting the API, the worker or beat.
"""

from __future__ import annotations

from typing import Any

import pytest

from ledger.storage.quota import QUOTA_KEY
from ledger.storage.rebuild_markers import WARM_KEY
from tests.faults.support import (
    Http,
    Stack,
    email,
    half_written,
    lookup_body,
    phone,
    report_body,
    rows,
    score_mismatches,
    wait_settled,
)
from tests.private_services import RedisServer
from tests.support import Member, wait_for

SCORED_BEFORE = range(3)
DURING = range(3, 15)


def lookup(api: Http, member: Member, n: int) -> dict[str, Any]:
    reply = api.post("/v1/lookups", lookup_body(email(n)), member)
    assert reply.status == 200, reply
    body: dict[str, Any] = reply.body
    return body


def decision_of(result: dict[str, Any]) -> tuple[Any, ...]:
    return (result["decision"], result["summary"], result["computed_at"], result["policy_version"])


@pytest.mark.timeout(170)
def test_reports_during_a_redis_outage_are_kept_and_scored_once_redis_returns(
    stack: Stack, private_redis: RedisServer
) -> None:
    database = stack.settings.database_url or ""
    alpha, beta = stack.member("alpha"), stack.member("beta")
    # One API process, so that the process answering lookups is the one that saw the cache warm.
    serve, api = stack.serve(workers=1)
    stack.worker()
    beat = stack.beat()

    # Three consumers scored before the outage; the first is corroborated by a second platform.
    for n in SCORED_BEFORE:
        assert (
            api.post("/v1/incidents", report_body(f"before-{n}", [email(n), phone(n)]), alpha).status == 201
        )
    assert api.post("/v1/incidents", report_body("before-b0", [phone(0)]), beta).status == 201
    wait_settled(database)
    wait_for(lambda: private_redis.client().exists(WARM_KEY), timeout=30)  # the sweep marks a full cache
    before = {n: lookup(api, beta, n) for n in SCORED_BEFORE}
    assert [before[n]["stale"] for n in SCORED_BEFORE] == [False] * 3
    assert {before[n]["decision"]["tier"] for n in SCORED_BEFORE} != {"clear"}
    assert before[0]["summary"]["platforms"] == 2

    private_redis.kill()

    accepted: dict[str, int] = {}
    for n in DURING:
        reply = api.post("/v1/incidents", report_body(f"during-{n}", [email(n)]), alpha if n % 2 else beta)
        assert reply.status == 201, reply
        accepted[reply.body["id"]] = n
    batch = [report_body(f"during-batch-{n}", [email(n)], amount=90_000) for n in DURING[:4]]
    reply = api.post("/v1/incidents/batch", {"incidents": batch}, alpha)
    assert reply.status == 200, reply
    assert [r["status"] for r in reply.body["results"]] == [201] * 4
    accepted.update({r["incident"]["id"]: n for r, n in zip(reply.body["results"], DURING[:4], strict=True)})

    # Lookups keep answering, from PostgreSQL: the same decisions as before for scored consumers, and
    # "not yet scored" (stale) for the consumers reported during the outage.
    for n in SCORED_BEFORE:
        assert decision_of(lookup(api, beta, n)) == decision_of(before[n])
    for n in DURING:
        during = lookup(api, beta, n)
        assert during["stale"] is True
        assert during["decision"]["tier"] == "clear"
    ready = api.get("/readyz")
    assert ready.status == 503
    checks = dict(ready.body["checks"])
    assert checks.pop("log").startswith(("ok (lag", "behind (lag"))  # the log's lag, read from PostgreSQL
    assert checks == {"postgres": "ok", "redis": "down", "lookup_path": "postgres-fallback"}

    # Every report accepted with 201 is in PostgreSQL, whole; none of it could be scored yet.
    stored = rows(
        database, "SELECT id::text AS id, subject_id FROM incidents WHERE external_id LIKE 'during-%%'"
    )
    assert {r["id"] for r in stored} == set(accepted)
    assert all(r["subject_id"] is None for r in stored)
    assert half_written(database) == []

    # Redis returns empty: every task sent before the outage ended is lost, and so is every cached
    # decision. While beat is stalled nothing refills the cache, and once the API uses Redis again (its
    # quota bucket reappears) a miss must not be taken for "no decision".
    beat.pause()
    private_redis.restart()
    broker = private_redis.client()
    # The quota bucket is the platform's (shared by its keys): any bucket at all shows Redis is in use.
    wait_for(lambda: lookup(api, beta, 99) and any(broker.scan_iter(match=QUOTA_KEY + "*")), timeout=30)
    for n in SCORED_BEFORE:
        assert decision_of(lookup(api, beta, n)) == decision_of(before[n])
    assert not broker.exists(WARM_KEY)

    # The relay sends every stranded report (it may already have), and the sweep refills the cache.
    beat.resume()
    wait_settled(database, timeout=100)
    sweeps = rows(
        database,
        """SELECT o.id, o.attempts FROM outbox o WHERE EXISTS (
               SELECT 1 FROM incidents i WHERE i.external_id LIKE 'during-%%' AND o.args -> 'incidents' ? i.id::text)""",
    )
    assert sweeps
    assert all(r["attempts"] >= 1 for r in sweeps), sweeps  # every stranded row was sent again
    assert score_mismatches(database) == []

    # Lookups are right again, without a restart of any process.
    for n in DURING:
        after = lookup(api, beta, n)
        assert after["stale"] is False
        assert after["decision"]["score"] > 0
        assert after["summary"]["incidents"] == (2 if n in DURING[:4] else 1)
    wait_for(lambda: broker.exists(WARM_KEY), timeout=30)
    for n in SCORED_BEFORE:
        assert decision_of(lookup(api, beta, n)) == decision_of(before[n])
    assert serve.alive
    assert api.get("/readyz").status == 200
