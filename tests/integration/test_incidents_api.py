"""The incident API's contract, on real PostgreSQL and Redis: every rejected request is a precise
RFC 9457 problem that leaves nothing behind, retries are idempotent even under a race, batches judge
each item on its own, and one platform can neither see nor touch another's incidents.

Partners build their retry logic and error handling on exactly these answers, so each is pinned here.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from ledger.config import Settings
from ledger.identity import tokenize
from ledger.services import platforms as platform_service
from ledger.services.runtime import Runtime
from tests.support import IDENTITY_KEY, Member, check_receipt, incident_body, wait_for

PROBLEM = "application/problem+json"
COUNTED = ("incidents", "incident_identifiers", "incident_evidence", "ledger_events", "log_pending", "outbox")
VALID_ID_CARD = "11010519491231002X"


# -- helpers -----------------------------------------------------------------------------------------
def counts(settings: Settings) -> dict[str, int]:
    """Rows in every table a report writes to (each event queues exactly one pending log leaf)."""
    with psycopg.connect(settings.database_url or "") as conn:
        return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in COUNTED}  # type: ignore[index]


def event_leaves(settings: Settings) -> list[tuple[str, bytes]]:
    """(kind, leaf hash) of every event, in the order they were recorded."""
    with psycopg.connect(settings.database_url or "") as conn:
        rows = conn.execute("SELECT kind, leaf_hash FROM ledger_events ORDER BY id").fetchall()
    return [(kind, bytes(leaf)) for kind, leaf in rows]


def assert_problem(response: Any, status: int, *fields: str) -> dict[str, Any]:
    text = response.get_data(as_text=True)
    assert response.status_code == status, text
    assert response.mimetype == PROBLEM, response.headers
    body = json.loads(text)
    assert body["status"] == status
    assert body["type"].startswith("http")
    assert body["title"]
    assert body["detail"]
    for field in fields:
        assert field in body.get("errors", {}), body
        assert all(isinstance(reason, str) and reason for reason in body["errors"][field])
    assert "Traceback" not in text
    assert 'File "' not in text
    return body  # type: ignore[no-any-return]


def ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).isoformat()


def phones(n: int) -> list[dict[str, str]]:
    return [{"type": "phone", "value": f"1390000{i:04d}"} for i in range(n)]


def post(client: Any, member: Member, body: Any) -> Any:
    return client.post("/v1/incidents", json=body, headers=member.headers)


# -- bad input ---------------------------------------------------------------------------------------
def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = body
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value

    return mutate


def _drop(field: str) -> Callable[[dict[str, Any]], None]:
    return lambda body: body.pop(field)


BAD_BODIES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("fractional amount", _set("amount.value", 12.5), "amount.value"),
    ("amount as a string", _set("amount.value", "100"), "amount.value"),
    ("amount as a boolean", _set("amount.value", True), "amount.value"),
    ("zero amount", _set("amount.value", 0), "amount.value"),
    ("negative amount", _set("amount.value", -100), "amount.value"),
    ("huge amount", _set("amount.value", 10**20), "amount.value"),
    ("lower-case currency", _set("amount.currency", "cny"), "amount.currency"),
    ("unsupported currency", _set("amount.currency", "XTS"), "amount.currency"),
    ("missing amount", _drop("amount"), "amount"),
    ("unknown field", _set("note", "buyer was rude"), "note"),
    ("unknown nested field", _set("amount.note", "x"), "amount.note"),
    ("unknown category", _set("category", "other"), "category"),
    ("unknown confirmation", _set("confirmation", "hunch"), "confirmation"),
    ("missing external_id", _drop("external_id"), "external_id"),
    ("empty external_id", _set("external_id", ""), "external_id"),
    ("long external_id", _set("external_id", "x" * 129), "external_id"),
    ("NUL in external_id", _set("external_id", "order\x00-1"), "external_id"),
    ("lone surrogate in external_id", _set("external_id", "order-\ud800"), "external_id"),
    ("zero identifiers", _set("identifiers", []), "identifiers"),
    ("eleven identifiers", _set("identifiers", phones(11)), "identifiers"),
    ("identifiers not a list", _set("identifiers", {"type": "phone"}), "identifiers"),
    ("unknown identifier type", _set("identifiers.0.type", "passport"), "identifiers.0.type"),
    ("unparseable phone", _set("identifiers.0.value", "not a phone"), "identifiers.0.value"),
    ("invalid phone", _set("identifiers.0.value", "1380013800"), "identifiers.0.value"),
    (
        "wrong id check digit",
        _set("identifiers", [*phones(1), {"type": "id_card", "value": VALID_ID_CARD[:17] + "1"}]),
        "identifiers.1.value",
    ),
    ("bad e-mail", _set("identifiers", [{"type": "email", "value": "a@@b"}]), "identifiers.0.value"),
    ("control character", _set("identifiers.0.value", "dev\x00ice"), "identifiers.0.value"),
    ("value and token", _set("identifiers.0.token", "a" * 64), "identifiers.0._schema"),
    ("neither value nor token", _set("identifiers", [{"type": "phone"}]), "identifiers.0._schema"),
    ("upper-case token", _set("identifiers", [{"type": "phone", "token": "A" * 64}]), "identifiers.0.token"),
    ("short token", _set("identifiers", [{"type": "phone", "token": "a" * 63}]), "identifiers.0.token"),
    ("future occurred_at", _set("occurred_at", ago(hours=-2)), "occurred_at"),
    ("occurred_at beyond retention", _set("occurred_at", ago(days=5 * 365 + 2)), "occurred_at"),
    ("occurred_at without offset", _set("occurred_at", "2026-11-01T10:00:00"), "occurred_at"),
    ("occurred_at not a time", _set("occurred_at", "yesterday"), "occurred_at"),
    ("bad pdq", _set("evidence", {"pdq": ["zz" * 32]}), "evidence.pdq.0"),
    ("empty pdq list", _set("evidence", {"pdq": []}), "evidence.pdq"),
]


def test_bad_bodies_are_422_naming_the_field_and_leave_nothing_behind(
    client: Any, alpha: Member, settings: Settings, subtests: Any
) -> None:
    before = counts(settings)
    for case, mutate, field in BAD_BODIES:
        with subtests.test(case):
            body = incident_body()
            mutate(body)
            assert_problem(post(client, alpha, body), 422, field)
            assert counts(settings) == before


def test_every_bad_identifier_is_named_at_once(client: Any, alpha: Member) -> None:
    body = incident_body(
        identifiers=[
            {"type": "phone", "value": "13800138000"},
            {"type": "phone", "value": "12"},
            {"type": "id_card", "value": VALID_ID_CARD[:17] + "3"},
        ]
    )
    problem = assert_problem(post(client, alpha, body), 422, "identifiers.1.value", "identifiers.2.value")
    assert "identifiers.0.value" not in problem["errors"]
    assert "check digit" in " ".join(problem["errors"]["identifiers.2.value"])


def test_a_body_that_is_not_an_object_is_rejected(
    client: Any, alpha: Member, settings: Settings, subtests: Any
) -> None:
    before = counts(settings)
    for body in ([], "text", 42, None, [incident_body()]):
        with subtests.test(json.dumps(body)[:20]):
            response = client.post(
                "/v1/incidents", data=json.dumps(body), content_type="application/json", headers=alpha.headers
            )
            assert response.status_code in (400, 422)
            assert_problem(response, response.status_code)
            assert counts(settings) == before


def test_malformed_json_is_400(client: Any, alpha: Member, settings: Settings, subtests: Any) -> None:
    before = counts(settings)
    for raw in ['{"external_id": ', "{'single': 'quotes'}", b"\xff\xfe{}", '{"a": 1} trailing', '{"a": }']:
        with subtests.test(repr(raw)):
            response = client.post(
                "/v1/incidents", data=raw, content_type="application/json", headers=alpha.headers
            )
            assert_problem(response, 400)
            assert counts(settings) == before
    with subtests.test("empty body"):
        response = client.post(
            "/v1/incidents", data="", content_type="application/json", headers=alpha.headers
        )
        assert_problem(response, 422, "external_id", "identifiers")  # an empty body is an empty object
        assert counts(settings) == before


def test_deeply_nested_json_is_a_client_error_not_a_crash(client: Any, alpha: Member) -> None:
    raw = '{"external_id": ' + "[" * 50_000 + "]" * 50_000 + "}"
    response = client.post("/v1/incidents", data=raw, content_type="application/json", headers=alpha.headers)
    assert 400 <= response.status_code < 500
    assert response.mimetype == PROBLEM


def test_a_body_over_one_mebibyte_is_413(client: Any, alpha: Member, settings: Settings) -> None:
    body = incident_body(external_id="x" * (1024 * 1024 + 1))
    before = counts(settings)
    assert_problem(post(client, alpha, body), 413)
    assert counts(settings) == before


def test_a_large_body_under_the_limit_is_not_413(client: Any, alpha: Member) -> None:
    body = incident_body(external_id="x" * (512 * 1024))  # too long a reference, but within the size limit
    assert_problem(post(client, alpha, body), 422, "external_id")


def test_the_wrong_content_type_is_415(client: Any, alpha: Member, settings: Settings, subtests: Any) -> None:
    before = counts(settings)
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None):
        with subtests.test(str(content_type)):
            kwargs = {"content_type": content_type} if content_type else {}
            body = json.dumps(incident_body())
            assert_problem(client.post("/v1/incidents", data=body, headers=alpha.headers, **kwargs), 415)
            batch = json.dumps({"incidents": [incident_body()]})
            assert_problem(
                client.post("/v1/incidents/batch", data=batch, headers=alpha.headers, **kwargs), 415
            )
            assert counts(settings) == before


def test_problem_plus_json_is_an_accepted_request_type(client: Any, alpha: Member) -> None:
    response = client.post(
        "/v1/incidents", data=json.dumps(incident_body()), content_type="application/merge-patch+json",
        headers=alpha.headers,
    )  # fmt: skip
    assert response.status_code == 201


def test_an_unknown_route_is_404(client: Any, alpha: Member, subtests: Any) -> None:
    for path in ("/v1/nope", "/v1/incidents/not-a-uuid", "/v2/incidents", "/v1", "/v1/incidents/batch/x"):
        with subtests.test(path):
            assert_problem(client.get(path, headers=alpha.headers), 404)
            assert_problem(client.post(path, json={}, headers=alpha.headers), 404)


WRONG_METHODS = [
    ("get", "/v1/incidents", "POST"),
    ("delete", "/v1/incidents", "POST"),
    ("put", "/v1/incidents/batch", "POST"),
    ("delete", f"/v1/incidents/{uuid.uuid4()}", "GET"),
    ("patch", f"/v1/incidents/{uuid.uuid4()}", "GET"),
    ("get", f"/v1/incidents/{uuid.uuid4()}/retract", "POST"),
    ("post", "/v1/log/checkpoint", "GET"),
    ("post", "/v1/log/inclusion", "GET"),
    ("delete", "/v1/log/consistency", "GET"),
    ("get", "/v1/log/cosignatures", "POST"),
]


def test_the_wrong_method_is_405_with_allow(
    client: Any, alpha: Member, settings: Settings, subtests: Any
) -> None:
    before = counts(settings)
    for method, path, allowed in WRONG_METHODS:
        with subtests.test(f"{method} {path}"):
            response = getattr(client, method)(path, headers=alpha.headers, json={})
            assert_problem(response, 405)
            assert allowed in {m.strip() for m in response.headers["Allow"].split(",")}
    assert counts(settings) == before


# -- success and idempotency -------------------------------------------------------------------------
def test_a_report_is_201_with_id_status_and_a_signed_receipt(
    client: Any, alpha: Member, settings: Settings, rt: Runtime
) -> None:
    response = post(client, alpha, incident_body(evidence={"pdq": ["ab" * 32]}))
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    assert uuid.UUID(created["id"])
    assert created["status"] == "active"
    assert created["external_id"] == "order-1"
    assert "seq" not in created
    assert "entry_hash" not in created
    leaf = check_receipt(rt, created["receipt"])
    assert event_leaves(settings) == [("reported", leaf)]
    assert counts(settings) == {
        "incidents": 1, "incident_identifiers": 1, "incident_evidence": 1, "ledger_events": 1,
        "log_pending": 1, "outbox": 1,
    }  # fmt: skip
    read = client.get(f"/v1/incidents/{created['id']}", headers=alpha.headers)
    assert read.status_code == 200
    assert read.get_json()["amount"] == {"value": 45_000, "currency": "CNY"}
    assert read.get_json()["evidence"] == {"pdq": ["ab" * 32]}
    assert read.get_json()["receipt"] == created["receipt"]


def test_the_same_report_twice_is_200_with_the_original_answer(
    client: Any, alpha: Member, settings: Settings
) -> None:
    first = post(client, alpha, incident_body())
    again = post(client, alpha, incident_body())
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.get_json() == first.get_json()
    assert counts(settings)["incidents"] == 1
    assert counts(settings)["ledger_events"] == 1


@pytest.mark.parametrize(
    "same_identifier",
    [
        {"type": "phone", "token": tokenize("phone", "13800138000", IDENTITY_KEY)},
        {"type": "phone", "value": "+86 138-0013-8000"},
        {"type": "phone", "value": "１３８００１３８０００"},
    ],
    ids=["token", "spelled differently", "full-width"],
)
def test_a_raw_value_and_its_token_are_the_same_body(
    client: Any, alpha: Member, settings: Settings, same_identifier: dict[str, str]
) -> None:
    first = post(client, alpha, incident_body())
    again = post(client, alpha, incident_body(identifiers=[same_identifier]))
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json()["id"] == first.get_json()["id"]
    assert counts(settings)["incidents"] == 1


def test_the_same_instant_in_another_offset_is_the_same_body(client: Any, alpha: Member) -> None:
    first = post(client, alpha, incident_body(occurred_at="2026-11-01T10:00:00+08:00"))
    again = post(client, alpha, incident_body(occurred_at="2026-11-01T02:00:00Z"))
    assert (first.status_code, again.status_code) == (201, 200)


@pytest.mark.parametrize(
    "change",
    [
        {"amount": {"value": 45_001, "currency": "CNY"}},
        {"category": "return_fraud"},
        {"confirmation": "court_or_police"},
        {"occurred_at": "2026-11-01T10:00:01+08:00"},
        {"identifiers": [{"type": "phone", "value": "13800138001"}]},
        {"evidence": {"pdq": ["cd" * 32]}},
    ],
    ids=["amount", "category", "confirmation", "occurred_at", "identifiers", "evidence"],
)
def test_the_same_external_id_with_a_different_body_is_409(
    client: Any, alpha: Member, settings: Settings, change: dict[str, Any]
) -> None:
    first = post(client, alpha, incident_body())
    before = counts(settings)
    problem = assert_problem(post(client, alpha, incident_body(**change)), 409, "external_id")
    assert "order-1" in problem["detail"]
    assert counts(settings) == before
    # The original is untouched.
    read = client.get(f"/v1/incidents/{first.get_json()['id']}", headers=alpha.headers).get_json()
    assert read["amount"]["value"] == 45_000
    assert read["category"] == "fabricated_evidence"


def test_external_ids_are_unique_per_platform_not_globally(client: Any, alpha: Member, beta: Member) -> None:
    mine, theirs = post(client, alpha, incident_body()), post(client, beta, incident_body())
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.get_json()["id"] != theirs.get_json()["id"]


def test_concurrent_identical_reports_create_exactly_one_incident(
    app: Any, alpha: Member, settings: Settings
) -> None:
    threads_n = 8
    barrier = threading.Barrier(threads_n)
    results: list[tuple[int, dict[str, Any]]] = []
    lock = threading.Lock()

    def report() -> None:
        own_client = app.test_client()
        barrier.wait()
        response = post(own_client, alpha, incident_body(external_id="raced"))
        with lock:
            results.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=report) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * (threads_n - 1) + [201], results
    assert len({body["id"] for _, body in results}) == 1
    assert len({json.dumps(body["receipt"]) for _, body in results}) == 1
    found = counts(settings)
    assert (found["incidents"], found["ledger_events"], found["log_pending"]) == (1, 1, 1)


def test_concurrent_conflicting_reports_create_one_and_refuse_the_rest(
    app: Any, alpha: Member, settings: Settings
) -> None:
    threads_n = 6
    barrier = threading.Barrier(threads_n)
    statuses: list[int] = []

    def report(amount: int) -> None:
        own_client = app.test_client()
        barrier.wait()
        body = incident_body(external_id="contested", amount={"value": amount, "currency": "CNY"})
        statuses.append(post(own_client, alpha, body).status_code)

    threads = [threading.Thread(target=report, args=(1000 + i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [201] + [409] * (threads_n - 1)
    assert counts(settings)["incidents"] == 1


# -- batch -------------------------------------------------------------------------------------------
def send_together(app: Any, member: Member, batches: list[list[dict[str, Any]]]) -> list[Any]:
    """POST the batches at the same moment, one thread each; the responses, in no particular order."""
    barrier = threading.Barrier(len(batches))
    responses: list[Any] = []

    def send(batch: list[dict[str, Any]]) -> None:
        own_client = app.test_client()
        barrier.wait()
        responses.append(
            own_client.post("/v1/incidents/batch", json={"incidents": batch}, headers=member.headers)
        )

    threads = [threading.Thread(target=send, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return responses


def test_concurrent_batches_sharing_ids_in_opposite_orders_both_succeed(
    app: Any, alpha: Member, settings: Settings
) -> None:
    """Each batch would wait on the other's unique keys if both inserted in their own order (a deadlock,
    and a 503 for one whole batch); ledger_report inserts in key order, so one waits, then replays.
    Without that order, this test failed in two of three runs on a 2-core machine."""
    for attempt in range(5):
        items = [incident_body(external_id=f"shared-{attempt}-{i:04d}") for i in range(1000)]
        responses = send_together(app, alpha, [items, items[::-1]])
        assert [r.status_code for r in responses] == [200, 200], [r.get_json() for r in responses]
        statuses = [item["status"] for r in responses for item in r.get_json()["results"]]
        assert sorted(statuses) == [200] * 1000 + [201] * 1000
    found = counts(settings)
    assert (found["incidents"], found["ledger_events"]) == (5000, 5000)


def test_a_batch_judges_each_item_on_its_own(
    client: Any, alpha: Member, settings: Settings, rt: Runtime
) -> None:
    assert post(client, alpha, incident_body("existing")).status_code == 201
    items = [
        incident_body("new-a"),  # 0: created
        incident_body("existing"),  # 1: replay of an earlier report
        incident_body("existing", category="return_fraud"),  # 2: conflict with it
        incident_body("bad-amount", amount={"value": 12.5, "currency": "CNY"}),  # 3: schema error
        incident_body("bad-phone", identifiers=[{"type": "phone", "value": "12"}]),  # 4: identity error
        incident_body("new-b", identifiers=[{"type": "email", "value": "b@example.com"}]),  # 5: created
        incident_body("new-a"),  # 6: repeat within the batch
        incident_body("new-a", confirmation="court_or_police"),  # 7: conflict within the batch
        {**incident_body("unknown-field"), "note": "free text"},  # 8: unknown field
    ]
    response = client.post("/v1/incidents/batch", json={"incidents": items}, headers=alpha.headers)
    assert response.status_code == 200, response.get_json()
    results = response.get_json()["results"]
    assert [r["index"] for r in results] == list(range(len(items)))
    assert [r["status"] for r in results] == [201, 200, 409, 422, 422, 201, 200, 409, 422]
    assert results[6]["incident"]["id"] == results[0]["incident"]["id"]
    for index, field in ((2, "external_id"), (3, "amount.value"), (4, "identifiers.0.value"), (8, "note")):
        problem = results[index]["problem"]
        assert problem["status"] == results[index]["status"]
        assert field in problem["errors"], problem
        assert results[index]["kind"] == "problem"
        assert "incident" not in results[index]
    for index in (0, 1, 5, 6):
        assert results[index]["kind"] == "incident"
        assert "problem" not in results[index]
    found = counts(settings)
    assert found["incidents"] == 3
    assert found["ledger_events"] == found["log_pending"] == 3
    # The batch's creations are recorded after the earlier single report, in input order, each with its
    # own receipt; the replay carries the original receipt.
    leaves = [leaf for _, leaf in event_leaves(settings)]
    assert leaves[1:] == [check_receipt(rt, results[i]["incident"]["receipt"]) for i in (0, 5)]
    assert results[6]["incident"]["receipt"] == results[0]["incident"]["receipt"]


def test_a_batch_of_1000_is_accepted_and_queued_for_the_log(
    client: Any, alpha: Member, settings: Settings, rt: Runtime
) -> None:
    items = [
        incident_body(f"bulk-{i}", identifiers=[{"type": "device_id", "value": f"dev-{i}"}])
        for i in range(1000)
    ]
    response = client.post("/v1/incidents/batch", json={"incidents": items}, headers=alpha.headers)
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert [r["status"] for r in results] == [201] * 1000
    # One receipt per item, in order, each a distinct leaf recorded in input order.
    assert [leaf for _, leaf in event_leaves(settings)] == [
        check_receipt(rt, r["incident"]["receipt"]) for r in results
    ]
    assert len({r["incident"]["receipt"]["leaf_hash"] for r in results}) == 1000
    found = counts(settings)
    assert (found["incidents"], found["incident_identifiers"], found["ledger_events"], found["log_pending"]) == (
        1000, 1000, 1000, 1000,
    )  # fmt: skip
    # A retry of the whole batch replays every item and writes nothing.
    again = client.post("/v1/incidents/batch", json={"incidents": items}, headers=alpha.headers)
    assert [r["status"] for r in again.get_json()["results"]] == [200] * 1000
    assert counts(settings) == found


@pytest.mark.parametrize("size", [0, 1001])
def test_a_batch_outside_1_to_1000_is_422(client: Any, alpha: Member, settings: Settings, size: int) -> None:
    items = [incident_body(f"b-{i}") for i in range(size)]
    before = counts(settings)
    response = client.post("/v1/incidents/batch", json={"incidents": items}, headers=alpha.headers)
    assert_problem(response, 422, "incidents")
    assert counts(settings) == before


def test_a_batch_with_unknown_fields_is_422(client: Any, alpha: Member) -> None:
    response = client.post(
        "/v1/incidents/batch", json={"incidents": [incident_body()], "extra": 1}, headers=alpha.headers
    )
    assert_problem(response, 422, "extra")


# -- authentication, scopes and tenant isolation ----------------------------------------------------
BAD_AUTHORIZATIONS = {
    "absent": None,
    "empty": "",
    "no key": "Bearer",
    "blank key": "Bearer   ",
    "basic": "Basic dXNlcjpwYXNz",
    "garbage": "Bearer not-a-key",
    "well formed but unknown": "Bearer ccl_000000000000_" + "a" * 43,
}


def test_missing_or_unknown_keys_are_401(
    client: Any, alpha: Member, settings: Settings, subtests: Any
) -> None:
    before = counts(settings)
    incident_id = post(client, alpha, incident_body("exists")).get_json()["id"]
    for case, authorization in BAD_AUTHORIZATIONS.items():
        with subtests.test(case):
            headers = {"Authorization": authorization} if authorization is not None else {}
            # Two endpoints per case: more than 20 failures a minute from one address is a 429 (brute force).
            for response in (
                client.post("/v1/incidents", json=incident_body(), headers=headers),
                client.get(f"/v1/incidents/{incident_id}", headers=headers),
            ):
                assert_problem(response, 401)
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
    after = counts(settings)
    assert after["incidents"] == before["incidents"] + 1
    assert after["ledger_events"] == before["ledger_events"] + 1


def test_a_key_with_the_right_id_but_wrong_secret_is_401(client: Any, alpha: Member) -> None:
    forged = alpha.key[:-4] + ("AAAA" if not alpha.key.endswith("AAAA") else "BBBB")
    response = client.post(
        "/v1/incidents", json=incident_body(), headers={"Authorization": f"Bearer {forged}"}
    )
    assert_problem(response, 401)


def test_a_revoked_key_is_401(client: Any, alpha: Member, rt: Runtime, settings: Settings) -> None:
    assert post(client, alpha, incident_body("before")).status_code == 201
    platform_service.revoke_key(rt, alpha.key_id)
    # Each API process may trust its cached record for up to a second (auth_cache_seconds).
    wait_for(lambda: post(client, alpha, incident_body("probe")).status_code == 401, timeout=10)
    before = counts(settings)
    assert_problem(post(client, alpha, incident_body("after")), 401)
    assert counts(settings) == before


def test_a_missing_scope_is_403(
    client: Any, make_platform: Callable[..., Member], settings: Settings
) -> None:
    lookup_only = make_platform("refunds", "lookup")
    report_only = make_platform("reporter", "report")
    before = counts(settings)
    assert_problem(post(client, lookup_only, incident_body()), 403)
    assert_problem(
        client.post(
            "/v1/incidents/batch", json={"incidents": [incident_body()]}, headers=lookup_only.headers
        ),
        403,
    )
    assert_problem(client.get(f"/v1/incidents/{uuid.uuid4()}", headers=lookup_only.headers), 403)
    lookup = {"identifiers": [{"type": "phone", "value": "13800138000"}], "purpose": "refund_review"}
    assert_problem(client.post("/v1/lookups", json=lookup, headers=report_only.headers), 403)
    assert counts(settings) == before


def test_authentication_comes_before_validation(client: Any) -> None:
    """An anonymous caller learns nothing about the body rules: a bad body without a key is still 401."""
    assert_problem(client.post("/v1/incidents", json={"bogus": 1}), 401)


def test_another_platform_gets_404_reading_or_retracting(
    client: Any, alpha: Member, beta: Member, settings: Settings
) -> None:
    incident_id = post(client, alpha, incident_body()).get_json()["id"]
    before = counts(settings)
    read = client.get(f"/v1/incidents/{incident_id}", headers=beta.headers)
    retract = client.post(
        f"/v1/incidents/{incident_id}/retract", json={"reason": "reported_in_error"}, headers=beta.headers
    )
    nonexistent = client.get(f"/v1/incidents/{uuid.uuid4()}", headers=beta.headers)
    assert_problem(read, 404)
    assert_problem(retract, 404)
    # Indistinguishable from an incident that does not exist at all.
    assert read.get_json() == nonexistent.get_json()
    assert counts(settings) == before
    mine = client.get(f"/v1/incidents/{incident_id}", headers=alpha.headers).get_json()
    assert mine["status"] == "active"


# -- retract -----------------------------------------------------------------------------------------
def test_the_reporter_can_retract_and_the_incident_stays(
    client: Any, alpha: Member, settings: Settings
) -> None:
    created = post(client, alpha, incident_body()).get_json()
    response = client.post(
        f"/v1/incidents/{created['id']}/retract",
        json={"reason": "overturned_on_review"},
        headers=alpha.headers,
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "retracted"
    assert response.get_json()["id"] == created["id"]
    read = client.get(f"/v1/incidents/{created['id']}", headers=alpha.headers).get_json()
    assert read["status"] == "retracted"
    assert read["status_reason"] == "overturned_on_review"
    with psycopg.connect(settings.database_url or "") as conn:
        events = conn.execute(
            "SELECT kind, platform_id, leaf_hash, payload FROM ledger_events WHERE incident_id = %s ORDER BY id",
            (created["id"],),
        ).fetchall()
        platform_id = conn.execute("SELECT id FROM platforms WHERE slug = 'alpha'").fetchone()[0]  # type: ignore[index]
        assert conn.execute("SELECT count(*) FROM incidents").fetchone()[0] == 1  # type: ignore[index]
    assert [(kind, platform) for kind, platform, _, _ in events] == [
        ("reported", platform_id),
        ("retracted", platform_id),
    ]
    assert bytes(events[0][2]).hex() == created["receipt"]["leaf_hash"]
    assert events[1][2] != events[0][2]  # the retraction is a leaf of its own, for the same platform
    assert events[1][3]["reason"] == "overturned_on_review"
    # Retracting again changes nothing and appends nothing.
    before = counts(settings)
    again = client.post(
        f"/v1/incidents/{created['id']}/retract", json={"reason": "reported_in_error"}, headers=alpha.headers
    )
    assert again.status_code == 200
    assert again.get_json()["status"] == "retracted"
    assert counts(settings) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reason": "i changed my mind"}, "reason"),
        ({}, "reason"),
        ({"reason": "reported_in_error", "x": 1}, "x"),
    ],
)
def test_a_retraction_needs_a_known_reason_code(
    client: Any, alpha: Member, settings: Settings, body: dict[str, Any], field: str
) -> None:
    incident_id = post(client, alpha, incident_body()).get_json()["id"]
    before = counts(settings)
    assert_problem(
        client.post(f"/v1/incidents/{incident_id}/retract", json=body, headers=alpha.headers), 422, field
    )
    assert counts(settings) == before
    assert client.get(f"/v1/incidents/{incident_id}", headers=alpha.headers).get_json()["status"] == "active"
