"""Transparency log endpoints: checkpoints, the log key, inclusion and consistency proofs, cosignatures.

Checkpoints, the key and consistency proofs are public, like a published newspaper notice: they reveal
nothing about any member. Inclusion proofs need a `report` key and only cover the caller's own events;
another platform's leaf is answered exactly like an unknown one. Answers that can never change (a
consistency proof, an inclusion proof at a given size) say so in Cache-Control.

The inquiry log (one leaf per lookup record, its own origin) has the same endpoints under
`/v1/log/inquiries/`; its inclusion proofs need a `lookup` key and cover only the caller's own lookups.
"""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from ledger.api import schemas
from ledger.api.context import principal, requires, runtime
from ledger.services import transparency

blp = Blueprint("log", __name__, url_prefix="/v1/log", description="The transparency log")
SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}]
IMMUTABLE = "public, max-age=31536000, immutable"


def _cached(body: Any, control: str) -> tuple[Any, int, dict[str, str]]:
    return body, 200, {"Cache-Control": control}


@blp.route("/checkpoint")
class LatestCheckpoint(MethodView):
    @blp.doc(operationId="get_log_checkpoint")
    @blp.response(200, schemas.CheckpointSchema)
    @blp.alt_response(404, response="NOT_FOUND", description="No checkpoint signed yet")
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def get(self) -> Any:
        """The latest signed checkpoint, with the witness cosignatures collected for it

        `note` is a C2SP tlog-checkpoint signed note; check it with the key from `GET /v1/log/key`.
        """
        return _cached(transparency.latest_checkpoint(runtime()), "no-cache")


@blp.route("/checkpoints/<int:tree_size>")
class CheckpointAt(MethodView):
    @blp.doc(operationId="get_log_checkpoint_at")
    @blp.response(200, schemas.CheckpointSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, tree_size: int) -> Any:
        """The checkpoint signed at one tree size

        The checkpoint never changes; its cosignatures may grow, hence the short cache lifetime.
        """
        return _cached(transparency.checkpoint_at(runtime(), tree_size), "public, max-age=60")


@blp.route("/key")
class LogKey(MethodView):
    @blp.doc(operationId="get_log_key")
    @blp.response(200, schemas.LogKeySchema)
    def get(self) -> Any:
        """The log's public key, as a C2SP verifier key and as raw Ed25519"""
        return _cached(transparency.public_key(runtime()), "public, max-age=3600")


@blp.route("/inclusion")
class Inclusion(MethodView):
    @blp.doc(security=SECURITY, operationId="get_inclusion_proof")
    @requires("report")
    @blp.arguments(schemas.InclusionQuerySchema, location="query")
    @blp.response(200, schemas.InclusionProofSchema)
    @blp.alt_response(
        404, response="NOT_FOUND", description="Unknown, not yet signed, or another platform's leaf"
    )
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
    def get(self, query: dict[str, Any]) -> Any:
        """An inclusion proof for one of your leaves, by leaf hash or index (RFC 9162 §2.1.3)

        Against the checkpoint at `tree_size`, the latest by default. Cacheable when `tree_size` is given.
        """
        body = transparency.inclusion_proof(
            runtime(),
            principal(),
            index=query.get("index"),
            leaf_hash=bytes.fromhex(query["leaf_hash"]) if "leaf_hash" in query else None,
            tree_size=query.get("tree_size"),
        )
        control = "private, max-age=31536000, immutable" if "tree_size" in query else "private, no-cache"
        return _cached(body, control)


@blp.route("/consistency")
class Consistency(MethodView):
    @blp.doc(operationId="get_consistency_proof")
    @blp.arguments(schemas.ConsistencyQuerySchema, location="query")
    @blp.response(200, schemas.ConsistencyProofSchema)
    @blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
    def get(self, query: dict[str, Any]) -> Any:
        """A consistency proof between two tree sizes (RFC 9162 §2.1.4)

        Proves that the tree at `to` extends the tree at `from`: the log only grew.
        """
        return _cached(transparency.consistency_proof(runtime(), query["from"], query["to"]), IMMUTABLE)


