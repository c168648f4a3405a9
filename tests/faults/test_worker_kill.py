"""A scoring worker killed with SIGKILL in the middle of recomputing.

`acks_late` with `reject_on_worker_lost` covers a worker child that dies while its parent lives. A
SIGKILL of the whole process group leaves nobody to reject anything: the messages the worker had
reserved stay in Redis's `unacked` set until the visibility timeout (ten minutes). The outbox is the
guarantee: every row not marked done is sent again by the beat sweep, so a new worker redoes the
interrupted recompute. Afterwards the stored subjects and scores must equal a from-scratch recompute:
no consumer split across subjects, no merged subject left holding incidents, no score from a partial
view.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.faults.support import (
    Stack,
    count,
    email,
    half_written,
    phone,
    report_body,
    score_mismatches,
    wait_settled,
)
from tests.private_services import RedisServer
from tests.support import wait_for

BATCHES = 14
BATCH = 80
CONSUMERS = 400


def identifiers(batch: int, item: int) -> list[dict[str, str]]:
    """Consumers recur across batches and platforms; every seventh report also carries the next
    consumer's phone, which merges two consumers into one subject."""
    consumer = (batch * 37 + item * 11) % CONSUMERS
    found = [email(consumer), phone(consumer)]
    if item % 7 == 0:
        found.append(phone(consumer + 1))
    return found


@pytest.mark.timeout(170)
def test_a_worker_killed_mid_recompute_leaves_scores_equal_to_a_fresh_recompute(
    stack: Stack, private_redis: RedisServer
) -> None:
    database = stack.settings.database_url or ""
    members = [stack.member(slug) for slug in ("alpha", "beta", "gamma")]
    _, api = stack.serve()

    # Queue the work before any worker runs: one outbox row (and one task) per batch.
    for b in range(BATCHES):
        body: dict[str, Any] = {
            "incidents": [report_body(f"kill-{b}-{i}", identifiers(b, i), 30_000 + i) for i in range(BATCH)]
        }
        reply = api.post("/v1/incidents/batch", body, members[b % 3], timeout=60)
        assert reply.status == 200, reply
        assert {r["status"] for r in reply.body["results"]} == {201}
    assert count(database, "SELECT count(*) FROM outbox WHERE done_at IS NULL") == BATCHES

    # Kill the worker's whole process group as soon as it has finished one task: it is then in the
    # middle of the others.
    worker = stack.worker(concurrency=2)
    wait_for(
        lambda: count(database, "SELECT count(*) FROM outbox WHERE done_at IS NOT NULL") >= 1,
        timeout=90,
        interval=0.02,
    )
    worker.kill()
    broker = private_redis.client()
    stranded = set(broker.hkeys("unacked"))
    assert stranded, "the killed worker held no unfinished task"
    assert count(database, "SELECT count(*) FROM outbox WHERE done_at IS NULL") >= 3
    assert score_mismatches(database) != []  # the interrupted state is visibly incomplete

    stack.worker(concurrency=2)
    stack.beat()
    wait_settled(database, timeout=120)

    # Redone through the outbox sweep: the dead worker's messages were never redelivered.
    assert stranded <= set(broker.hkeys("unacked"))
    assert half_written(database) == []
    assert score_mismatches(database) == []
    # A merge never leaves a score behind for the subject merged away.
    assert (
        count(
            database,
            "SELECT count(*) FROM risk_scores r JOIN subjects s ON s.id = r.subject_id WHERE s.merged_into IS NOT NULL",
        )
        == 0
    )
