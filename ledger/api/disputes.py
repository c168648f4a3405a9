"""Disputes and the subject access report: the consumer's rights, exercised through the operator."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from flask import Response, render_template
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
    @blp.doc(security=SECURITY, operationId="open_dispute")
    @requires("dispute")
    @blp.arguments(schemas.DisputeOpenSchema)
    @blp.response(201, schemas.DisputeOpenedSchema)
    @blp.alt_response(404, response="NOT_FOUND", description="No such incident about this consumer")
    @blp.alt_response(409, response="CONFLICT", description="Already disputed, or upheld within 90 days")
    @blp.alt_response(
        429, response="TOO_MANY_REQUESTS", description="The operator's consumer-rights rate limit"
    )
    def post(self, body: dict[str, Any]) -> Any:
        """Open a dispute for a consumer

        Marks each incident `disputed` (counted at half weight) and starts the reinvestigation clock: the
        reporting platform must respond by `respond_by` (20 days under the `cn` profile, 征信业管理条例 Art. 25;
        30 under `us`) or the entry is retracted automatically.
        """
        return {"disputes": disputes.open_dispute(runtime(), principal(), body)}, 201

    @blp.doc(security=SECURITY, operationId="list_disputes")
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
    @blp.doc(security=SECURITY, operationId="respond_to_dispute")
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
    @blp.doc(security=SECURITY, operationId="subject_report")
    @requires("dispute")
    @blp.arguments(schemas.SubjectReportRequestSchema)
    @blp.response(200, schemas.SubjectReportSchema)
    @blp.alt_response(
        429, response="TOO_MANY_REQUESTS", description="The operator's consumer-rights rate limit"
    )
    def post(self, body: dict[str, Any]) -> Any:
        """Everything the ledger holds about a consumer

        For the operator to give to the consumer: incidents with their reporting platforms, scores and
        reasons, disputes, evidence counts and every lookup within the lookup retention period, over every
        identifier linked to the consumer. Always JSON; the same report as a printable page is
        `POST /v1/subjects/report/html`. Operator only; every report is recorded (who, when, a commitment
        to the identifiers) and rate-limited. A device id never selects entries.
        """
        return access.report(runtime(), principal(), body)


@blp.route("/v1/subjects/report/html")
class SubjectReportPage(MethodView):
    @blp.doc(
        security=SECURITY,
        operationId="subject_report_html",
        # A manual `responses` entry replaces the JSON one @blp.response would document.
        responses={
            "200": {
                "description": "The report as a printable HTML page",
                "content": {"text/html": {"schema": {"type": "string"}}},
            }
        },
    )
    @requires("dispute")
    @blp.arguments(schemas.ReportQuerySchema, location="query")
    @blp.arguments(schemas.SubjectReportRequestSchema)
    @blp.response(200)
    @blp.alt_response(
        429, response="TOO_MANY_REQUESTS", description="The operator's consumer-rights rate limit"
    )
    def post(self, query: dict[str, Any], body: dict[str, Any]) -> Response:
        """The subject access report as a printable page

        The same report as `POST /v1/subjects/report`, as a page the operator can print or hand to the
        consumer: in Chinese, or in English with `?lang=en`; times in Beijing time. A route of its own,
        so that the JSON operation only ever answers JSON (a client generated from this document parses
        every 200 of an operation the same way).
        """
        result = access.report(runtime(), principal(), body)
        return Response(subject_report_page(result, query.get("lang", "zh")), mimetype="text/html")


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
