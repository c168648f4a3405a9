"""Refund-time lookup endpoints."""

from __future__ import annotations

import json
import time
from typing import Any
from uuid import UUID

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint

from ledger import metrics
from ledger.api import schemas
from ledger.api.context import principal, requires, runtime
from ledger.api.problems import flatten, problem_for
from ledger.errors import InvalidInput, LedgerError
from ledger.services import lookups

blp = Blueprint("lookups", __name__, url_prefix="/v1/lookups", description="Refund-time risk lookups")
SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}]


@blp.route("")
class LookupCollection(MethodView):
    @blp.doc(security=SECURITY)
    @requires("lookup")
    @blp.arguments(schemas.LookupSchema)
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
        return outcome.body


@blp.route("/batch")
class LookupBatch(MethodView):
    @blp.doc(security=SECURITY)
    @requires("lookup")
    @blp.arguments(schemas.LookupBatchSchema)
    @blp.response(200, schemas.LookupBatchResultSchema)
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(429, response="TOO_MANY_REQUESTS")
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def post(self, batch: dict[str, Any]) -> Any:
        """Up to 100 lookups in one call

        One result per item, in order; each answered item has its own lookup id and audit record.
        """
        schema = schemas.LookupSchema()
        items: list[dict[str, Any] | LedgerError] = []
        for raw in batch["lookups"]:
            try:
                items.append(schema.load(raw))
            except ma.ValidationError as exc:
                items.append(InvalidInput("the lookup is invalid", flatten(exc.messages)))
        outcomes = lookups.lookup_many(runtime(), principal(), items)
        return {
            "results": [
                {
                    "index": i,
                    "status": o.status,
                    "lookup": o.body if o.error is None else None,
                    "problem": json.loads(problem_for(o.error).get_data()) if o.error is not None else None,
                }
                for i, o in enumerate(outcomes)
            ]
        }


@blp.route("/<uuid:lookup_id>")
class LookupItem(MethodView):
    @blp.doc(security=SECURITY)
    @requires("lookup")
    @blp.response(200, schemas.LookupResultSchema)
    @blp.alt_response(404, response="NOT_FOUND", description="Unknown, or made by another platform")
    def get(self, lookup_id: UUID) -> Any:
        """Read back a lookup you made, as it was answered"""
        return lookups.get(runtime(), principal(), lookup_id)
