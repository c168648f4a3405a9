"""Property-based fuzzing of every documented operation with schemathesis, in process (WSGI, no server).

Partners generate their clients from /openapi.json, so the document is a promise: whatever a client
sends, valid or not, the service must never answer 5xx, and every answer must have a documented status,
content type and shape. Requests carry a valid key of a platform holding every scope so that the fuzzer
reaches the handlers instead of stopping at 401.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from ledger.services.platforms import KeyResolver
from ledger.storage.auth_failures import AUTH_FAIL_KEY
from tests.support import REDIS_URL, Member, incident_body

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def member(make_platform: Callable[..., Member]) -> Member:
    return make_platform("member", "report,lookup")


@pytest.fixture
def operator(make_platform: Callable[..., Member]) -> Member:
    """The consumer-rights scopes are the operator's alone; no key holds both kinds."""
    return make_platform("operator", "dispute,admin", operator=True)


def key_for(label: str, member: Member, operator: Member) -> Member:
    return (
        operator
        if label in ("POST /v1/disputes", "POST /v1/subjects/report", "POST /v1/subjects/report/html")
        else member
    )


# Minutes of generated requests: the full suite's, not the edit loop's.
pytestmark = pytest.mark.slow

FUZZ = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


def forget_auth_failures(app: Any) -> None:
    """The fuzzer's negative cases drop the Authorization header on purpose (to check the documented 401);
    without this, brute-force protection would turn every later request into a 429 and fuzz nothing."""
    app.extensions["ledger.keys"] = KeyResolver(app.extensions["ledger.runtime"])
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=AUTH_FAIL_KEY + "*"):
        client.delete(key)


def fuzz(app: Any, operation: Any, headers: dict[str, str]) -> list[int]:
    strategy = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )
    statuses: list[int] = []

    @FUZZ
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call_and_validate(headers=headers, checks=CHECKS)
        statuses.append(response.status_code)
        if response.status_code == 401:
            forget_auth_failures(app)
        elif response.status_code == 429:  # the operator's consumer-rights bucket is small by design
            client = redis.Redis.from_url(REDIS_URL)
            for key in client.scan_iter(match="ccl:q:*"):
                client.delete(key)

    run()
    return statuses


# Every documented operation, fuzzed one per test (each within the per-test timeout). The list is checked
# against the document below, so a new operation cannot go unfuzzed.
OPERATIONS = [
    "GET /",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /v1/log/key",
    "GET /v1/log/checkpoint",
    "GET /v1/log/checkpoints/{tree_size}",
    "GET /v1/log/inclusion",
    "GET /v1/log/consistency",
    "POST /v1/log/cosignatures",
    "GET /v1/log/inquiries/key",
    "GET /v1/log/inquiries/checkpoint",
    "GET /v1/log/inquiries/checkpoints/{tree_size}",
    "GET /v1/log/inquiries/inclusion",
    "GET /v1/log/inquiries/consistency",
    "GET /docs/reference",
    "POST /v1/incidents",
    "POST /v1/incidents/batch",
    "GET /v1/incidents/{incident_id}",
    "POST /v1/incidents/{incident_id}/retract",
    "POST /v1/incidents/{incident_id}/evidence",
    "POST /v1/lookups",
    "POST /v1/lookups/batch",
    "POST /v1/lookups/evidence",
    "GET /v1/lookups/{lookup_id}",
    "POST /v1/references",
    "POST /v1/references/replace",
    "POST /v1/references/remove",
    "POST /v1/references/images",
    "GET /v1/disputes",
    "POST /v1/disputes",
    "POST /v1/disputes/{dispute_id}/response",
    "POST /v1/subjects/report",
    "POST /v1/subjects/report/html",
    "POST /v1/webhooks/endpoints",
    "GET /v1/webhooks/endpoints",
    "DELETE /v1/webhooks/endpoints/{endpoint_id}",
    "POST /v1/webhooks/endpoints/{endpoint_id}/enable",
    "GET /v1/webhooks/endpoints/{endpoint_id}/deliveries",
    "POST /v1/webhooks/deliveries/{delivery_id}/redeliver",
]


def test_every_documented_operation_is_fuzzed(app: Any) -> None:
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    assert sorted(result.ok().label for result in schema.get_all_operations()) == sorted(OPERATIONS)


