"""One error envelope for everything: RFC 9457 `application/problem+json`.

Domain errors, werkzeug HTTP errors, webargs validation errors and anything unexpected all pass
through here, and all of them speak one vocabulary (`ledger.errors.PROBLEM_TYPES`): the `type` names the
kind of error and fixes the status and title, whichever layer raised it. Validation errors carry
`errors`, a map from the dotted field path to its reasons. No response ever includes a stack trace or
the value that was rejected.
"""

from __future__ import annotations

import http
import logging
import traceback
from collections.abc import Mapping
from typing import Any

import marshmallow as ma
from flask import Flask, Response, json
from flask_smorest import Api
from flask_smorest.utils import prepare_response
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from ledger.errors import PROBLEM_TYPE_BASE, PROBLEM_TYPES, LedgerError, QuotaExceeded, Unavailable

PROBLEM_TYPE = "application/problem+json"
TYPE_BASE = PROBLEM_TYPE_BASE
# The kind of error an HTTP status means when werkzeug or webargs raised it, not the domain.
STATUS_KIND: dict[int, str] = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation",
    429: "rate-limited",
    500: "internal",
    503: "unavailable",
}
WEBARGS_LOCATIONS = frozenset({"json", "query", "form", "files", "headers", "path", "view_args"})
log = logging.getLogger(__name__)


class ProblemSchema(ma.Schema):
    """RFC 9457 problem details."""

    type = ma.fields.String(
        required=True,
        validate=ma.validate.OneOf([*(p.uri for p in PROBLEM_TYPES.values()), "about:blank"]),
        metadata={
            "description": "URI naming the kind of error; one per kind, whichever layer raised it. "
            "See the table in the API description."
        },
    )
    title = ma.fields.String(required=True, metadata={"description": "The fixed title of the `type`"})
    status = ma.fields.Integer(required=True)
    detail = ma.fields.String()
    instance = ma.fields.String()
    errors = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.List(ma.fields.String()),
        metadata={"description": "Per-field reasons, keyed by dotted field path (validation errors only)"},
    )


