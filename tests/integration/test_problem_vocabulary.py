"""One problem vocabulary: every kind of error, down every path that can produce it, gets one `type` and
one `title`, whichever layer noticed it (werkzeug routing, webargs and marshmallow, the domain, the
error handlers). A client may switch on `type`.

The table below is the test: each row names the kind it expects, the path and what is wrong with the
request. The same bad phone down every path that takes identifiers gets the same reason word for word.
The OpenAPI document names every type, and docs/errors.md shows exactly the vocabulary's table.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ledger.api.problems import PROBLEM_TYPE, vocabulary_markdown
from ledger.errors import PROBLEM_TYPES, LedgerError
from ledger.services import platforms as platform_service
from tests.support import Member, incident_body

ROOT = Path(__file__).resolve().parents[2]
PHONE = {"type": "phone", "value": "13800138000"}
BAD_PHONE = {"type": "phone", "value": "call me maybe"}
SHORT_PHONE = {"type": "phone", "value": "1380013800"}
MISSING = str(uuid.UUID(int=7))


class Ctx:
    def __init__(
        self, client: Any, reporter: Member, operator: Member, incident_id: str, dispute_id: str
    ) -> None:
        self.client = client
        self.reporter = reporter
        self.operator = operator
        self.incident_id = incident_id
        self.dispute_id = dispute_id

    def post(self, path: str, body: Any = None, who: Member | None = None, **kwargs: Any) -> Any:
        headers = {**(who.headers if who else {}), **kwargs.pop("headers", {})}
        if body is not None:
            kwargs["json"] = body
        return self.client.post(path, headers=headers, **kwargs)

    def raw(
        self, path: str, data: bytes | str, who: Member | None, content_type: str = "application/json"
    ) -> Any:
        headers = {**(who.headers if who else {}), "Content-Type": content_type}
        return self.client.post(path, data=data, headers=headers)

    def get(self, path: str, who: Member | None = None) -> Any:
        return self.client.get(path, headers=who.headers if who else {})


@pytest.fixture
def ctx(client: Any, make_platform: Any) -> Ctx:
    reporter = make_platform("shop", "report,lookup")
    operator = make_platform("operator", "dispute")
    created = client.post("/v1/incidents", json=incident_body("v-1"), headers=reporter.headers)
    assert created.status_code == 201, created.get_json()
    opened = client.post(
        "/v1/disputes",
        json={"identifiers": [PHONE], "incident_id": created.get_json()["id"]},
        headers=operator.headers,
    )
    assert opened.status_code == 201, opened.get_json()
    return Ctx(client, reporter, operator, created.get_json()["id"], opened.get_json()["disputes"][0]["id"])


def lookup_body(*identifiers: dict[str, str]) -> dict[str, Any]:
    return {"identifiers": list(identifiers), "purpose": "refund_review"}


def tiny_png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


# Paths that take identifiers, with a body builder: the same bad phone goes down each of them.
IDENTIFIER_PATHS: list[tuple[str, str, Callable[[Ctx, dict[str, str]], Any]]] = [
    (
        "report",
        "report",
        lambda c, i: c.post("/v1/incidents", incident_body("p-1", identifiers=[i]), c.reporter),
    ),
    ("lookup", "lookup", lambda c, i: c.post("/v1/lookups", lookup_body(i), c.reporter)),
    (
        "dispute",
        "dispute",
        lambda c, i: c.post("/v1/disputes", {"identifiers": [i], "all_entries": True}, c.operator),
    ),
    (
        "subject-report",
        "dispute",
        lambda c, i: c.post("/v1/subjects/report", {"identifiers": [i]}, c.operator),
    ),
    (
        "lookup-evidence",
        "lookup",
        lambda c, i: c.client.post(
            "/v1/lookups/evidence",
            data={
                "request": (io.BytesIO(json.dumps(lookup_body(i)).encode()), "r.json", "application/json"),
                "images": (io.BytesIO(tiny_png()), "a.png", "image/png"),
            },
            headers=c.reporter.headers,
            content_type="multipart/form-data",
        ),
    ),
]


def _row(kind: str, name: str, send: Callable[[Ctx], Any]) -> Any:
    return pytest.param(kind, send, id=f"{kind}:{name}")


CASES = [
    # -- the body is not JSON, or too deep to read --------------------------------------------------------
    *(
        _row(
            "invalid-json", f"{path} not json", lambda c, p=path, w=who: c.raw(p, "{not json", getattr(c, w))
        )
        for path, who in (
            ("/v1/incidents", "reporter"),
            ("/v1/incidents/batch", "reporter"),
            ("/v1/lookups", "reporter"),
            ("/v1/lookups/batch", "reporter"),
            ("/v1/disputes", "operator"),
            ("/v1/subjects/report", "operator"),
        )
    ),
    _row(
        "invalid-json",
        "nested too deep",
        lambda c: c.raw("/v1/lookups", "[" * 100_000 + "]" * 100_000, c.reporter),
    ),
    # -- validation: the schema's checks and the domain's checks are one kind -----------------------------
    _row("validation", "report: schema", lambda c: c.post("/v1/incidents", {"external_id": "x"}, c.reporter)),
    _row(
        "validation",
        "report: amount not an integer",
        lambda c: c.post(
            "/v1/incidents", incident_body("a", amount={"value": 1.5, "currency": "CNY"}), c.reporter
        ),
    ),
    _row(
        "validation",
        "batch: schema",
        lambda c: c.post("/v1/incidents/batch", {"incidents": "no"}, c.reporter),
    ),
    _row(
        "validation",
        "lookup: schema",
        lambda c: c.post("/v1/lookups", {"purpose": "refund_review"}, c.reporter),
    ),
    _row("validation", "lookup batch: schema", lambda c: c.post("/v1/lookups/batch", {}, c.reporter)),
    _row("validation", "dispute: schema", lambda c: c.post("/v1/disputes", {"identifiers": []}, c.operator)),
    _row(
        "validation",
        "dispute: domain",
        lambda c: c.post("/v1/disputes", {"identifiers": [PHONE]}, c.operator),
    ),
    _row(
        "validation",
        "respond: schema",
        lambda c: c.post(f"/v1/disputes/{c.dispute_id}/response", {"outcome": "maybe"}, c.reporter),
    ),
    _row(
        "validation",
        "respond: domain",
        lambda c: c.post(f"/v1/disputes/{c.dispute_id}/response", {"outcome": "upheld"}, c.reporter),
    ),
    _row(
        "validation",
        "retract: schema",
        lambda c: c.post(f"/v1/incidents/{c.incident_id}/retract", {"reason": "bored"}, c.reporter),
    ),
    _row("validation", "disputes list: query", lambda c: c.get("/v1/disputes?status=bogus", c.reporter)),
    _row(
        "validation",
        "subject report page: query",
        lambda c: c.post("/v1/subjects/report/html?lang=fr", {"identifiers": [PHONE]}, c.operator),
    ),
    _row(
        "validation",
        "evidence: no image",
        lambda c: c.client.post(
            f"/v1/incidents/{c.incident_id}/evidence",
            data={},
            headers=c.reporter.headers,
            content_type="multipart/form-data",
        ),
    ),
    _row(
        "validation",
        "evidence: not an image",
        lambda c: c.client.post(
            f"/v1/incidents/{c.incident_id}/evidence",
            data={"images": (io.BytesIO(b"not an image"), "a.png", "image/png")},
            headers=c.reporter.headers,
            content_type="multipart/form-data",
        ),
    ),
    _row(
        "validation",
        "lookup evidence: request part not JSON",
        lambda c: c.client.post(
            "/v1/lookups/evidence",
            data={
                "request": (io.BytesIO(b"{"), "r.json", "application/json"),
                "images": (io.BytesIO(tiny_png()), "a.png", "image/png"),
            },
            headers=c.reporter.headers,
            content_type="multipart/form-data",
        ),
    ),
    *(
        _row("validation", f"{name}: bad phone", lambda c, s=send: s(c, BAD_PHONE))
        for name, _, send in IDENTIFIER_PATHS
    ),
    # -- authentication and scope --------------------------------------------------------------------------
    _row("unauthorized", "report: no key", lambda c: c.post("/v1/incidents", incident_body("u"))),
    _row(
        "unauthorized",
        "lookup: unknown key",
        lambda c: c.post("/v1/lookups", lookup_body(PHONE), headers={"Authorization": "Bearer nope"}),
    ),
    _row(
        "unauthorized",
        "disputes: not bearer",
        lambda c: c.client.get("/v1/disputes", headers={"Authorization": "Basic eDp5"}),
    ),
    _row(
        "forbidden",
        "report with a dispute key",
        lambda c: c.post("/v1/incidents", incident_body("f"), c.operator),
    ),
    _row(
        "forbidden",
        "subject report with a report key",
        lambda c: c.post("/v1/subjects/report", {"identifiers": [PHONE]}, c.reporter),
    ),
    # -- not found: routing and the domain are one kind --------------------------------------------------
    _row("not-found", "no such path", lambda c: c.get("/v1/nothing-here", c.reporter)),
    _row("not-found", "not a uuid in the path", lambda c: c.get("/v1/incidents/not-a-uuid", c.reporter)),
    _row("not-found", "unknown incident", lambda c: c.get(f"/v1/incidents/{MISSING}", c.reporter)),
    _row("not-found", "unknown lookup", lambda c: c.get(f"/v1/lookups/{MISSING}", c.reporter)),
    _row(
        "not-found",
        "retract unknown incident",
        lambda c: c.post(f"/v1/incidents/{MISSING}/retract", {"reason": "reported_in_error"}, c.reporter),
    ),
    _row(
        "not-found",
        "respond to unknown dispute",
        lambda c: c.post(f"/v1/disputes/{MISSING}/response", {"outcome": "retracted"}, c.reporter),
    ),
    _row(
        "not-found",
        "dispute an incident about someone else",
        lambda c: c.post(
            "/v1/disputes",
            {"identifiers": [{"type": "phone", "value": "13900139000"}], "incident_id": c.incident_id},
            c.operator,
        ),
    ),
    # -- the rest ------------------------------------------------------------------------------------------
    _row(
        "method-not-allowed",
        "DELETE incidents",
        lambda c: c.client.delete("/v1/incidents", headers=c.reporter.headers),
    ),
    _row(
        "conflict",
        "dispute twice",
        lambda c: c.post("/v1/disputes", {"identifiers": [PHONE], "incident_id": c.incident_id}, c.operator),
    ),
    _row(
        "conflict",
        "reuse external_id with another body",
        lambda c: c.post("/v1/incidents", incident_body("v-1", category="return_fraud"), c.reporter),
    ),
    _row(
        "payload-too-large",
        "lookup body over the limit",
        lambda c: c.raw("/v1/lookups", json.dumps({"x": "a" * 1_100_000}), c.reporter),
    ),
    _row(
        "unsupported-media-type",
        "report as text",
        lambda c: c.raw("/v1/incidents", "{}", c.reporter, "text/plain"),
    ),
    _row(
        "unsupported-media-type",
        "evidence as JSON",
        lambda c: c.post(f"/v1/incidents/{c.incident_id}/evidence", {}, c.reporter),
    ),
]


@pytest.mark.parametrize(("kind", "send"), CASES)
def test_each_kind_has_one_type_and_title_down_every_path(
    ctx: Ctx, kind: str, send: Callable[[Ctx], Any]
) -> None:
    expected = PROBLEM_TYPES[kind]
    response = send(ctx)
    body = response.get_json(force=True)
    assert response.status_code == expected.status, body
    assert response.mimetype == PROBLEM_TYPE
    assert (body["type"], body["title"], body["status"]) == (expected.uri, expected.title, expected.status)


def test_rate_limited_speaks_the_vocabulary(ctx: Ctx, app: Any, rt: Any, make_platform: Any) -> None:
    hasty = make_platform("hasty", "lookup")
    platform_service.set_rate_limit(rt, "hasty", 1, 1)
    statuses = [ctx.post("/v1/lookups", lookup_body(PHONE), hasty) for _ in range(3)]
    refused = statuses[-1].get_json()
    kind = PROBLEM_TYPES["rate-limited"]
    assert (refused["type"], refused["title"], refused["status"]) == (kind.uri, kind.title, 429)


def test_an_unexpected_error_speaks_the_vocabulary(settings: Any, clean: None) -> None:
    from ledger import create_app

    app = create_app(settings)

    def boom() -> Any:
        raise RuntimeError("a bug")

    app.add_url_rule("/boom-for-the-test", "boom_for_the_test", boom)
    try:
        crashed = app.test_client().get("/boom-for-the-test")
    finally:
        app.extensions["ledger.runtime"].close()
    kind = PROBLEM_TYPES["internal"]
    assert crashed.status_code == 500
    assert (crashed.get_json()["type"], crashed.get_json()["title"]) == (kind.uri, kind.title)
    assert "a bug" not in crashed.get_data(as_text=True)


@pytest.mark.parametrize("bad", [BAD_PHONE, SHORT_PHONE], ids=["unparseable", "one-digit-short"])
def test_the_same_bad_phone_gets_the_same_reason_on_every_path(ctx: Ctx, bad: dict[str, str]) -> None:
    reasons = {}
    for name, _, send in IDENTIFIER_PATHS:
        body = send(ctx, bad).get_json()
        assert body["type"] == PROBLEM_TYPES["validation"].uri, (name, body)
        [(field, reason)] = body["errors"].items()
        assert field.endswith("identifiers.0.value"), (name, field)
        reasons[name] = reason
    batch = ctx.post("/v1/lookups/batch", {"lookups": [lookup_body(bad)]}, ctx.reporter).get_json()
    reasons["lookup-batch"] = batch["results"][0]["problem"]["errors"]["identifiers.0.value"]
    report_batch = ctx.post(
        "/v1/incidents/batch", {"incidents": [incident_body("b-1", identifiers=[bad])]}, ctx.reporter
    )
    reasons["report-batch"] = report_batch.get_json()["results"][0]["problem"]["errors"][
        "identifiers.0.value"
    ]
    assert {json.dumps(r) for r in reasons.values()} == {json.dumps(["not a valid phone number"])}, reasons


def test_batch_items_carry_the_same_vocabulary(ctx: Ctx) -> None:
    result = ctx.post(
        "/v1/lookups/batch", {"lookups": [{"purpose": "refund_review"}]}, ctx.reporter
    ).get_json()
    problem = result["results"][0]["problem"]
    assert (problem["type"], problem["title"]) == (
        PROBLEM_TYPES["validation"].uri,
        PROBLEM_TYPES["validation"].title,
    )


def test_every_type_is_in_the_openapi_document_and_the_docs_table(client: Any) -> None:
    spec = client.get("/openapi.json").get_json()
    documented = spec["components"]["schemas"]["Problem"]["properties"]["type"]["enum"]
    assert set(documented) >= {p.uri for p in PROBLEM_TYPES.values()}
    assert vocabulary_markdown() in spec["info"]["description"]
    docs = (ROOT / "docs" / "errors.md").read_text()
    assert vocabulary_markdown() in docs, (
        "regenerate the table in docs/errors.md from ledger.errors.PROBLEM_TYPES"
    )
    for p in PROBLEM_TYPES.values():
        examples = spec["components"]["responses"]
        assert any(
            p.slug in r.get("content", {}).get(PROBLEM_TYPE, {}).get("examples", {})
            for r in examples.values()
        ), p.slug


def test_a_subclass_cannot_give_a_kind_a_second_title() -> None:
    with pytest.raises(TypeError, match="disagrees"):

        class Odd(LedgerError):
            type_slug = "not-found"
            title = "Nothing here"
