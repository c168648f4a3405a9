"""Health, readiness and metrics."""

from __future__ import annotations

import contextlib
from typing import Any

from flask import Response, current_app, render_template, request
from flask.views import MethodView
from flask_smorest import Blueprint

from ledger import metrics
from ledger.api import reference, schemas
from ledger.api.context import runtime
from ledger.errors import LedgerError
from ledger.services import transparency, webhooks

blp = Blueprint("system", __name__, description="Health, metrics and tamper evidence")


@blp.route("/healthz")
class Health(MethodView):
    @blp.doc(operationId="health")
    @blp.response(200, schemas.HealthSchema)
    def get(self) -> Any:
        """The process is up"""
        return {"status": "ok"}


@blp.route("/readyz")
class Ready(MethodView):
    @blp.doc(operationId="readiness")
    @blp.response(200, schemas.HealthSchema)
    @blp.alt_response(503, schema=schemas.HealthSchema, description="A dependency is down; `checks` names it")
    def get(self) -> Any:
        """PostgreSQL and Redis are reachable

        When Redis is down lookups fall back to PostgreSQL: `checks.lookup_path` says `postgres-fallback`.
        """
        rt = runtime()
        postgres = rt.db.ping()
        redis = rt.redis.ping()
        checks = {
            "postgres": "ok" if postgres else "down",
            "redis": "ok" if redis else "down",
            # Without PostgreSQL no lookup is answered: its audit record must be written first.
            "lookup_path": ("redis" if redis else "postgres-fallback") if postgres else "unavailable",
        }
        if postgres:
            # A sequencer behind its maximum merge delay breaks the promises in every 201 since; reports
            # still commit, so this is a detail for operators, not a reason to take the API out of service.
            with contextlib.suppress(LedgerError):
                lag = transparency.lag(rt)
                checks["log"] = (
                    f"ok (lag {lag['lag_seconds']:.1f}s, mmd {lag['mmd_seconds']}s)"
                    if lag["within_mmd"]
                    else f"behind (lag {lag['lag_seconds']:.1f}s > mmd {lag['mmd_seconds']}s)"
                )
        ok = postgres and redis
        return {"status": "ok" if ok else "degraded", "checks": checks}, 200 if ok else 503


@blp.route("/metrics")
class Metrics(MethodView):
    @blp.doc(
        operationId="metrics",
        responses={"200": {"description": "Prometheus text format", "content": {"text/plain": {}}}},
    )
    def get(self) -> Response:
        """Prometheus metrics, with the transparency log's lag read from the database at scrape time"""
        text = metrics.render() + _webhook_gauge()
        with contextlib.suppress(LedgerError):
            text += metrics.render_log(transparency.lag(runtime()))
        return Response(text, mimetype="text/plain; version=0.0.4")


def _webhook_gauge() -> bytes:
    """Disabled webhook endpoints per platform, read from PostgreSQL: the workers disable them, and their
    counters never reach this process."""
    lines = [
        "# HELP ledger_webhook_endpoints_disabled Webhook endpoints disabled after persistent failure",
        "# TYPE ledger_webhook_endpoints_disabled gauge",
    ]
    try:
        rows = webhooks.disabled_counts(runtime())
    except LedgerError:
        return b""
    lines += [f'ledger_webhook_endpoints_disabled{{platform="{r["slug"]}"}} {r["n"]}' for r in rows]
    return ("\n".join(lines) + "\n").encode()


@blp.route("/docs/reference")
class Reference(MethodView):
    @blp.doc(
        operationId="api_reference",
        responses={"200": {"description": "HTML reference", "content": {"text/html": {}}}},
    )
    def get(self) -> Response:
        """Human-readable API reference

        Rendered on the server from the OpenAPI document, so it works offline: for each operation its
        required scope, request fields, status codes and a worked `curl` example with its response.
        """
        spec = current_app.extensions["ledger.api"].spec.to_dict()
        page = render_template(
            "api_docs.html",
            spec=spec,
            intro=reference.markdown(spec["info"].get("description")),
            operations=reference.operations(spec),
            inline=reference.inline_markdown,
        )
        return Response(page, mimetype="text/html")


@blp.route("/")
class Index(MethodView):
    @blp.doc(operationId="index")
    @blp.response(200, schemas.IndexSchema)
    def get(self) -> Any:
        """Where the documentation is

        A browser gets a page of links; anything else gets them as JSON.
        """
        links = {
            "reference": "/docs/reference",
            "explorer": "/docs",
            "openapi": "/openapi.json",
            "errors": "/docs/reference#errors",
        }
        if request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html":
            return Response(render_template("index.html", links=links), mimetype="text/html")
        return {"name": "Consumer Credit Ledger", "docs": links}
