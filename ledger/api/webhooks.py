"""Webhook endpoints: a platform registers where its signed events go, reads its delivery log and asks
for a redelivery. Another platform's endpoint or delivery is a 404, never a 403 (docs/webhooks.md)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import validate

from ledger.api.context import principal, requires, runtime
from ledger.api.schemas import Strict, storable
from ledger.domain.webhooks import EVENT_TYPES, MAX_URL_LENGTH
from ledger.services import webhooks

blp = Blueprint("webhooks", __name__, url_prefix="/v1/webhooks", description="Signed webhooks")
SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}]


class EndpointCreateSchema(Strict):
    url = ma.fields.String(
        required=True,
        validate=[validate.Length(min=8, max=MAX_URL_LENGTH), storable],
        metadata={"description": "https:// URL; it must resolve to public addresses only"},
    )
    events = ma.fields.List(
        ma.fields.String(validate=validate.OneOf(EVENT_TYPES)),
        required=True,
        validate=validate.Length(min=1, max=len(EVENT_TYPES)),
    )


class EndpointSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    url = ma.fields.String(required=True)
    events = ma.fields.List(ma.fields.String(), required=True)
    status = ma.fields.String(required=True, validate=validate.OneOf(("active", "disabled")))
    status_reason = ma.fields.String(allow_none=True)
    consecutive_failures = ma.fields.Integer(required=True)
    created_at = ma.fields.DateTime(required=True)
    status_at = ma.fields.DateTime(required=True)


class EndpointCreatedSchema(EndpointSchema):
    secret = ma.fields.String(
        required=True,
        metadata={"description": "whsec_ signing secret (Standard Webhooks). Shown once, never again"},
    )


class EndpointListSchema(ma.Schema):
    endpoints = ma.fields.List(ma.fields.Nested(EndpointSchema), required=True)


class AttemptSchema(ma.Schema):
    at = ma.fields.DateTime(required=True)
    status_code = ma.fields.Integer(allow_none=True)
    error = ma.fields.String(allow_none=True)
    duration_ms = ma.fields.Integer(required=True)


class DeliverySchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    event_id = ma.fields.String(required=True, metadata={"description": "The `webhook-id` header"})
    type = ma.fields.String(required=True, validate=validate.OneOf(EVENT_TYPES))
    status = ma.fields.String(
        required=True, validate=validate.OneOf(("pending", "delivered", "abandoned", "skipped"))
    )
    attempts = ma.fields.Integer(required=True)
    next_attempt_at = ma.fields.DateTime(required=True)
    delivered_at = ma.fields.DateTime(allow_none=True)
    created_at = ma.fields.DateTime(required=True)
    log = ma.fields.List(ma.fields.Nested(AttemptSchema), required=True)


class DeliveryLogSchema(ma.Schema):
    endpoint = ma.fields.Nested(EndpointSchema, required=True)
    deliveries = ma.fields.List(ma.fields.Nested(DeliverySchema), required=True)


class RedeliveredSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    status = ma.fields.String(required=True, validate=validate.OneOf(("pending",)))


@blp.route("/endpoints")
class Endpoints(MethodView):
    @blp.doc(security=SECURITY, operationId="create_webhook_endpoint")
    @requires("report", "lookup")
    @blp.arguments(EndpointCreateSchema)
    @blp.response(201, EndpointCreatedSchema)
    @blp.alt_response(409, response="CONFLICT", description="The platform has the most endpoints allowed")
    def post(self, body: dict[str, Any]) -> Any:
        """Register a webhook endpoint

        Events are signed per Standard Webhooks with the returned `secret`, which is shown only here.
        The URL must be https:// and resolve to public addresses (checked now and at every delivery).
        """
        return webhooks.register(runtime(), principal().platform_id, body["url"], body["events"]), 201

    @blp.doc(security=SECURITY, operationId="list_webhook_endpoints")
    @requires("report", "lookup")
    @blp.response(200, EndpointListSchema)
    def get(self) -> Any:
        """Your webhook endpoints (never their secrets)"""
        return {"endpoints": webhooks.list_endpoints(runtime(), principal())}


@blp.route("/endpoints/<uuid:endpoint_id>")
class Endpoint(MethodView):
    @blp.doc(security=SECURITY, operationId="delete_webhook_endpoint")
    @requires("report", "lookup")
    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    def delete(self, endpoint_id: UUID) -> None:
        """Remove one of your endpoints, with its delivery log"""
        webhooks.delete(runtime(), principal().platform_id, endpoint_id)


@blp.route("/endpoints/<uuid:endpoint_id>/enable")
class EndpointEnable(MethodView):
    @blp.doc(security=SECURITY, operationId="enable_webhook_endpoint")
    @requires("report", "lookup")
    @blp.response(200, EndpointSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def post(self, endpoint_id: UUID) -> Any:
        """Turn a disabled endpoint back on"""
        return webhooks.enable(runtime(), principal().platform_id, endpoint_id)


@blp.route("/endpoints/<uuid:endpoint_id>/deliveries")
class EndpointDeliveries(MethodView):
    @blp.doc(security=SECURITY, operationId="list_webhook_deliveries")
    @requires("report", "lookup")
    @blp.response(200, DeliveryLogSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, endpoint_id: UUID) -> Any:
        """The delivery log of one of your endpoints: the latest 100 deliveries, each attempt"""
        return webhooks.deliveries(runtime(), principal().platform_id, endpoint_id)


@blp.route("/deliveries/<uuid:delivery_id>/redeliver")
class Redeliver(MethodView):
    @blp.doc(security=SECURITY, operationId="redeliver_webhook")
    @requires("report", "lookup")
    @blp.response(202, RedeliveredSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def post(self, delivery_id: UUID) -> Any:
        """Send one of your deliveries again, now"""
        return webhooks.redeliver(runtime(), principal().platform_id, delivery_id), 202
