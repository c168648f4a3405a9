"""The served OpenAPI document as other tools read it: valid, with stable operation ids, patterns that mean
the same in every regex engine, typed nullable and nested fields, and one media type per operation.

tests/e2e/test_generated_client.py generates a client from the same document and runs the member flow
through it; this file checks the document's own properties, fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from openapi_spec_validator import validate

from ledger.api import schemas
from ledger.domain.policy import load_policy
from tests.support import Member, incident_body

# Generated clients name their methods after these: renaming one breaks every member's code.
OPERATION_IDS = {
    ("get", "/"): "index",
    ("get", "/healthz"): "health",
    ("get", "/readyz"): "readiness",
    ("get", "/metrics"): "metrics",
    ("get", "/v1/log/checkpoint"): "get_log_checkpoint",
    ("get", "/v1/log/checkpoints/{tree_size}"): "get_log_checkpoint_at",
    ("get", "/v1/log/key"): "get_log_key",
    ("get", "/v1/log/inclusion"): "get_inclusion_proof",
    ("get", "/v1/log/consistency"): "get_consistency_proof",
    ("get", "/v1/log/inquiries/checkpoint"): "get_inquiry_log_checkpoint",
    ("get", "/v1/log/inquiries/checkpoints/{tree_size}"): "get_inquiry_log_checkpoint_at",
    ("get", "/v1/log/inquiries/key"): "get_inquiry_log_key",
    ("get", "/v1/log/inquiries/inclusion"): "get_inquiry_inclusion_proof",
    ("get", "/v1/log/inquiries/consistency"): "get_inquiry_consistency_proof",
    ("post", "/v1/log/cosignatures"): "add_cosignature",
    ("get", "/docs/reference"): "api_reference",
    ("post", "/v1/incidents"): "report_incident",
    ("post", "/v1/incidents/batch"): "report_incident_batch",
    ("get", "/v1/incidents/{incident_id}"): "get_incident",
    ("post", "/v1/incidents/{incident_id}/retract"): "retract_incident",
    ("post", "/v1/incidents/{incident_id}/evidence"): "add_incident_evidence",
    ("post", "/v1/lookups"): "lookup",
    ("post", "/v1/lookups/batch"): "lookup_batch",
    ("post", "/v1/lookups/evidence"): "lookup_with_evidence",
    ("post", "/v1/references"): "add_references",
    ("post", "/v1/references/replace"): "replace_references",
    ("post", "/v1/references/remove"): "remove_references",
    ("post", "/v1/references/images"): "add_reference_images",
    ("get", "/v1/lookups/{lookup_id}"): "get_lookup",
    ("get", "/v1/disputes"): "list_disputes",
    ("post", "/v1/disputes"): "open_dispute",
    ("post", "/v1/disputes/{dispute_id}/response"): "respond_to_dispute",
    ("post", "/v1/subjects/report"): "subject_report",
    ("post", "/v1/subjects/report/html"): "subject_report_html",
    ("post", "/v1/webhooks/endpoints"): "create_webhook_endpoint",
    ("get", "/v1/webhooks/endpoints"): "list_webhook_endpoints",
    ("delete", "/v1/webhooks/endpoints/{endpoint_id}"): "delete_webhook_endpoint",
    ("post", "/v1/webhooks/endpoints/{endpoint_id}/enable"): "enable_webhook_endpoint",
    ("get", "/v1/webhooks/endpoints/{endpoint_id}/deliveries"): "list_webhook_deliveries",
    ("post", "/v1/webhooks/deliveries/{delivery_id}/redeliver"): "redeliver_webhook",
}
METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
def document(client: Any) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return dict(response.get_json())


def walk(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every JSON object in the document, with its path."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}/{index}")


def properties(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for name, schema in document["components"]["schemas"].items():
        for prop, definition in schema.get("properties", {}).items():
            yield name, prop, definition


def resolve(document: dict[str, Any], definition: dict[str, Any]) -> dict[str, Any]:
    """A property's own schema: through `allOf: [$ref]` and `$ref` to the component."""
    if "allOf" in definition and len(definition["allOf"]) == 1:
        definition = definition["allOf"][0]
    if "$ref" in definition:
        return dict(document["components"]["schemas"][definition["$ref"].rsplit("/", 1)[1]])
    return definition