def flatten(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """webargs/marshmallow nested messages -> {"identifiers.0.type": ["..."]}."""
    out: dict[str, list[str]] = {}
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            out.update(flatten(value, path))
    elif isinstance(messages, list | tuple) and all(isinstance(m, str) for m in messages):
        out[prefix or "_body"] = [str(m) for m in messages]
    elif isinstance(messages, list | tuple):
        for index, value in enumerate(messages):
            out.update(flatten(value, f"{prefix}.{index}" if prefix else str(index)))
    else:
        out[prefix or "_body"] = [str(messages)]
    return out


def problem(
    status: int,
    title: str | None = None,  # noqa: ARG001 (old callers pass one; the vocabulary decides the title)
    detail: str | None = None,
    errors: dict[str, list[str]] | None = None,
    slug: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The problem response of kind `slug` (or, without one, the kind `status` means).

    The type fixes the status and title: `title` is accepted for callers that pass one and ignored, so a
    second wording for the same kind cannot creep in. A status outside the vocabulary becomes
    `about:blank` with the HTTP reason phrase, as RFC 9457 §4.2.1 says."""
    kind = PROBLEM_TYPES.get(slug or "") or PROBLEM_TYPES.get(STATUS_KIND.get(status, ""))
    if kind is not None:
        body: dict[str, Any] = {"type": kind.uri, "title": kind.title, "status": kind.status}
    else:
        body = {"type": "about:blank", "title": HTTP_STATUS_CODES.get(status, "Error"), "status": status}
    status = body["status"]
    if detail:
        body["detail"] = detail
    if errors:
        # Keys come from client input (a multipart part may have no name): always strings, so the
        # envelope itself can never fail to render.
        body["errors"] = {"_body" if k is None else str(k): v for k, v in errors.items()}
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_TYPE)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def problem_for(error: LedgerError) -> Response:
    headers: dict[str, str] = {}
    if isinstance(error, QuotaExceeded):
        headers = {
            "Retry-After": str(error.retry_after),
            "RateLimit-Limit": str(error.limit),
            "RateLimit-Remaining": str(error.remaining),
            "RateLimit-Reset": str(error.retry_after),
        }
    elif isinstance(error, Unavailable):
        headers = {"Retry-After": str(error.retry_after)}
    elif error.status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="ledger"'}
    return problem(error.status, None, error.detail, error.errors or None, error.type_slug, headers)


class ProblemApi(Api):
    """flask-smorest Api whose errors, and their documentation, are problem+json, and whose operations
    carry their worked examples (ledger/api/examples.py)."""

    def __init__(self, app: Flask | None = None, **kwargs: Any) -> None:
        from ledger.api.reference import ExamplesPlugin

        spec_kwargs = kwargs.pop("spec_kwargs", {}) or {}
        spec_kwargs.setdefault("extra_plugins", []).append(ExamplesPlugin())
        super().__init__(app, spec_kwargs=spec_kwargs, **kwargs)

    ERROR_SCHEMA = ProblemSchema
    DEFAULT_ERROR_RESPONSE_NAME = "DEFAULT_ERROR"

    def _register_responses(self) -> None:
        """flask-smorest's named responses (NOT_FOUND, UNPROCESSABLE_ENTITY, ...), each saying which problem
        types it carries, with an example of each. Those of the vocabulary are always in the document, even
        where no operation names them (every operation's `default` response is a problem)."""
        for status in http.HTTPStatus:
            response: dict[str, Any] = {"description": status.phrase}
            kinds = []
            if not (100 <= status < 200) and status not in (204, 304):
                response["schema"] = self.ERROR_SCHEMA
                kinds = [p for p in PROBLEM_TYPES.values() if p.status == status]
                if kinds:
                    response["description"] = "; ".join(f"{p.title} (`{p.uri}`): {p.meaning}" for p in kinds)
                    response["examples"] = {
                        p.slug: {"value": {"type": p.uri, "title": p.title, "status": p.status}}
                        for p in kinds
                    }
            prepare_response(response, self.spec, PROBLEM_TYPE)
            self.spec.components.response(status.name, response, lazy=not kinds)
        response = {"description": "Any problem of the vocabulary", "schema": self.ERROR_SCHEMA}
        prepare_response(response, self.spec, PROBLEM_TYPE)
        self.spec.components.response("DEFAULT_ERROR", response, lazy=True)

    def handle_http_exception(self, error: HTTPException) -> Response:
        status = error.code or 500
        data = getattr(error, "data", None) or {}
        messages = data.get("messages")
        if isinstance(messages, Mapping) and len(messages) == 1:
            # webargs nests by location ({"json": {...}}): drop that level, clients think in body fields.
            [(location, inner)] = messages.items()
            if location in WEBARGS_LOCATIONS and isinstance(inner, Mapping):
                messages = inner
        errors = flatten(messages) if messages else None
        headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
        headers.update(data.get("headers") or {})
        if status >= 500:
            log.error(
                "unhandled error: %s",
                type(error.original_exception if hasattr(error, "original_exception") else error).__name__,
            )
            return problem(500, None, "an unexpected error occurred", slug="internal")
        slug = None
        if (status == 400 and errors and "_body" in errors) or (errors and set(errors) == {"json"}):
            detail: str | None = "the body is not valid JSON"
            errors = None
            slug = "invalid-json"
        else:
            detail = "the request failed validation" if errors else (error.description or None)
        return problem(status, None, detail, errors, slug=slug, headers=headers)


def register(app: Flask) -> None:
    @app.errorhandler(LedgerError)
    def _ledger_error(error: LedgerError) -> Response:
        return problem_for(error)

    @app.errorhandler(RecursionError)
    def _too_deep(_: RecursionError) -> Response:
        return problem(400, None, "the JSON body is nested too deeply", slug="invalid-json")

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        if isinstance(error, HTTPException):
            return problem(error.code or 500, None, error.description)
        # The traceback's frames help debugging; the exception message is left out because it may quote
        # request values.
        log.error("unhandled %s\n%s", type(error).__name__, "".join(traceback.format_tb(error.__traceback__)))
        return problem(500, None, "an unexpected error occurred", slug="internal")


def vocabulary_markdown() -> str:
    """The vocabulary as one Markdown table: the OpenAPI description and docs/errors.md both show it."""
    rows = [
        "| `type` | status | `title` | when |",
        "|---|---|---|---|",
        *(f"| `{p.uri}` | {p.status} | {p.title} | {p.meaning} |" for p in PROBLEM_TYPES.values()),
    ]
    return "\n".join(rows)


API_DESCRIPTION = (
    "Cross-platform ledger of confirmed refund fraud.\n\n"
    "Every error is RFC 9457 `application/problem+json` with `type`, `title`, `status`, `detail` and, "
    "for validation, `errors` keyed by field path. There is one `type` per kind of error, whichever layer "
    "noticed it, and each `type` always comes with the same status and title:\n\n" + vocabulary_markdown()
)
