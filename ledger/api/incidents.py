"""Incident endpoints: report (single and batch), read, retract, add evidence photos."""

from __future__ import annotations

import json
import re
from typing import Any
from uuid import UUID

import marshmallow as ma
from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint

from ledger import metrics
from ledger.api import schemas, uploads
from ledger.api.context import principal, requires, runtime
from ledger.api.problems import flatten, problem_for
from ledger.errors import InvalidInput, LedgerError
from ledger.services import evidence, incidents, transparency

blp = Blueprint("incidents", __name__, url_prefix="/v1/incidents", description="The incident ledger")
SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}]


def _problem_body(error: LedgerError) -> dict[str, Any]:
    return dict(json.loads(problem_for(error).get_data()))


_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d{1,6})(?:$|[,;\s])", re.IGNORECASE)
MAX_WAIT_SECONDS = 30


def _prefer_wait() -> int | None:
    """RFC 7240 `Prefer: wait=N`: the client will wait up to N seconds (at most 30) for the proof."""
    match = _PREFER_WAIT.search(request.headers.get("Prefer", ""))
    return min(int(match.group(1)), MAX_WAIT_SECONDS) if match else None


def _with_inclusion(bodies: list[dict[str, Any]], wait: int) -> None:
    """Add each body's inclusion proof once its leaf is under a signed checkpoint, waiting up to `wait`."""
    leaves = [bytes.fromhex(b["receipt"]["leaf_hash"]) for b in bodies]
    proofs = transparency.wait_for_inclusion(runtime(), leaves, wait)
    for body, leaf in zip(bodies, leaves, strict=True):
        if leaf in proofs:
            body["inclusion"] = proofs[leaf]


PREFER_DOC = {
    "parameters": [
        {
            "in": "header",
            "name": "Prefer",
            "required": False,
            "schema": {"type": "string", "example": "wait=5"},
            "description": "RFC 7240. `wait=N` (N up to 30): answer once the leaf is under a signed checkpoint "
            "or after N seconds, with its inclusion proof in `inclusion` when it is.",
        }
    ]
}


def _status(outcome: incidents.Outcome) -> int:
    """201 for a new incident, 200 for a replay, the error's own status (409, 422) for a refusal."""
    if outcome.error is not None:
        return outcome.error.status
    return 201 if outcome.created else 200


@blp.route("")
class IncidentCollection(MethodView):
    @blp.doc(security=SECURITY, operationId="report_incident", **PREFER_DOC)
    @requires("report", cost=0, charged_after=True)
    @blp.arguments(schemas.INCIDENT_SCHEMA)
    @blp.response(201, schemas.IncidentCreatedSchema)
    @blp.alt_response(
        200, schema=schemas.IncidentCreatedSchema, description="Replay of an earlier identical report"
    )
    @blp.alt_response(409, response="CONFLICT")
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(413, response="REQUEST_ENTITY_TOO_LARGE")
    @blp.alt_response(415, response="UNSUPPORTED_MEDIA_TYPE")
    @blp.alt_response(429, response="TOO_MANY_REQUESTS")
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def post(self, incident: dict[str, Any]) -> Any:
        """Report a confirmed incident

        Durable before 201, which carries a `receipt`: the report's leaf hash and the log's signed promise
        to include it within the maximum merge delay. Retrying with the same `external_id` and body
        returns 200 and the same body; the same `external_id` with a different body is a 409.
        """
        [outcome] = incidents.report(runtime(), principal(), [incident])
        if outcome.error is not None:
            raise outcome.error
        if outcome.created:
            metrics.INCIDENTS.inc()
        wait = _prefer_wait()
        if wait is None:
            return outcome.body, _status(outcome)
        body = dict(outcome.body)
        _with_inclusion([body], wait)
        return body, _status(outcome), {"Preference-Applied": f"wait={wait}"}