def test_the_document_validates(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.0.3"
    validate(document)  # raises with the first error


def test_every_operation_has_its_stable_operation_id(document: dict[str, Any]) -> None:
    found = {
        (method, path): operation.get("operationId")
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }
    assert found == OPERATION_IDS
    assert len(set(found.values())) == len(found)


def test_patterns_are_anchored_the_same_in_every_engine(document: dict[str, Any]) -> None:
    patterns = [
        (path, node["pattern"]) for path, node in walk(document) if isinstance(node.get("pattern"), str)
    ]
    assert len(patterns) >= 3  # currency, identifier token, evidence hash
    for path, pattern in patterns:
        assert pattern.startswith("^"), path
        assert pattern.endswith("$"), path
        assert "\\A" not in pattern, path
        assert "\\Z" not in pattern, path


def test_nullable_nested_objects_keep_their_type(document: dict[str, Any]) -> None:
    for path, node in walk(document):
        for alternative in node.get("anyOf", []):
            # apispec's 3.0 default, which generators read as "any object"
            assert alternative != {"type": "object", "nullable": True}, path
    adverse = document["components"]["schemas"]["LookupResult"]["properties"]["adverse_action"]
    assert adverse["allOf"] == [{"$ref": "#/components/schemas/AdverseAction"}]
    assert adverse["nullable"] is True


def test_batch_results_are_typed_per_item(document: dict[str, Any]) -> None:
    component = document["components"]["schemas"]
    for result, success, key in (
        ("IncidentBatchResult", "IncidentBatchCreated", "incident"),
        ("LookupBatchResult", "LookupBatchAnswered", "lookup"),
    ):
        items = component[result]["properties"]["results"]["items"]
        problem = result.replace("Result", "Problem")
        refs = [f"#/components/schemas/{success}", f"#/components/schemas/{problem}"]
        assert [ref["$ref"] for ref in items["oneOf"]] == refs
        assert items["discriminator"] == {
            "propertyName": "kind",
            "mapping": {key: refs[0], "problem": refs[1]},
        }
        for name, kind in ((success, key), (problem, "problem")):
            assert component[name]["properties"]["kind"]["enum"] == [kind]
            assert {"kind", "index", "status"} <= set(component[name]["required"])
        assert key in component[success]["required"]
        assert "problem" in component[problem]["required"]
    # The request items too: each is documented as the schema it is loaded with.
    batch = component["IncidentBatch"]["properties"]["incidents"]["items"]
    assert batch == {"$ref": "#/components/schemas/Incident"}
    assert component["LookupBatch"]["properties"]["lookups"]["items"] == {
        "$ref": "#/components/schemas/Lookup"
    }


def test_times_are_date_times(document: dict[str, Any]) -> None:
    times = [
        (name, prop, definition)
        for name, prop, definition in properties(document)
        if prop.endswith("_at") or prop in ("at", "respond_by")
    ]
    assert len(times) >= 15
    for name, prop, definition in times:
        assert definition.get("type") == "string", (name, prop)
        assert definition.get("format") == "date-time", (name, prop)


def test_closed_sets_are_enums_on_outputs_too(document: dict[str, Any]) -> None:
    enum_props = {"status", "tier", "category", "confirmation", "purpose", "basis", "kind", "type", "outcome"}
    # Free text that happens to share a name: a problem's HTTP status and type URI, a legal citation.
    free = {("Problem", "type"), ("Problem", "status"), ("ProblemItem", "type"), ("ProblemItem", "status")}
    free |= {("FreeReports", "basis")}
    checked = 0
    for name, prop, definition in properties(document):
        if prop in enum_props and (name, prop) not in free:
            assert "enum" in resolve(document, definition), (name, prop)
            checked += 1
        if prop == "restrictions":
            assert resolve(document, definition["items"])["enum"] == list(schemas.RESTRICTIONS)
            checked += 1
    assert checked >= 30
    for output in (
        "IncidentSchemaOut",
        "ReportIncident",
        "LookupResult",
        "ReportScore",
        "DisputeForReporter",
    ):
        assert output in document["components"]["schemas"]


def test_the_shipped_policy_stays_within_the_documented_enums() -> None:
    policy = load_policy()
    assert {tier.name for tier in policy.tiers} <= set(schemas.TIERS)
    assert {r for tier in policy.tiers for r in tier.restrictions} <= set(schemas.RESTRICTIONS)


def test_each_operation_answers_one_media_type_per_status(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            for status, response in operation["responses"].items():
                content = response.get("content", {})
                assert len(content) <= 1, (method, path, status, sorted(content))
    report = document["paths"]["/v1/subjects/report"]["post"]["responses"]["200"]["content"]
    assert list(report) == ["application/json"]
    page = document["paths"]["/v1/subjects/report/html"]["post"]["responses"]["200"]["content"]
    assert list(page) == ["text/html"]
    assert page["text/html"]["schema"] == {"type": "string"}


def test_the_server_refuses_what_ecmascript_refuses(client: Any, alpha: Member) -> None:
    """Python's `$` would accept the trailing newline; the documented pattern does not, and neither does the
    server, on the fast path (fastload), on marshmallow's, and inside a batch."""
    cases = [
        ("amount.currency", incident_body("nl-1", amount={"value": 100, "currency": "CNY\n"})),
        ("amount.currency", incident_body("nl-2", amount={"value": 100, "currency": "ACNYZ"})),
        ("evidence.pdq.0", incident_body("nl-3", evidence={"pdq": ["ab" * 32 + "\n"]})),
        (
            "identifiers.0.token",
            incident_body("nl-4", identifiers=[{"type": "phone", "token": "cd" * 32 + "\n"}]),
        ),
    ]
    for field, body in cases:
        response = client.post("/v1/incidents", json=body, headers=alpha.headers)
        assert response.status_code == 422, (field, response.get_json())
        assert field in response.get_json()["errors"], response.get_json()
    batch = client.post(
        "/v1/incidents/batch", json={"incidents": [b for _, b in cases]}, headers=alpha.headers
    )
    assert [r["status"] for r in batch.get_json()["results"]] == [422] * len(cases)
    fine = client.post(
        "/v1/incidents",
        json=incident_body("nl-ok", amount={"value": 100, "currency": "CNY"}),
        headers=alpha.headers,
    )
    assert fine.status_code == 201, fine.get_json()
