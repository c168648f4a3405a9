"""Refund-time lookup endpoints."""

from __future__ import annotations

import json
import time
from typing import Any
from uuid import UUID

import marshmallow as ma
from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint

from ledger import metrics
from ledger.api import schemas, uploads
from ledger.api.context import principal, requires, runtime
from ledger.api.problems import flatten, problem_for
from ledger.errors import InvalidInput, LedgerError
from ledger.services import evidence, lookups

blp = Blueprint("lookups", __name__, url_prefix="/v1/lookups", description="Refund-time risk lookups")
SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}]


def rate_headers(quota: lookups.Quota | None) -> dict[str, str]:
    """RateLimit headers (IETF draft) describing the key's token bucket after this request."""
    if quota is None:
        return {}
    return {"RateLimit-Limit": str(quota.limit), "RateLimit-Remaining": str(max(0, quota.remaining))}


def answer(outcome: lookups.Outcome) -> Response:
    """The answer as the JSON text the audit trail records, encoded once for both. flask-smorest passes a
    Response through without dumping it again; the body holds exactly LookupResultSchema's fields, so the
    dump would change nothing (tests/integration/test_lookups.py checks that)."""
    return Response(outcome.body_json, 200, rate_headers(outcome.quota), mimetype="application/json")


@blp.route("")
class LookupCollection(MethodView):
    @blp.doc(security=SECURITY, operationId="lookup")
    @requires("lookup", cost=0)
    @blp.arguments(schemas.LOOKUP_SCHEMA)
    @blp.response(200, schemas.LookupResultSchema)
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(429, response="TOO_MANY_REQUESTS")
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def post(self, request: dict[str, Any]) -> Any:
        """Decide whether to restrict a refund

        Returns a tier, restrictions and reasons for the consumer behind the identifiers. The answer is
        aggregate only: it never names the reporting platforms nor their incidents. Unknown consumers are
        `clear`. Every answered lookup is recorded, and the consumer can see who looked them up.
        """
        started = time.perf_counter()
        [outcome] = lookups.lookup_many(runtime(), principal(), [request])
        if outcome.error is not None:
            raise outcome.error
        metrics.LOOKUP_LATENCY.observe(time.perf_counter() - started)
        return answer(outcome)


@blp.route("/batch")
class LookupBatch(MethodView):
    @blp.doc(security=SECURITY, operationId="lookup_batch")
    @requires("lookup", cost=0)
    @blp.arguments(schemas.LookupBatchSchema)
    @blp.response(200, schemas.LookupBatchResultSchema)
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(429, response="TOO_MANY_REQUESTS")
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def post(self, batch: dict[str, Any]) -> Any:
        """Up to 100 lookups in one call

        One result per item, in order: `kind` is `lookup` (with its own lookup id and audit record) or
        `problem` (422, and nothing recorded).
        """
        items: list[dict[str, Any] | LedgerError] = []
        for raw in batch["lookups"]:
            try:
                items.append(schemas.LOOKUP_SCHEMA.load(raw))
            except ma.ValidationError as exc:
                items.append(InvalidInput("the lookup is invalid", flatten(exc.messages)))
        outcomes = lookups.lookup_many(runtime(), principal(), items)
        quota = next((o.quota for o in outcomes if o.quota is not None), None)
        return (
            {
                "results": [
                    {"kind": "lookup", "index": i, "status": 200, "lookup": o.body}
                    if o.error is None
                    else {
                        "kind": "problem",
                        "index": i,
                        "status": o.error.status,
                        "problem": json.loads(problem_for(o.error).get_data()),
                    }
                    for i, o in enumerate(outcomes)
                ]
            },
            200,
            rate_headers(quota),
        )


@blp.route("/evidence")
class LookupEvidence(MethodView):
    @blp.doc(
        security=SECURITY,
        operationId="lookup_with_evidence",
        requestBody=uploads.multipart_doc(
            {
                "request": {
                    "$ref": "#/components/schemas/Lookup",
                    "description": "The lookup, exactly as the JSON body of POST /v1/lookups",
                },
                "images": uploads.IMAGES_PROPERTY,
            },
            ["request", "images"],
            {"request": {"contentType": "application/json"}},
        ),
    )
    @requires("lookup", cost=uploads.UPLOAD_COST)
    @blp.response(200, schemas.LookupResultSchema)
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(413, response="REQUEST_ENTITY_TOO_LARGE")
    @blp.alt_response(415, response="UNSUPPORTED_MEDIA_TYPE")
    @blp.alt_response(
        422,
        response="UNPROCESSABLE_ENTITY",
        description="The `request` part is invalid (`errors` keys start with `request.`), or an image is "
        "rejected (`images.N`); no audit record is written",
    )
    @blp.alt_response(429, response="TOO_MANY_REQUESTS")
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def post(self) -> Any:
        """Decide with the claim's evidence photos

        The multipart variant of POST /v1/lookups, kept on its own route so that the JSON lookup stays
        JSON-only and fast. Send a `request` part holding the lookup as JSON (`application/json`) and 1 to
        5 `images` parts. The server hashes each image with PDQ in memory and never stores it; the answer is
        the same as POST /v1/lookups, with one `evidence_matches` entry per `evidence.pdq` hash and then per
        image. Any match within 31 bits of confirmed forged evidence adds the reason `EVIDENCE_REUSED` and
        raises the tier to at least `review`, even for identifiers the ledger has never seen.

        Each image's metadata is checked too, and reported in its entry's `findings`: an AI-content label
        (GB 45438-2025 Annex E in XMP, EXIF UserComment or a PNG text chunk; C2PA; IPTC DigitalSourceType)
        that says generated or edited by AI gives `EVIDENCE_AI_LABELLED`; an EXIF capture time before
        `refund.delivered_at` gives `EVIDENCE_PREDATES_DELIVERY`; EXIF Software is reported, not a reason.
        Each such reason raises the tier to the policy's floor for it (`review`), also for unknown
        identifiers. A malformed label is reported as malformed. You can also hash on your side
        (`ledger hash`, `ledger inspect`) and send only `evidence.pdq` to POST /v1/lookups.
        """
        started = time.perf_counter()
        upload = uploads.read_upload("images", ("request",))
        uploads.settle(runtime(), principal(), len(upload.images))
        try:
            request = schemas.LOOKUP_SCHEMA.load(uploads.json_part(upload, "request"))
        except ma.ValidationError as exc:
            errors = {f"request.{path}": reasons for path, reasons in flatten(exc.messages).items()}
            raise InvalidInput("the lookup is invalid", errors) from None
        request[evidence.IMAGES_KEY] = evidence.submitted_images(upload.images)
        [outcome] = lookups.lookup_many(runtime(), principal(), [request])
        if outcome.error is not None:
            raise outcome.error
        metrics.LOOKUP_LATENCY.observe(time.perf_counter() - started)
        return answer(outcome)


@blp.route("/<uuid:lookup_id>")
class LookupItem(MethodView):
    @blp.doc(security=SECURITY, operationId="get_lookup")
    @requires("lookup")
    @blp.response(200, schemas.LookupResultSchema)
    @blp.alt_response(404, response="NOT_FOUND", description="Unknown, or made by another platform")
    def get(self, lookup_id: UUID) -> Any:
        """Read back a lookup you made, as it was answered"""
        return lookups.get(runtime(), principal(), lookup_id)
