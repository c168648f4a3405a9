"""The API reference teaches, and its examples work.

Every worked example (ledger/api/examples.py) is sent to a real app, in the order a member would use
them, and must get its documented status and an answer of the documented shape. /docs/reference shows,
for each operation, its scope, request fields, labelled status codes and the example; no backtick is
left unrendered. `GET /` points to the docs, and /docs (Swagger UI) loads only files the package serves.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ledger.api import examples
from ledger.api.examples import EXAMPLES
from ledger.services import outbox_work
from tests.support import integrate

# Operations documented without a worked example, and why.
NO_EXAMPLE = {
    ("GET", "/metrics"): "Prometheus text, not JSON",
    ("GET", "/docs/reference"): "this page",
    ("GET", "/"): "links to the docs",
    (
        "POST",
        "/v1/log/cosignatures",
    ): "a cosignature signs the live checkpoint; docs/transparency.md shows how",
    # Webhook endpoints: registering one resolves its URL and refuses internal addresses, so a worked
    # example would need a public host the test can reach; docs/webhooks.md has them instead.
    ("POST", "/v1/webhooks/endpoints"): "docs/webhooks.md",
    ("GET", "/v1/webhooks/endpoints"): "docs/webhooks.md",
    ("DELETE", "/v1/webhooks/endpoints/{endpoint_id}"): "docs/webhooks.md",
    ("POST", "/v1/webhooks/endpoints/{endpoint_id}/enable"): "docs/webhooks.md",
    ("GET", "/v1/webhooks/endpoints/{endpoint_id}/deliveries"): "docs/webhooks.md",
    ("POST", "/v1/webhooks/deliveries/{delivery_id}/redeliver"): "docs/webhooks.md",
}
# The order a member goes in, so that each example finds what the earlier ones made.
ORDER = [
    ("POST", "/v1/incidents"),
    ("POST", "/v1/incidents/batch"),
    ("GET", "/v1/incidents/{incident_id}"),
    ("POST", "/v1/incidents/{incident_id}/evidence"),
    ("POST", "/v1/references"),
    ("POST", "/v1/references/replace"),
    ("POST", "/v1/references/remove"),
    ("POST", "/v1/references/images"),
    ("POST", "/v1/lookups"),
    ("POST", "/v1/lookups/batch"),
    ("POST", "/v1/lookups/evidence"),
    ("GET", "/v1/lookups/{lookup_id}"),
    ("POST", "/v1/disputes"),
    ("GET", "/v1/disputes"),
    ("POST", "/v1/subjects/report"),
    ("POST", "/v1/subjects/report/html"),
    ("POST", "/v1/disputes/{dispute_id}/response"),
    ("POST", "/v1/incidents/{incident_id}/retract"),
    ("GET", "/v1/log/key"),
    ("GET", "/v1/log/checkpoint"),
    ("GET", "/v1/log/checkpoints/{tree_size}"),
    ("GET", "/v1/log/inclusion"),
    ("GET", "/v1/log/consistency"),
    ("GET", "/v1/log/inquiries/key"),
    ("GET", "/v1/log/inquiries/checkpoint"),
    ("GET", "/v1/log/inquiries/checkpoints/{tree_size}"),
    ("GET", "/v1/log/inquiries/inclusion"),
    ("GET", "/v1/log/inquiries/consistency"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
]


def photo() -> bytes:
    pixels = np.random.default_rng(7).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def shape_differences(documented: Any, actual: Any, path: str = "$") -> list[str]:
    """Where the documented answer's structure (keys, nesting) differs from the real one; values aside."""
    if isinstance(documented, dict) and isinstance(actual, dict):
        out = (
            [f"{path}: documented but absent: {sorted(set(documented) - set(actual))}"]
            if set(documented) - set(actual)
            else []
        )
        if set(actual) - set(documented):
            out.append(f"{path}: returned but not documented: {sorted(set(actual) - set(documented))}")
        for key in set(documented) & set(actual):
            out.extend(shape_differences(documented[key], actual[key], f"{path}.{key}"))
        return out
    if isinstance(documented, list) and isinstance(actual, list):
        return [
            d
            for i, (a, b) in enumerate(zip(documented, actual, strict=False))
            for d in shape_differences(a, b, f"{path}[{i}]")
        ]
    if documented is None or actual is None:
        return []
    if isinstance(documented, dict | list) != isinstance(actual, dict | list):
        return [f"{path}: documented {type(documented).__name__}, returned {type(actual).__name__}"]
    return []


