"""Disputes and the subject access report: the consumer's rights, exercised through the operator."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from flask import Response, render_template, request
from flask.views import MethodView
from flask_smorest import Blueprint

from ledger.api import schemas
from ledger.api.context import principal, requires, runtime
from ledger.domain import labels
from ledger.services import access, disputes

blp = Blueprint("disputes", __name__, description="Disputes and subject access (consumer rights)")
SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}]


@blp.route("/v1/disputes")
class DisputeCollection(MethodView):
    @blp.doc(security=SECURITY)
    @requires("dispute")
    @blp.arguments(schemas.DisputeOpenSchema)
    @blp.response(201, schemas.DisputeOpenedSchema)
    @blp.alt_response(404, response="NOT_FOUND", description="No such incident about this consumer")
    @blp.alt_response(409, response="CONFLICT", description="Already disputed, or upheld within 90 days")
    def post(self, body: dict[str, Any]) -> Any:
        """Open a dispute for a consumer

        Marks each incident `disputed` (counted at half weight) and starts the reinvestigation clock: the
        reporting platform must respond by `respond_by` (20 days under the `cn` profile, 征信业管理条例 Art. 25;
        30 under `us`) or the entry is retracted automatically.
        """
        return {"disputes": disputes.open_dispute(runtime(), principal(), body)}, 201

    @blp.doc(security=SECURITY)
    @requires("report")
    @blp.arguments(schemas.DisputeListQuerySchema, location="query")
    @blp.response(200, schemas.DisputeListSchema)
    def get(self, query: dict[str, Any]) -> Any:
        """Disputes about your incidents

        What a reporting platform must reinvestigate, earliest deadline first.
        """
        return {"disputes": disputes.list_for_platform(runtime(), principal(), query.get("status"))}


@blp.route("/v1/disputes/<uuid:dispute_id>/response")
class DisputeResponse(MethodView):
    @blp.doc(security=SECURITY)
    @requires("report")
    @blp.arguments(schemas.DisputeResponseSchema)
    @blp.response(200, schemas.DisputeSchemaOut)
    @blp.alt_response(404, response="NOT_FOUND", description="No such dispute about your incidents")
    @blp.alt_response(409, response="CONFLICT", description="The dispute is no longer open")
    def post(self, body: dict[str, Any], dispute_id: UUID) -> Any:
        """Uphold or retract a disputed incident

        Upheld (with the confirmation basis) returns the incident to `active`; retracted stops it counting.
        Only the reporting platform can respond.
        """
        return disputes.respond(runtime(), principal(), dispute_id, body["outcome"], body.get("basis"))


@blp.route("/v1/subjects/report")
class SubjectReport(MethodView):
    @blp.doc(
        security=SECURITY,
        # Both media types: a manual `responses` entry replaces the one @blp.response documents.
        responses={
            "200": {
                "description": "The report, as JSON or as a printable HTML page",
                "content": {
                    "application/json": {"schema": schemas.SubjectReportSchema},
                    "text/html": {"schema": {"type": "string"}},
                },
            }
        },
    )
    @requires("dispute")
    @blp.arguments(schemas.ReportQuerySchema, location="query")
    @blp.arguments(schemas.SubjectReportRequestSchema)
    @blp.response(200, schemas.SubjectReportSchema)
    def post(self, query: dict[str, Any], body: dict[str, Any]) -> Any:
        """Everything the ledger holds about a consumer

        For the operator to give to the consumer: incidents with their reporting platforms, scores and
        reasons, disputes, evidence counts and every lookup within the lookup retention period, over every
        identifier linked to the consumer. JSON, or a printable page with `?format=html` or
        `Accept: text/html`: in Chinese, or in English with `?lang=en`; times in Beijing time.
        """
        result = access.report(runtime(), body)
        wants_html = query.get("format") == "html" or (
            query.get("format") is None
            and request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"
        )
        if wants_html:
            return Response(subject_report_page(result, query.get("lang", "zh")), mimetype="text/html")
        return result


def subject_report_page(report: dict[str, Any], lang: labels.Language) -> str:
    """The report as the printable page a consumer reads: labels instead of codes, Beijing time."""
    rt = runtime()

    def money(amount: dict[str, Any]) -> str:
        currency = amount["currency"]
        exponent = rt.policy.currencies[currency].exponent if currency in rt.policy.currencies else 2
        return f"{amount['value'] / 10**exponent:,.{exponent}f} {labels.label('currency', currency, lang)}"

    return render_template(
        "subject_report.html",
        report=report,
        lang=lang,
        L=labels.labels_for(lang),
        when=lambda moment: labels.beijing_time(moment, lang),
        money=money,
        dispute_days=rt.settings.dispute_days,
    )