@blp.route("/cosignatures")
class Cosignatures(MethodView):
    @blp.doc(security=SECURITY, operationId="add_cosignature")
    @requires("report")
    @blp.arguments(schemas.CosignatureSchema)
    @blp.response(200, schemas.CheckpointSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
    def post(self, body: dict[str, Any]) -> Any:
        """Cosign a checkpoint as a witness (C2SP tlog-cosignature)

        Check consistency from the last checkpoint you cosigned first (`ledger log verify-remote
        --witness-key` does both). The checkpoint, with every cosignature, is returned.
        """
        return transparency.add_cosignature(
            runtime(), principal(), body["tree_size"], body["cosigner"], body["signature"]
        )


@blp.route("/inquiries/checkpoint")
class InquiryCheckpoint(MethodView):
    @blp.doc(operationId="get_inquiry_log_checkpoint")
    @blp.response(200, schemas.CheckpointSchema)
    @blp.alt_response(404, response="NOT_FOUND", description="No checkpoint signed yet")
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def get(self) -> Any:
        """The inquiry log's latest signed checkpoint

        The inquiry log has a leaf for every lookup record; check the note with `GET /v1/log/inquiries/key`.
        """
        return _cached(transparency.latest_checkpoint(runtime(), transparency.INQUIRY_LOG), "no-cache")


@blp.route("/inquiries/checkpoints/<int:tree_size>")
class InquiryCheckpointAt(MethodView):
    @blp.doc(operationId="get_inquiry_log_checkpoint_at")
    @blp.response(200, schemas.CheckpointSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, tree_size: int) -> Any:
        """The inquiry log's checkpoint signed at one tree size"""
        return _cached(transparency.checkpoint_at(runtime(), tree_size, transparency.INQUIRY_LOG), IMMUTABLE)


@blp.route("/inquiries/key")
class InquiryLogKey(MethodView):
    @blp.doc(operationId="get_inquiry_log_key")
    @blp.response(200, schemas.LogKeySchema)
    def get(self) -> Any:
        """The inquiry log's public key: the log key under the inquiry log's origin"""
        return _cached(transparency.public_key(runtime(), transparency.INQUIRY_LOG), "public, max-age=3600")


@blp.route("/inquiries/inclusion")
class InquiryInclusion(MethodView):
    @blp.doc(security=SECURITY, operationId="get_inquiry_inclusion_proof")
    @requires("lookup")
    @blp.arguments(schemas.InquiryInclusionQuerySchema, location="query")
    @blp.response(200, schemas.InquiryInclusionProofSchema)
    @blp.alt_response(
        404, response="NOT_FOUND", description="Unknown, not yet signed, or another platform's lookup"
    )
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
    def get(self, query: dict[str, Any]) -> Any:
        """An inclusion proof in the inquiry log for one of your lookups, by lookup id or leaf index

        With the leaf itself: check that its `response` is the SHA-256 of the answer you received, then
        the proof against the checkpoint (RFC 9162 §2.1.3). The latest checkpoint by default.
        """
        body = transparency.inquiry_inclusion_proof(
            runtime(),
            principal(),
            index=query.get("index"),
            lookup_id=query.get("lookup_id"),
            tree_size=query.get("tree_size"),
        )
        control = "private, max-age=31536000, immutable" if "tree_size" in query else "private, no-cache"
        return _cached(body, control)


@blp.route("/inquiries/consistency")
class InquiryConsistency(MethodView):
    @blp.doc(operationId="get_inquiry_consistency_proof")
    @blp.arguments(schemas.ConsistencyQuerySchema, location="query")
    @blp.response(200, schemas.ConsistencyProofSchema)
    @blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
    def get(self, query: dict[str, Any]) -> Any:
        """A consistency proof between two sizes of the inquiry log (RFC 9162 §2.1.4)"""
        return _cached(
            transparency.consistency_proof(runtime(), query["from"], query["to"], transparency.INQUIRY_LOG),
            IMMUTABLE,
        )