def test_every_operation_has_a_worked_example(client: Any) -> None:
    spec = client.get("/openapi.json").get_json()
    operations = {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert operations - set(EXAMPLES) - set(NO_EXAMPLE) == set()
    assert set(EXAMPLES) <= operations
    assert set(ORDER) == set(EXAMPLES)
    for (method, path), example in EXAMPLES.items():
        op = spec["paths"][path][method.lower()]
        assert op["x-curl"] == example.curl(method, path)
        if example.body is not None:
            assert op["requestBody"]["content"]["application/json"]["example"] == example.body
        assert example.response == op["responses"][str(example.status)]["content"][example.media]["example"]


def test_the_examples_work_as_documented(client: Any, make_platform: Any, rt: Any) -> None:
    keys = {
        "report": make_platform("shop", "report,lookup"),
        "lookup": make_platform("refunds", "lookup"),
        "dispute": make_platform("operator", "dispute"),
    }
    ids = {
        "incident_id": examples.INCIDENT_ID,
        "lookup_id": examples.LOOKUP_ID,
        "dispute_id": examples.DISPUTE_ID,
        "tree_size": 1,
    }
    image = photo()
    for method, template in ORDER:
        example = EXAMPLES[(method, template)]
        path = template.format(**ids) + (f"?{example.query}" if example.query else "")
        body = json.loads(json.dumps(example.body).replace(examples.INCIDENT_ID, ids["incident_id"]))
        headers = keys[example.scope].headers if example.scope else {}
        if example.multipart:
            data = {}
            for name, value in example.multipart.items():
                if value.startswith("@"):
                    data[name] = (io.BytesIO(image), value[1:], "image/png")
                else:
                    data[name] = (
                        io.BytesIO(value.split(";type=")[0].encode()),
                        f"{name}.json",
                        "application/json",
                    )
            response = client.post(path, data=data, headers=headers, content_type="multipart/form-data")
        elif method == "GET":
            response = client.get(path, headers=headers)
        else:
            response = client.post(path, json=body, headers=headers)
        assert response.status_code == example.status, (method, template, response.get_data(as_text=True))
        if example.media == "text/html":
            assert response.mimetype == "text/html"
            assert response.get_data(as_text=True).startswith(example.response.rstrip("…"))
            continue
        answer = response.get_json()
        differences = shape_differences(example.response, answer)
        assert not differences, f"ledger/api/examples.py, {method} {template}: {differences}"
        if template == "/v1/incidents":
            ids["incident_id"] = answer["id"]
            outbox_work.flush_outbox(rt)
            integrate(rt)  # the sequencer: the first report is leaf 0 of a checkpoint of size 1
        elif template == "/v1/incidents/{incident_id}/retract":
            integrate(rt)  # and everything since, before the log's own examples
        elif template == "/v1/lookups":
            ids["lookup_id"] = answer["lookup_id"]
            integrate(rt)  # the first lookup is leaf 0 of an inquiry checkpoint of size 1
        elif template == "/v1/disputes":
            ids["dispute_id"] = answer["disputes"][0]["id"]


def visible(page: str) -> str:
    without_pre = re.sub(r"<pre[^>]*>.*?</pre>", " ", page, flags=re.S)
    return re.sub(r"<[^>]+>", " ", without_pre)


def test_the_reference_page_shows_what_to_send(client: Any) -> None:
    page = client.get("/docs/reference").get_data(as_text=True)
    assert "`" not in visible(page), "a backtick was shown literally"
    sections = dict(re.findall(r'<section class="op" id="([^"]+)">(.*?)</section>', page, flags=re.S))
    report = sections["post-v1-incidents"]
    assert 'Requires scope <span class="scope">report</span>' in report
    for field in ("external_id", "identifiers[].type", "identifiers[].value", "amount.value", "occurred_at"):
        assert f"<code>{field}</code>" in report, field
    assert "<b>201</b> Created" in report
    assert "<b>422</b> Unprocessable Content" in report or "<b>422</b> Unprocessable Entity" in report
    assert "curl -sS -X POST http://127.0.0.1:8000/v1/incidents" in report
    assert (
        "&#34;Authorization: Bearer $LEDGER_KEY&#34;" in report
        or '"Authorization: Bearer $LEDGER_KEY"' in report
    )
    assert "answers <b>201 Created</b>" in report
    assert "Requires scope" in sections["post-v1-subjects-report"]
    assert 'scope">dispute<' in sections["post-v1-subjects-report"]
    assert "No key needed" in sections["get-v1-log-checkpoint"]
    # Every status code of every operation carries its label.
    for code in re.findall(r"<td><b>(\d{3})</b>([^<]*)</td>", page):
        assert code[1].strip(), code
    # The error vocabulary's table is rendered as a table.
    assert "<td><code>https://ledger.example/problems/not-found</code></td>" in page


def test_root_points_to_the_docs(client: Any) -> None:
    answer = client.get("/").get_json()
    assert answer["docs"]["reference"] == "/docs/reference"
    page = client.get("/", headers={"Accept": "text/html"})
    assert page.mimetype == "text/html"
    assert 'href="/docs/reference"' in page.get_data(as_text=True)


def test_swagger_ui_is_served_by_the_package(client: Any) -> None:
    page = client.get("/docs").get_data(as_text=True)
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources
    for source in sources:
        assert source.startswith("/static/vendor/swagger-ui-dist/"), source
        assert client.get(source).status_code == 200, source
    assert '"validatorUrl": null' in page
    assert "cdn" not in page.lower()


@pytest.mark.parametrize(
    ("text", "html"),
    [
        ("use `tier`", "<p>use <code>tier</code></p>"),
        ("a <b> & `x<y`", "<p>a &lt;b&gt; &amp; <code>x&lt;y</code></p>"),
        (
            "intro:\n- one `a`\n- two\n  more",
            "<p>intro:</p>\n<ul><li>one <code>a</code></li><li>two more</li></ul>",
        ),
        (
            "| a | b |\n|---|---|\n| `1` | 2 |",
            "<table><tr><th>a</th><th>b</th></tr><tr><td><code>1</code></td><td>2</td></tr></table>",
        ),
    ],
)
def test_markdown_subset(text: str, html: str) -> None:
    from ledger.api.reference import markdown

    assert str(markdown(text)) == html
