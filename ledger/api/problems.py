"""One error envelope for everything: RFC 9457 `application/problem+json`.

Domain errors, werkzeug HTTP errors, webargs validation errors and anything unexpected all pass
through here. Validation errors carry `errors`, a map from the dotted field path to its reasons. No
response ever includes a stack trace or the value that was rejected.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from typing import Any

import marshmallow as ma
from flask import Flask, Response, json
from flask_smorest import Api
from werkzeug.exceptions import HTTPException

from ledger.errors import LedgerError, QuotaExceeded, Unavailable

PROBLEM_TYPE = "application/problem+json"
TYPE_BASE = "https://ledger.example/problems/"
WEBARGS_LOCATIONS = frozenset({"json", "query", "form", "files", "headers", "path", "view_args"})
log = logging.getLogger(__name__)


class ProblemSchema(ma.Schema):
    """RFC 9457 problem details."""

    type = ma.fields.String(required=True, metadata={"description": "URI identifying the problem type"})
    title = ma.fields.String(required=True)
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
    title: str,
    detail: str | None = None,
    errors: dict[str, list[str]] | None = None,
    slug: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {"type": TYPE_BASE + (slug or str(status)), "title": title, "status": status}
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
    return problem(error.status, error.title, error.detail, error.errors or None, error.type_slug, headers)


class ProblemApi(Api):
    """flask-smorest Api whose errors, and their documentation, are problem+json."""

    ERROR_SCHEMA = ProblemSchema
    DEFAULT_ERROR_RESPONSE_NAME = "DEFAULT_ERROR"

    def _register_responses(self) -> None:
        original: str = getattr(self, "DEFAULT_RESPONSE_CONTENT_TYPE")  # noqa: B009
        self.DEFAULT_RESPONSE_CONTENT_TYPE = PROBLEM_TYPE
        try:
            super()._register_responses()
        finally:
            self.DEFAULT_RESPONSE_CONTENT_TYPE = original

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
            return problem(500, "Internal server error", "an unexpected error occurred", slug="internal")
        if (status == 400 and errors and "_body" in errors) or (errors and set(errors) == {"json"}):
            detail: str | None = "the body is not valid JSON"
            errors = None
        else:
            detail = "the request failed validation" if errors else (error.description or None)
        return problem(status, error.name, detail, errors, slug=str(status), headers=headers)


def register(app: Flask) -> None:
    @app.errorhandler(LedgerError)
    def _ledger_error(error: LedgerError) -> Response:
        return problem_for(error)

    @app.errorhandler(RecursionError)
    def _too_deep(_: RecursionError) -> Response:
        return problem(400, "Bad request", "the JSON body is nested too deeply", slug="too-deep")

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        if isinstance(error, HTTPException):
            return problem(error.code or 500, error.name, error.description)
        # The traceback's frames help debugging; the exception message is left out because it may quote
        # request values.
        log.error("unhandled %s\n%s", type(error).__name__, "".join(traceback.format_tb(error.__traceback__)))
        return problem(500, "Internal server error", "an unexpected error occurred", slug="internal")
