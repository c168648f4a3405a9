"""Reference photo registration: a platform's listing and shipping photo hashes (docs/evidence.md).

Only the registering platform can change or remove its references; naming another platform's reference
changes nothing and is answered as for a reference that does not exist. Nothing here ever tells a caller
which platform registered what.
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import validate

from ledger.api import schemas, uploads
from ledger.api.context import principal, requires, runtime
from ledger.api.problems import flatten
from ledger.errors import InvalidInput
from ledger.services import references

blp = Blueprint(
    "references", __name__, url_prefix="/v1/references", description="Reference photos: listings and shipping"
)
SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}]
KIND = schemas.REFERENCE_KIND
MAX_ITEMS = 1000


class ReferenceKeySchema(schemas.Strict):
    kind = ma.fields.String(
        required=True,
        validate=KIND,
        metadata={
            "description": "`listing` (catalogue or listing photo, matched for every member) or `shipping` "
            "(packing and dispatch photos, matched only for your own lookups, until they expire)"
        },
    )
    reference = ma.fields.String(
        required=True,
        validate=[validate.Length(min=1, max=128), schemas.storable],
        metadata={"description": "Your own reference: a listing id or an order reference"},
    )


class ReferenceSchema(ReferenceKeySchema):
    pdq = ma.fields.List(
        ma.fields.String(validate=schemas.PDQ),
        required=True,
        validate=validate.Length(min=1, max=references.MAX_PER_REFERENCE),
        metadata={"description": "PDQ hashes (`ledger hash`), 64 lowercase hex characters each"},
    )


class ReferenceBatchSchema(schemas.Strict):
    references = ma.fields.List(
        ma.fields.Nested(ReferenceSchema),
        required=True,
        validate=validate.Length(min=1, max=MAX_ITEMS),
        metadata={
            "description": f"1 to {MAX_ITEMS} references, {references.MAX_HASHES_PER_CALL} hashes in all"
        },
    )


class ReferenceRemovalSchema(schemas.Strict):
    references = ma.fields.List(
        ma.fields.Nested(ReferenceKeySchema), required=True, validate=validate.Length(min=1, max=MAX_ITEMS)
    )


class ReferenceResultSchema(ma.Schema):
    kind = ma.fields.String(required=True, validate=KIND)
    reference = ma.fields.String(required=True)
    added = ma.fields.Integer(required=True, metadata={"description": "Hashes new under this reference"})
    removed = ma.fields.Integer(required=True, metadata={"description": "Hashes removed first (replace)"})
    held = ma.fields.Integer(required=True, metadata={"description": "Hashes the reference now holds"})
    expires_at = ma.fields.AwareDateTime(
        required=True,
        allow_none=True,
        metadata={"description": "When a shipping reference lapses; null for listings"},
    )


class ReferenceResultsSchema(ma.Schema):
    results = ma.fields.List(ma.fields.Nested(ReferenceResultSchema), required=True)


class RemovalResultSchema(ma.Schema):
    kind = ma.fields.String(required=True, validate=KIND)
    reference = ma.fields.String(required=True)
    removed = ma.fields.Integer(
        required=True, metadata={"description": "Hashes removed; 0 for a reference you do not hold"}
    )


class RemovalResultsSchema(ma.Schema):
    results = ma.fields.List(ma.fields.Nested(RemovalResultSchema), required=True)


class ImageHashSchema(ma.Schema):
    hash = ma.fields.String(required=True)
    displayed_hash = ma.fields.String(required=True, allow_none=True)
    quality = ma.fields.Integer(required=True)


class ReferenceImagesResultSchema(ReferenceResultSchema):
    hashes = ma.fields.List(ma.fields.Nested(ImageHashSchema), required=True)


@blp.route("")
class References(MethodView):
    @blp.doc(security=SECURITY, operationId="add_references")
    @requires("report")
    @blp.arguments(ReferenceBatchSchema)
    @blp.response(200, ReferenceResultsSchema)
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(
        422, response="UNPROCESSABLE_ENTITY", description="Invalid; nothing of the batch is stored"
    )
    @blp.alt_response(429, response="TOO_MANY_REQUESTS")
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def post(self, batch: dict[str, Any]) -> Any:
        """Register reference photo hashes

        Add PDQ hashes of your listing or shipping photos under your own references, up to 1,000
        references and 10,000 hashes per call, all or nothing. A claim photo within 31 bits of one is
        `derived_from_reference` in lookups with images: listings for every member, shipping photos for
        yours only. Shipping hashes lapse after the policy's `shipping_reference_days` (180). Each changed
        reference is a ledger event. Checkers learn the kind and the distance, never you or the reference.
        """
        return {"results": references.register(runtime(), principal(), batch["references"])}


@blp.route("/replace")
class ReferencesReplace(MethodView):
    @blp.doc(security=SECURITY, operationId="replace_references")
    @requires("report")
    @blp.arguments(ReferenceBatchSchema)
    @blp.response(200, ReferenceResultsSchema)
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(
        422, response="UNPROCESSABLE_ENTITY", description="Invalid; nothing of the batch is stored"
    )
    @blp.alt_response(429, response="TOO_MANY_REQUESTS")
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def post(self, batch: dict[str, Any]) -> Any:
        """Replace the hashes of your references

        Each named reference holds exactly the given hashes afterwards. Only your own references change.
        """
        return {"results": references.register(runtime(), principal(), batch["references"], replace=True)}


@blp.route("/remove")
class ReferencesRemove(MethodView):
    @blp.doc(security=SECURITY, operationId="remove_references")
    @requires("report")
    @blp.arguments(ReferenceRemovalSchema)
    @blp.response(200, RemovalResultsSchema)
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
    @blp.alt_response(429, response="TOO_MANY_REQUESTS")
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def post(self, batch: dict[str, Any]) -> Any:
        """Remove your references

        Removes every hash of each named reference of yours. A reference you do not hold, including
        another platform's, is answered with `removed: 0` and nothing changes.
        """
        return {"results": references.remove(runtime(), principal(), batch["references"])}


REFERENCE_KEY = ReferenceKeySchema()


@blp.route("/images")
class ReferenceImages(MethodView):
    @blp.doc(
        security=SECURITY,
        operationId="add_reference_images",
        requestBody=uploads.multipart_doc(
            {
                "request": {
                    "$ref": "#/components/schemas/ReferenceKey",
                    "description": "The reference the photos belong to, as JSON",
                },
                "images": uploads.IMAGES_PROPERTY,
            },
            ["request", "images"],
            {"request": {"contentType": "application/json"}},
        ),
    )
    @requires("report", cost=uploads.UPLOAD_COST)
    @blp.response(201, ReferenceImagesResultSchema)
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(413, response="REQUEST_ENTITY_TOO_LARGE")
    @blp.alt_response(415, response="UNSUPPORTED_MEDIA_TYPE")
    @blp.alt_response(
        422,
        response="UNPROCESSABLE_ENTITY",
        description="The `request` part is invalid, or an image is rejected (`images.N`); nothing is stored",
    )
    @blp.alt_response(429, response="TOO_MANY_REQUESTS")
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def post(self) -> Any:
        """Register reference photos as images

        `multipart/form-data` with a `request` part (`{"kind": …, "reference": …}` as JSON) and 1 to 5
        `images` parts. Each image is hashed in memory (as stored and, when it differs, as displayed) and
        only the hashes are kept.
        """
        upload = uploads.read_upload("images", ("request",))
        uploads.settle(runtime(), principal(), len(upload.images))
        try:
            key = REFERENCE_KEY.load(uploads.json_part(upload, "request"))
        except ma.ValidationError as exc:
            errors = {f"request.{path}": reasons for path, reasons in flatten(exc.messages).items()}
            raise InvalidInput("the reference is invalid", errors) from None
        return references.register_images(
            runtime(), principal(), key["kind"], key["reference"], upload.images
        ), 201
