"""Signed webhooks end to end: a real HTTP receiver started here, the real API, a real Celery worker.

Signatures verify with the `standardwebhooks` library a receiver would use; a receiver failing three
times gets the event once; a hanging one is timed out; SSRF targets are refused at registration and again
at delivery; each event reaches only the platform entitled to it (the isolation matrix, for webhooks);
and a worker SIGKILLed mid-delivery still delivers, through the lease and the sweep.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from ledger import create_app
from ledger.config import Settings
from ledger.services import outbox_work
from ledger.services import platforms as platform_service
from ledger.services.runtime import Runtime
from tests.private_services import RedisServer
from tests.receiver import Receiver, Script
from tests.support import Member, WorkerProcess, report, run_ledger, wait_for

PHONE = {"type": "phone", "value": "13800138000"}
ALL_EVENTS = ["dispute.opened", "dispute.resolved", "incident.retracted", "subject.cleared"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def operator(make_platform: Any) -> Member:
    return make_platform("operator", "dispute")  # type: ignore[no-any-return]


def register(client: Any, member: Member, url: str, events: list[str] = ALL_EVENTS) -> dict[str, Any]:
    response = client.post(
        "/v1/webhooks/endpoints", json={"url": url, "events": events}, headers=member.headers
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()  # type: ignore[no-any-return]


def open_dispute(client: Any, operator: Member, incident_id: str) -> dict[str, Any]:
    response = client.post(
        "/v1/disputes", json={"identifiers": [PHONE], "incident_id": incident_id}, headers=operator.headers
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()["disputes"][0]  # type: ignore[no-any-return]


def verified(secret: str, request: Any) -> dict[str, Any]:
    """What a receiver does: the Standard Webhooks library checks the three headers and the body."""
    return Webhook(secret).verify(request.body, request.headers)  # type: ignore[no-any-return]


def events_at(receiver: Receiver, path: str, secret: str) -> list[dict[str, Any]]:
    return [verified(secret, r) for r in receiver.at(path) if r.answered < 300]


def test_events_are_signed_and_reach_only_the_entitled_platform(
    client: Any,
    alpha: Member,
    beta: Member,
    make_platform: Any,
    operator: Member,
    receiver: Receiver,
    worker: Any,
    rt: Runtime,
) -> None:
    gamma = make_platform("gamma", "report,lookup")
    endpoints = {m.slug: register(client, m, f"{receiver.base}/{m.slug}") for m in (alpha, beta, gamma)}
    assert all(e["secret"].startswith("whsec_") for e in endpoints.values())
    listed = client.get("/v1/webhooks/endpoints", headers=alpha.headers).get_json()["endpoints"]
    assert [e["id"] for e in listed] == [endpoints["alpha"]["id"]]
    assert "secret" not in json.dumps(listed)  # shown once, at creation

    incident_id = report(client, alpha)["id"]
    outbox_work.flush_outbox(rt)
    # beta is answered with a restriction for refund_review; gamma looks up for another purpose.
    restricted = wait_for(
        lambda: (
            (
                r := client.post(
                    "/v1/lookups",
                    json={"identifiers": [PHONE], "purpose": "refund_review"},
                    headers=beta.headers,
                ).get_json()
            )["decision"]["restrictions"]
            and r
        )
    )
    client.post(
        "/v1/lookups", json={"identifiers": [PHONE], "purpose": "account_review"}, headers=gamma.headers
    )

    dispute = open_dispute(client, operator, incident_id)
    [opened] = wait_for(lambda: events_at(receiver, "/alpha", endpoints["alpha"]["secret"]))
    assert opened["type"] == "dispute.opened"
    assert opened["data"]["incident_id"] == incident_id
    assert opened["data"]["external_id"] == "order-1"
    assert datetime.fromisoformat(opened["data"]["respond_by"]) == datetime.fromisoformat(
        dispute["respond_by"]
    )
    # A forged or altered body does not verify.
    first = receiver.at("/alpha")[0]
    with pytest.raises(Exception, match="signature"):
        Webhook(endpoints["alpha"]["secret"]).verify(first.body + b" ", first.headers)
    with pytest.raises(Exception, match="signature"):
        Webhook(endpoints["beta"]["secret"]).verify(first.body, first.headers)

    answered = client.post(
        f"/v1/disputes/{dispute['id']}/response", json={"outcome": "retracted"}, headers=alpha.headers
    )
    assert answered.status_code == 200, answered.get_json()
    alpha_events = wait_for(
        lambda: (e := events_at(receiver, "/alpha", endpoints["alpha"]["secret"])) and len(e) >= 3 and e
    )
    assert sorted(e["type"] for e in alpha_events) == [
        "dispute.opened",
        "dispute.resolved",
        "incident.retracted",
    ]
    resolved = next(e for e in alpha_events if e["type"] == "dispute.resolved")
    assert resolved["data"]["outcome"] == "retracted"

    # FCRA §611(d): the consumer falls back to clear; beta, which was answered with a restriction, hears of
    # it with its own lookup id and nothing else about the consumer.
    [cleared] = wait_for(lambda: events_at(receiver, "/beta", endpoints["beta"]["secret"]))
    assert cleared == {
        "type": "subject.cleared",
        "timestamp": cleared["timestamp"],
        "data": {"lookup_ids": [restricted["lookup_id"]]},
    }
    outbox_work.flush_outbox(rt)
    wait_for(lambda: not _pending(rt))
    assert receiver.at("/gamma") == []  # an account_review lookup, never restricted for a refund
    assert len(events_at(receiver, "/alpha", endpoints["alpha"]["secret"])) == 3  # alpha looked nobody up
    log = client.get(
        f"/v1/webhooks/endpoints/{endpoints['alpha']['id']}/deliveries", headers=alpha.headers
    ).get_json()
    assert {d["status"] for d in log["deliveries"]} == {"delivered"}
    # Another platform's endpoint log and deliveries read as missing.
    assert (
        client.get(
            f"/v1/webhooks/endpoints/{endpoints['alpha']['id']}/deliveries", headers=beta.headers
        ).status_code
        == 404
    )
    delivery_id = log["deliveries"][0]["id"]
    assert (
        client.post(
            f"/v1/webhooks/deliveries/{delivery_id}/redeliver", json={}, headers=beta.headers
        ).status_code
        == 404
    )


def _pending(rt: Runtime) -> int:
    with rt.db.transaction() as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM outbox WHERE done_at IS NULL)"
            " + (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending') AS n"
        ).fetchone()
    assert row is not None
    return int(row["n"])


def test_a_receiver_failing_three_times_gets_the_event_once(
    client: Any, alpha: Member, operator: Member, receiver: Receiver, worker: Any, rt: Runtime
) -> None:
    receiver.scripts["/flaky"] = Script(fail=3)
    endpoint = register(client, alpha, f"{receiver.base}/flaky", ["dispute.opened"])
    open_dispute(client, operator, report(client, alpha)["id"])
    [event] = wait_for(lambda: events_at(receiver, "/flaky", endpoint["secret"]))
    assert event["type"] == "dispute.opened"
    wait_for(lambda: not _pending(rt))
    seen = receiver.at("/flaky")
    assert [r.answered for r in seen] == [500, 500, 500, 204]
    assert len({r.headers["webhook-id"] for r in seen}) == 1  # one event, retried: receivers dedupe on it
    [delivery] = client.get(
        f"/v1/webhooks/endpoints/{endpoint['id']}/deliveries", headers=alpha.headers
    ).get_json()["deliveries"]
    assert delivery["status"] == "delivered"
    assert [a["status_code"] for a in delivery["log"]] == [500, 500, 500, 204]
    # The operator's redelivery command sends it once more, signed afresh.
    done = run_ledger(
        client.application.extensions["ledger.runtime"].settings, "webhooks", "redeliver", delivery["id"]
    )
    assert done.returncode == 0, done.stderr
    wait_for(lambda: len(receiver.at("/flaky")) == 5)


def test_a_hanging_receiver_is_timed_out(
    client: Any, alpha: Member, operator: Member, receiver: Receiver, worker: Any
) -> None:
    receiver.scripts["/hang"] = Script(hang=1, hang_seconds=8)
    endpoint = register(client, alpha, f"{receiver.base}/hang", ["dispute.opened"])
    open_dispute(client, operator, report(client, alpha)["id"])

    def log() -> list[dict[str, Any]]:
        return client.get(  # type: ignore[no-any-return]
            f"/v1/webhooks/endpoints/{endpoint['id']}/deliveries", headers=alpha.headers
        ).get_json()["deliveries"]

    delivered = wait_for(lambda: (d := log()) and d[0]["status"] == "delivered" and d[0], timeout=30)
    first = delivered["log"][0]
    # The worker cut the attempt itself (its own timeout, recorded as such, with no status): the receiver
    # would have answered 204 after 8 s. Durations are the benchmarks' business, not a test's.
    assert first["error"] == "timed out"
    assert first["status_code"] is None
    assert delivered["log"][-1]["status_code"] == 204


def test_an_endpoint_that_keeps_failing_is_disabled_and_counted(
    isolated_settings: Settings, receiver: Receiver
) -> None:
    """On a database no worker watches, so that only this process attempts."""
    from ledger.services import webhooks

    app = create_app(isolated_settings.with_(webhook_disable_after=3, webhook_backoff_ms=1))
    rt: Runtime = app.extensions["ledger.runtime"]
    client = app.test_client()
    try:
        alpha_key = platform_service.create_platform(rt, "alpha", "Alpha", "report,lookup")
        operator_key = platform_service.create_platform(rt, "operator", "Operator", "dispute", operator=True)
        alpha = Member("alpha", alpha_key.key, alpha_key.key_id)
        receiver.scripts["/down"] = Script(fail=1000)
        endpoint = register(client, alpha, f"{receiver.base}/down", ["dispute.opened"])
        open_dispute(
            client, Member("operator", operator_key.key, operator_key.key_id), report(client, alpha)["id"]
        )
        outbox_work.flush_outbox(rt)  # fans the event out to a delivery
        for _ in range(3):
            wait_for(lambda: webhooks.deliver_due_now(rt) > 0)
        [listed] = client.get("/v1/webhooks/endpoints", headers=alpha.headers).get_json()["endpoints"]
        assert listed["status"] == "disabled"
        assert "3 failed attempts" in listed["status_reason"]
        assert len(receiver.at("/down")) == 3
        metrics = client.get("/metrics").get_data(as_text=True)
        assert 'ledger_webhook_endpoints_disabled{platform="alpha"} 1' in metrics
        assert webhooks.deliver_due_now(rt) == 1  # still due, but a disabled endpoint is not called
        assert len(receiver.at("/down")) == 3
        enabled = client.post(
            f"/v1/webhooks/endpoints/{endpoint['id']}/enable", json={}, headers=alpha.headers
        )
        assert enabled.get_json()["status"] == "active"
    finally:
        rt.close()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://100.100.100.200/latest/meta-data/", "metadata"),
        ("http://10.0.0.7/hook", "private"),
        ("http://192.168.1.1/hook", "private"),
        ("http://[::1]:8080/hook", "loopback"),
        ("http://127.0.0.1:9/hook", "loopback"),
        ("http://localhost:9/hook", "loopback"),
        ("http://[fe80::1]/hook", "link-local"),
        ("http://0.0.0.0/hook", "0.0.0.0 is"),
        ("http://user:pw@example.com/hook", "credentials"),
        ("ftp://example.com/hook", "https"),
        ("http://no-such-host.invalid/hook", "does not resolve"),
    ],
)
def test_ssrf_targets_are_refused_at_registration(
    settings: Settings, url: str, why: str, clean: None, database_url: str
) -> None:
    app = create_app(settings.with_(webhook_allow_networks=""))
    rt: Runtime = app.extensions["ledger.runtime"]
    try:
        issued = platform_service.create_platform(rt, "alpha", "Alpha", "report")
        response = app.test_client().post(
            "/v1/webhooks/endpoints",
            json={"url": url, "events": ["dispute.opened"]},
            headers={"Authorization": f"Bearer {issued.key}"},
        )
        assert response.status_code == 422, response.get_json()
        assert response.mimetype == "application/problem+json"
        problem = response.get_json()
        assert list(problem["errors"]) == ["url"]
        assert why in problem["errors"]["url"][0]
        with rt.db.transaction() as conn:
            row = conn.execute("SELECT count(*) AS n FROM webhook_endpoints").fetchone()
        assert row is not None
        assert row["n"] == 0
    finally:
        rt.close()


def test_ssrf_is_checked_again_at_delivery(
    isolated_settings: Settings, receiver: Receiver, tmp_path: Any
) -> None:
    """Registered while the operator allowed loopback; the allowance withdrawn, delivery refuses it. No
    worker watches the database: the attempts run in `ledger webhooks sweep --here`."""
    app = create_app(isolated_settings)
    rt: Runtime = app.extensions["ledger.runtime"]
    client = app.test_client()
    try:
        alpha_key = platform_service.create_platform(rt, "alpha", "Alpha", "report,lookup")
        operator_key = platform_service.create_platform(rt, "operator", "Operator", "dispute", operator=True)
        alpha = Member("alpha", alpha_key.key, alpha_key.key_id)
        endpoint = register(client, alpha, f"{receiver.base}/later-refused", ["dispute.opened"])
        open_dispute(
            client, Member("operator", operator_key.key, operator_key.key_id), report(client, alpha)["id"]
        )
        outbox_work.flush_outbox(rt)
        refused = run_ledger(
            isolated_settings.with_(webhook_allow_networks=""), "webhooks", "sweep", "--here"
        )
        assert refused.returncode == 0, refused.stderr
        [delivery] = client.get(
            f"/v1/webhooks/endpoints/{endpoint['id']}/deliveries", headers=alpha.headers
        ).get_json()["deliveries"]
        assert delivery["status"] == "pending"
        assert "loopback" in delivery["log"][0]["error"]
        assert receiver.at("/later-refused") == []
    finally:
        rt.close()


@pytest.mark.process
def test_a_worker_killed_mid_delivery_still_delivers(
    isolated_settings: Settings, receiver: Receiver, tmp_path: Path
) -> None:
    """A private broker, on a database no worker watches, so that only this test's workers deliver. The
    first worker is SIGKILLed while the receiver holds its request; its lease runs out, and a new worker
    with the sweep delivers the same event."""
    broker = RedisServer(tmp_path).start()
    settings = isolated_settings.with_(redis_url=broker.url)
    app = create_app(settings)
    rt: Runtime = app.extensions["ledger.runtime"]
    client = app.test_client()
    dying = survivor = None
    try:
        alpha_key = platform_service.create_platform(rt, "alpha", "Alpha", "report,lookup")
        operator_key = platform_service.create_platform(rt, "operator", "Operator", "dispute", operator=True)
        alpha = Member("alpha", alpha_key.key, alpha_key.key_id)
        receiver.scripts["/killed"] = Script(hang=1, hang_seconds=30)
        endpoint = register(client, alpha, f"{receiver.base}/killed", ["dispute.opened"])
        dying = WorkerProcess(settings.with_(webhook_timeout_seconds=8), concurrency=1).start()
        open_dispute(
            client, Member("operator", operator_key.key, operator_key.key_id), report(client, alpha)["id"]
        )
        wait_for(lambda: receiver.at("/killed"), timeout=30)  # the worker is inside the attempt
        dying.kill(9)
        survivor = WorkerProcess(settings, concurrency=1).start()

        def delivered() -> bool:
            run_ledger(settings, "webhooks", "sweep")  # the beat task's CLI twin
            return any(r.answered == 204 for r in receiver.at("/killed"))

        wait_for(delivered, timeout=60, interval=1)
        seen = receiver.at("/killed")
        assert len({r.headers["webhook-id"] for r in seen}) == 1
        assert verified(endpoint["secret"], seen[-1])["type"] == "dispute.opened"
    finally:
        for proc in (dying, survivor):
            if proc is not None:
                proc.stop()
        rt.close()
        broker.kill()


def test_finished_deliveries_are_purged_after_thirty_days(
    isolated_settings: Settings, receiver: Receiver
) -> None:
    from ledger.services import retention, webhooks

    app = create_app(isolated_settings)
    rt: Runtime = app.extensions["ledger.runtime"]
    client = app.test_client()
    try:
        alpha_key = platform_service.create_platform(rt, "alpha", "Alpha", "report,lookup")
        operator_key = platform_service.create_platform(rt, "operator", "Operator", "dispute", operator=True)
        alpha = Member("alpha", alpha_key.key, alpha_key.key_id)
        register(client, alpha, f"{receiver.base}/kept", ["dispute.opened"])
        open_dispute(
            client, Member("operator", operator_key.key, operator_key.key_id), report(client, alpha)["id"]
        )
        outbox_work.flush_outbox(rt)
        assert webhooks.deliver_due_now(rt) == 1
        assert retention.run(rt)["webhook_deliveries_purged"] == 0  # delivered today: kept
        with rt.db.transaction() as conn:
            conn.execute("UPDATE webhook_deliveries SET created_at = now() - interval '31 days'")
            conn.execute("UPDATE webhook_events SET created_at = now() - interval '31 days'")
        assert retention.run(rt)["webhook_deliveries_purged"] == 1
        with rt.db.transaction() as conn:
            counts = conn.execute(
                "SELECT (SELECT count(*) FROM webhook_attempts) + (SELECT count(*) FROM webhook_events) AS n"
            ).fetchone()
        assert counts is not None
        assert counts["n"] == 0
    finally:
        rt.close()
