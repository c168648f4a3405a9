"""Deleting a webhook endpoint while a fan-out is inserting a delivery for it.

The fan-out (a worker) and the member's DELETE run in separate transactions. Before the endpoint row was
locked first, the DELETE removed the deliveries it could see, then blocked on the endpoint row behind the
fan-out's uncommitted insert, and failed on the foreign key once that committed: a 500 to the member.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import psycopg

from ledger.services import webhooks as webhook_service
from ledger.services.runtime import Runtime
from tests.support import Member


def test_a_delete_waits_for_a_fan_out_in_flight_and_removes_its_delivery(
    rt: Runtime, make_platform: Any, database_url: str
) -> None:
    alpha: Member = make_platform("alpha", "report,lookup")
    endpoint = uuid.uuid4()
    with psycopg.connect(database_url, autocommit=True) as setup:
        row = setup.execute("SELECT id FROM platforms WHERE slug = %s", (alpha.slug,)).fetchone()
        assert row is not None
        platform_id = int(row[0])
        setup.execute(
            "INSERT INTO webhook_endpoints (id, platform_id, url, events, secret)"
            " VALUES (%s, %s, 'https://hooks.example/alpha', ARRAY['dispute.opened'], 'whsec_test')",
            (endpoint, platform_id),
        )
        setup.execute(
            "INSERT INTO webhook_events (id, type, platform_id, payload) VALUES ('evt_race', 'dispute.opened', %s, '{}')",
            (platform_id,),
        )
    errors: list[BaseException] = []
    with psycopg.connect(database_url) as fan_out:
        fan_out.execute(  # the fan-out's insert, not yet committed
            "INSERT INTO webhook_deliveries (id, event_id, endpoint_id) VALUES (%s, 'evt_race', %s)",
            (uuid.uuid4(), endpoint),
        )

        def delete() -> None:
            try:
                webhook_service.delete(rt, platform_id, endpoint)
            except BaseException as error:  # reported to the test thread below
                errors.append(error)

        deleting = threading.Thread(target=delete)
        deleting.start()
        deleting.join(1.0)
        assert deleting.is_alive(), "the delete must wait for the fan-out's transaction"
        fan_out.commit()
        deleting.join(30)
    assert not deleting.is_alive()
    assert errors == []
    with psycopg.connect(database_url) as check:
        counts = check.execute(
            "SELECT (SELECT count(*) FROM webhook_endpoints WHERE id = %s),"
            " (SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = %s)",
            (endpoint, endpoint),
        ).fetchone()
    assert counts == (0, 0)
