"""The API reference a member reads at /docs/reference: what to send, with which key, and what comes back.

It is rendered on the server from the OpenAPI document, so it works offline and cannot drift from the
contract. For each operation it shows the required scope, the request body's fields (resolved through
`$ref`s into one table with dotted paths), every status code with its meaning, and one worked example
(ledger/api/examples.py) as a `curl` line and a response body. Descriptions are written in a small
Markdown subset (code spans, bold, lists, tables, paragraphs), which `markdown` renders here rather than
showing backticks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from apispec import BasePlugin
from markupsafe import Markup, escape

from ledger.api.examples import EXAMPLES

METHODS = ("get", "post", "put", "patch", "delete")


class ExamplesPlugin(BasePlugin):
    """Puts each operation's worked example into the OpenAPI document as request and response examples."""

    def operation_helper(
        self, path: str | None = None, operations: dict[str, Any] | None = None, **_: Any
    ) -> None:
        for method, operation in (operations or {}).items():
            example = EXAMPLES.get((method.upper(), path or ""))
            if example is None:
                continue
            if example.body is not None:
                content = operation.get("requestBody", {}).get("content", {}).get("application/json")
                if content is not None:
                    content["example"] = example.body
            responses = operation.get("responses", {})
            # flask-smorest keys its responses by int, manual `responses` docs by str: set both.
            for key in (example.status, str(example.status)):
                response = responses.get(key)
                if not isinstance(response, dict):
                    continue
                if "content" in response:
                    response["content"].setdefault(example.media, {})["example"] = example.response
                else:
                    response["example"] = example.response
            operation["x-curl"] = example.curl(method.upper(), path or "")


_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*")


def _inline(text: str) -> str:
    out, last = [], 0
    for match in _INLINE.finditer(text):
        out.append(str(escape(text[last : match.start()])))
        if match.group(1) is not None:
            out.append(f"<code>{escape(match.group(1))}</code>")
        else:
            out.append(f"<strong>{escape(match.group(2))}</strong>")
        last = match.end()
    out.append(str(escape(text[last:])))
    return "".join(out)


def inline_markdown(text: str | None) -> Markup:
    """One line of the Markdown subset (code spans, bold) as safe HTML, for a heading or a summary."""
    return Markup(_inline(" ".join((text or "").split())))  # noqa: S704 (_inline escapes every text piece)


def markdown(text: str | None) -> Markup:
    """The Markdown subset our descriptions use, as safe HTML: paragraphs, `- ` lists, pipe tables, code
    spans and bold. Everything else is escaped text."""
    if not text:
        return Markup("")
    html: list[str] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = [line.strip() for line in block.strip().splitlines()]
        if all(line.startswith("|") for line in lines) and len(lines) >= 2:
            rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
            head, body = rows[0], [r for r in rows[1:] if not all(set(c) <= set("-: ") for c in r)]
            html.append(
                "<table><tr>"
                + "".join(f"<th>{_inline(c)}</th>" for c in head)
                + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body)
                + "</table>"
            )
        else:
            prose: list[str] = []
            items: list[str] = []
            for line in lines:
                if line.startswith("- "):
                    items.append(line[2:])
                elif items:
                    items[-1] += " " + line  # a list item's continuation line
                else:
                    prose.append(line)
            if prose:
                html.append(f"<p>{_inline(' '.join(prose))}</p>")
            if items:
                html.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
    return Markup("\n".join(html))  # noqa: S704 (every text piece went through escape() in _inline)