@blp.route("/batch")
class IncidentBatch(MethodView):
    @blp.doc(security=SECURITY, operationId="report_incident_batch", **PREFER_DOC)
    @requires("report", cost=0, charged_after=True)
    @blp.arguments(schemas.IncidentBatchSchema)
    @blp.response(200, schemas.IncidentBatchResultSchema)
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(413, response="REQUEST_ENTITY_TOO_LARGE")
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def post(self, batch: dict[str, Any]) -> Any:
        """Report up to 1,000 incidents

        One result per item, in order: `kind` is `incident` (status 201, or 200 for a replay) or `problem`
        (409 or 422, with the problem details). One bad item does not sink the others.
        Each reported item carries its own receipt.
        """
        items: list[dict[str, Any] | LedgerError] = []
        for raw in batch["incidents"]:
            try:
                items.append(schemas.INCIDENT_SCHEMA.load(raw))
            except ma.ValidationError as exc:
                items.append(InvalidInput("the incident is invalid", flatten(exc.messages)))
        outcomes = incidents.report(runtime(), principal(), items)
        metrics.INCIDENTS.inc(sum(1 for o in outcomes if o.created))
        wait = _prefer_wait()
        if wait is not None:
            bodies = [dict(o.body) for o in outcomes if o.error is None]
            _with_inclusion(bodies, wait)
            it = iter(bodies)
            outcomes = [
                o if o.error is not None else incidents.Outcome(next(it), created=o.created) for o in outcomes
            ]
        result = {
            "results": [
                {"kind": "incident", "index": i, "status": _status(o), "incident": o.body}
                if o.error is None
                else {"kind": "problem", "index": i, "status": _status(o), "problem": _problem_body(o.error)}
                for i, o in enumerate(outcomes)
            ]
        }
        if wait is None:
            return result
        return result, 200, {"Preference-Applied": f"wait={wait}"}


@blp.route("/<uuid:incident_id>")
class IncidentItem(MethodView):
    @blp.doc(security=SECURITY, operationId="get_incident")
    @requires("report")
    @blp.response(200, schemas.IncidentSchemaOut)
    @blp.alt_response(404, response="NOT_FOUND", description="Unknown, or reported by another platform")
    def get(self, incident_id: UUID) -> Any:
        """Read one of your own incidents

        Another platform's incident is a 404, never a 403, so that its existence is not revealed.
        """
        return incidents.get(runtime(), principal(), incident_id)


@blp.route("/<uuid:incident_id>/retract")
class IncidentRetract(MethodView):
    @blp.doc(security=SECURITY, operationId="retract_incident")
    @requires("report")
    @blp.arguments(schemas.RetractSchema)
    @blp.response(200, schemas.IncidentCreatedSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def post(self, body: dict[str, Any], incident_id: UUID) -> Any:
        """Retract one of your incidents

        The incident stays in the ledger with status `retracted` and stops counting.
        """
        return incidents.retract(runtime(), principal(), incident_id, body["reason"])


@blp.route("/<uuid:incident_id>/evidence")
class IncidentEvidence(MethodView):
    @blp.doc(
        security=SECURITY,
        operationId="add_incident_evidence",
        requestBody=uploads.multipart_doc(
            {"images": uploads.IMAGES_PROPERTY},
            ["images"],
            {"images": {"contentType": uploads.IMAGE_TYPES}},
        ),
    )
    @requires("report", cost=uploads.UPLOAD_COST)
    @blp.response(201, schemas.EvidenceAddedSchema)
    @blp.alt_response(
        200, schema=schemas.EvidenceAddedSchema, description="Every image's hash was already stored"
    )
    @blp.alt_response(404, response="NOT_FOUND", description="Unknown, or reported by another platform")
    @blp.alt_response(409, response="CONFLICT", description="The incident is retracted or expired")
    @blp.alt_response(413, response="REQUEST_ENTITY_TOO_LARGE")
    @blp.alt_response(415, response="UNSUPPORTED_MEDIA_TYPE")
    @blp.alt_response(
        422,
        response="UNPROCESSABLE_ENTITY",
        description="An image is not an image, truncated, over 10 MB or under 64x64 pixels, or more than 5 "
        "were sent; `errors` names each part (`images.2`). Nothing is stored.",
    )
    def post(self, incident_id: UUID) -> Any:
        """Add evidence photos to one of your incidents

        `multipart/form-data` with 1 to 5 `images` parts. The server computes each image's PDQ hash and
        quality in memory and stores only those; the images themselves are never stored. To keep photos
        entirely on your side, run `ledger hash IMAGE...` and report the hashes in `evidence.pdq` instead.
        Images of PDQ quality below 50 are stored but marked low quality and never matched on their own.
        """
        rt, who = runtime(), principal()
        evidence.require_own_incident(rt, who, incident_id)  # 404 before reading a large body
        upload = uploads.read_upload("images")
        uploads.settle(rt, who, len(upload.images))
        added, body = evidence.add_images(rt, who, incident_id, upload.images)
        return body, (201 if added else 200)