# schemathesis' own pytest integration (`from_fixture`) does not run under pytest 9.2, so each operation
# is driven here through its hypothesis strategy.
@pytest.mark.parametrize("label", OPERATIONS)
def test_every_operation_honours_its_documentation(
    app: Any, member: Member, operator: Member, label: str
) -> None:
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    [operation] = [r.ok() for r in schema.get_all_operations() if r.ok().label == label]
    statuses = fuzz(app, operation, key_for(label, member, operator).headers)
    assert statuses
    # The key is valid: the handlers were reached, not just the authentication in front of them.
    if label.startswith("POST /v1/"):
        assert any(status not in (401, 429) for status in statuses), statuses


def test_valid_requests_get_documented_success_answers(app: Any, member: Member, operator: Member) -> None:
    """Generated bodies rarely pass the business rules (a real phone number, a recent date), so the
    success shapes are checked here with known-good requests, through the same schemathesis checks."""
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)

    def call(method: str, path: str, **parts: Any) -> Any:
        case = schema[path][method].Case(**parts)
        who = key_for(f"{method} {path}", member, operator)
        return case.call_and_validate(headers=who.headers, checks=CHECKS)

    created = call("POST", "/v1/incidents", body=incident_body("fuzz-ok", evidence={"pdq": ["ab" * 32]}))
    assert created.status_code == 201
    incident_id = created.json()["id"]
    assert (
        call(
            "POST", "/v1/incidents", body=incident_body("fuzz-ok", evidence={"pdq": ["ab" * 32]})
        ).status_code
        == 200
    )
    assert (
        call("POST", "/v1/incidents", body=incident_body("fuzz-ok", category="return_fraud")).status_code
        == 409
    )
    batch = {"incidents": [incident_body("fuzz-b1"), incident_body("fuzz-ok"), {"external_id": "x"}]}
    assert call("POST", "/v1/incidents/batch", body=batch).status_code == 200
    assert (
        call("GET", "/v1/incidents/{incident_id}", path_parameters={"incident_id": incident_id}).status_code
        == 200
    )
    lookup = {"identifiers": [{"type": "phone", "value": "13800138000"}], "purpose": "refund_review"}
    looked = call("POST", "/v1/lookups", body=lookup)
    assert looked.status_code == 200
    lookup_id = looked.json()["lookup_id"]
    assert call("GET", "/v1/lookups/{lookup_id}", path_parameters={"lookup_id": lookup_id}).status_code == 200
    assert call("POST", "/v1/lookups/batch", body={"lookups": [lookup, {"purpose": "x"}]}).status_code == 200
    retracted = call(
        "POST", "/v1/incidents/{incident_id}/retract", path_parameters={"incident_id": incident_id},
        body={"reason": "reported_in_error"},
    )  # fmt: skip
    assert retracted.status_code == 200
    assert call("GET", "/v1/log/key").status_code == 200
    subject = {"identifiers": lookup["identifiers"]}
    assert call("POST", "/v1/subjects/report", body=subject).headers["content-type"] == ["application/json"]
    [page_type] = call("POST", "/v1/subjects/report/html", body=subject).headers["content-type"]
    assert page_type.startswith("text/html")


def test_the_document_describes_the_problem_envelope(client: Any) -> None:
    document = client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    problem = document["components"]["schemas"]["Problem"]
    assert {"type", "title", "status"} <= set(problem["required"])
    report = document["paths"]["/v1/incidents"]["post"]
    assert {"201", "200", "409", "422"} <= set(report["responses"])
    unprocessable = report["responses"]["422"]
    if "$ref" in unprocessable:
        unprocessable = document["components"]["responses"][unprocessable["$ref"].rsplit("/", 1)[1]]
    assert "application/problem+json" in unprocessable["content"]


def test_the_hot_request_bodies_keep_their_component_names(client: Any) -> None:
    """Their views pass a shared schema instance rather than the class (ledger/api/fastload.py); apispec
    must still name each component once, after its class, as partners' generated clients expect."""
    document = client.get("/openapi.json").get_json()
    for path, name in (("/v1/lookups", "Lookup"), ("/v1/incidents", "Incident")):
        body = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{name}"}
    assert not [name for name in document["components"]["schemas"] if name[-1].isdigit()]