def _resolve(spec: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    seen = 0
    while "$ref" in node and seen < 20:
        *_, kind, name = node["$ref"].split("/")
        node = spec["components"][kind][name]
        seen += 1
    if "allOf" in node and len(node["allOf"]) == 1:
        return _resolve(spec, node["allOf"][0])
    return node


def _type_of(spec: Mapping[str, Any], schema: Mapping[str, Any]) -> str:
    schema = _resolve(spec, schema)
    kind = schema.get("type", "object" if "properties" in schema else "")
    if kind == "array":
        return f"array of {_type_of(spec, schema.get('items', {}))}"
    fmt = schema.get("format")
    return f"{kind} ({fmt})" if fmt else str(kind)


def _constraints(schema: Mapping[str, Any]) -> str:
    notes = []
    if "enum" in schema:
        notes.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    for key, word in (
        ("minimum", "≥"),
        ("maximum", "≤"),
        ("minLength", "length ≥"),
        ("maxLength", "length ≤"),
    ):
        if key in schema:
            notes.append(f"{word} {schema[key]}")
    for key, word in (("minItems", "items ≥"), ("maxItems", "items ≤")):
        if key in schema:
            notes.append(f"{word} {schema[key]}")
    if "pattern" in schema:
        notes.append(f"pattern `{schema['pattern']}`")
    return "; ".join(notes)


def _join(meaning: str, constraints: str) -> str:
    """A field's meaning, then its constraints as a sentence of their own."""
    meaning = meaning.strip()
    if meaning and constraints and meaning[-1] not in ".;:)":
        meaning += "."
    return " ".join(part for part in (meaning, constraints) if part)


def fields(
    spec: Mapping[str, Any], schema: Mapping[str, Any], prefix: str = "", depth: int = 0
) -> list[dict[str, Any]]:
    """The schema's fields as rows (dotted path, type, required, description with constraints)."""
    schema = _resolve(spec, schema)
    rows: list[dict[str, Any]] = []
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        if prop.get("readOnly"):
            continue
        resolved = _resolve(spec, prop)
        path = f"{prefix}{name}"
        description = _join(
            resolved.get("description", "") or prop.get("description", ""), _constraints(resolved)
        )
        rows.append(
            {
                "path": path,
                "type": _type_of(spec, prop),
                "required": name in required,
                "description": markdown(description),
            }
        )
        if depth < 4:
            if "properties" in resolved:
                rows.extend(fields(spec, resolved, f"{path}.", depth + 1))
            elif resolved.get("type") == "array" and "properties" in _resolve(
                spec, resolved.get("items", {})
            ):
                rows.extend(fields(spec, resolved["items"], f"{path}[].", depth + 1))
    return rows


def operations(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every operation as the reference page shows it."""
    out = []
    for path, item in spec["paths"].items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            body_schema = None
            body_media = None
            for media, content in op.get("requestBody", {}).get("content", {}).items():
                body_schema, body_media = content.get("schema"), media
                break
            responses = []
            for code, response in sorted(
                op.get("responses", {}).items(), key=lambda kv: (kv[0] == "default", kv[0])
            ):
                resolved = _resolve(spec, response)
                label = "any error" if code == "default" else HTTPStatus(int(code)).phrase
                responses.append(
                    {"code": code, "label": label, "description": markdown(resolved.get("description"))}
                )
            example = EXAMPLES.get((method.upper(), path))
            out.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "anchor": f"{method}-{re.sub(r'[^a-z0-9]+', '-', path.lower()).strip('-')}",
                    "summary": op.get("summary", ""),
                    "description": markdown(op.get("description")),
                    "scope": op.get("x-required-scope"),
                    "body_media": body_media,
                    "fields": fields(spec, body_schema) if body_schema else [],
                    "parameters": [
                        {
                            "name": p.get("name"),
                            "in": p.get("in"),
                            "required": p.get("required", False),
                            "type": _type_of(spec, p.get("schema", {})),
                            "description": markdown(
                                _join(
                                    p.get("description", ""),
                                    _constraints(_resolve(spec, p.get("schema", {}))),
                                )
                            ),
                        }
                        for p in (
                            _resolve(spec, p)
                            for p in [*item.get("parameters", []), *op.get("parameters", [])]
                        )
                    ],
                    "responses": responses,
                    "curl": example.curl(method.upper(), path) if example else None,
                    "example_status": example.status if example else None,
                    "example_label": HTTPStatus(example.status).phrase if example else None,
                    "example_response": (
                        example.response
                        if isinstance(example.response, str)
                        else json.dumps(example.response, ensure_ascii=False, indent=2)
                    )
                    if example
                    else None,
                }
            )
    return out
