"""marshmallow schemas: the API contract, and the source of the OpenAPI document.

Strict types throughout: money is `Integer(strict=True)` in minor units, so 12.5 or "100" is a 422,
and every schema rejects unknown fields. There is deliberately no free-text field on incidents.
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import RAISE, ValidationError, validate, validates_schema

from ledger.api import fastload
from ledger.api.openapi import Choice, DateTimeText, LoadedLater, Variant
from ledger.api.vocabulary import (
    CATEGORIES,
    CONFIRMATIONS,
    CURRENCY,
    DISPUTE_STATUSES,
    INCIDENT_STATUSES,
    PDQ,
    PURPOSES,
    REFUND_KINDS,
    RESTRICTIONS,
    RESTRICTIONS_HELP,
    RETRACT_REASONS,
    TIERS,
    TOKEN,
)
from ledger.identity import IDENTIFIER_TYPES

IDENTIFIER_TYPE = Choice("IdentifierType", IDENTIFIER_TYPES)
CATEGORY = Choice("Category", CATEGORIES)
CONFIRMATION = Choice("Confirmation", CONFIRMATIONS, "How the platform confirmed the incident")
INCIDENT_STATUS = Choice("IncidentStatus", INCIDENT_STATUSES)
RETRACT_REASON = Choice("RetractReason", RETRACT_REASONS)
REFUND_KIND = Choice("RefundKind", REFUND_KINDS)
REFERENCE_KIND = Choice("ReferenceKind", ("listing", "shipping"))
PURPOSE = Choice("Purpose", PURPOSES, "Why the lookup is made (purpose limitation; the consumer sees it)")
TIER = Choice("Tier", TIERS, "From the least to the most restrictive")
RESTRICTION = Choice("Restriction", RESTRICTIONS, RESTRICTIONS_HELP)
DISPUTE_STATUS = Choice("DisputeStatus", DISPUTE_STATUSES)


def storable(value: str) -> None:
    """PostgreSQL text cannot hold NUL and UTF-8 cannot encode a lone surrogate: refuse both as a 422 here
    rather than failing at INSERT with a 500."""
    if "\x00" in value or any("\ud800" <= ch <= "\udfff" for ch in value):
        raise ValidationError("must not contain NUL or unpaired surrogate characters")


class Strict(ma.Schema):
    class Meta:
        unknown = RAISE


def _plain_load(schema: ma.Schema, many: object, partial: object, unknown: object) -> bool:
    """True for `load(data)` on a schema built without options: the only case ledger/api/fastload.py
    mirrors. Anything else goes to marshmallow."""
    return (
        many is None
        and partial is None
        and unknown is None
        and not schema.many
        and not schema.partial
        and schema.unknown == RAISE
        and schema.only is None
        and not schema.exclude
        and not schema.dump_only
    )


class IdentifierSchema(Strict):
    """One consumer identifier: a raw `value` (normalised and tokenised by the server, then forgotten) or
    a `token` computed by the platform with `ledger.identity.tokenize`. Exactly one of the two."""

    type = ma.fields.String(required=True, validate=IDENTIFIER_TYPE)
    value = ma.fields.String(validate=validate.Length(min=1, max=256), load_only=True)
    token = ma.fields.String(validate=TOKEN)

    @validates_schema
    def one_of_value_or_token(self, data: dict[str, Any], **_: Any) -> None:
        if ("value" in data) == ("token" in data):
            raise ValidationError("give exactly one of 'value' or 'token'", "_schema")


class AmountSchema(Strict):
    value = ma.fields.Integer(
        required=True,
        strict=True,
        validate=validate.Range(min=1, max=10**13),
        metadata={"description": "Amount in minor units (fen for CNY), a positive integer"},
    )
    currency = ma.fields.String(required=True, validate=CURRENCY)


class EvidenceSchema(Strict):
    pdq = ma.fields.List(
        ma.fields.String(validate=PDQ), required=True, validate=validate.Length(min=1, max=20)
    )


class EvidenceHeldSchema(ma.Schema):
    pdq = ma.fields.List(
        ma.fields.String(), required=True, metadata={"description": "The PDQ hashes the incident holds"}
    )


Identifiers = ma.fields.List(
    ma.fields.Nested(IdentifierSchema), required=True, validate=validate.Length(min=1, max=10)
)


class IncidentSchema(Strict):
    """A confirmed fraudulent refund. Report outcomes you have confirmed, not suspicions."""

    external_id = ma.fields.String(
        required=True,
        validate=[validate.Length(min=1, max=128), storable],
        metadata={"description": "Your own reference; unique per platform; retrying with it is safe"},
    )
    category = ma.fields.String(required=True, validate=CATEGORY)
    confirmation = ma.fields.String(required=True, validate=CONFIRMATION)
    amount = ma.fields.Nested(AmountSchema, required=True)
    occurred_at = ma.fields.AwareDateTime(
        required=True, format="iso", metadata={"description": "RFC 3339; not in the future; within retention"}
    )
    identifiers = Identifiers
    evidence = ma.fields.Nested(EvidenceSchema)
    consumer_notified_at = ma.fields.AwareDateTime(
        format="iso",
        metadata={
            "description": "RFC 3339: when you told the consumer that this would be reported. Required under "
            "the `cn` profile (征信业管理条例 Art. 15) and not later than the report's receipt"
        },
    )

    def load(self, data: Any, *, many: bool | None = None, partial: Any = None, unknown: Any = None) -> Any:
        """The hand-written fast path when it is sure the body is valid; marshmallow otherwise."""
        loaded = fastload.incident(data) if _plain_load(self, many, partial, unknown) else None
        if loaded is not None:
            return loaded
        return super().load(data, many=many, partial=partial, unknown=unknown)


# Reused by every request: loading keeps no state on the schema, and building one deep-copies its fields.
INCIDENT_SCHEMA = IncidentSchema()


class IncidentBatchSchema(Strict):
    incidents = ma.fields.List(
        LoadedLater(IncidentSchema),
        required=True,
        validate=validate.Length(min=1, max=1000),
        metadata={"description": "1 to 1,000 incidents, each as for POST /v1/incidents"},
    )


class IncidentCreatedSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    external_id = ma.fields.String(required=True)
    status = ma.fields.String(required=True, validate=INCIDENT_STATUS)
    receipt = ma.fields.Nested(
        "ReceiptSchema",
        required=True,
        metadata={
            "description": "The log's signed promise to include the report's leaf (docs/transparency.md)"
        },
    )
    inclusion = ma.fields.Nested(
        "InclusionProofSchema",
        metadata={
            "description": "Only with `Prefer: wait=N` and once the leaf is under a signed checkpoint: its "
            "inclusion proof"
        },
    )


class IncidentSchemaOut(IncidentCreatedSchema):
    category = ma.fields.String(required=True, validate=CATEGORY)
    confirmation = ma.fields.String(required=True, validate=CONFIRMATION)
    amount = ma.fields.Nested(AmountSchema, required=True)
    occurred_at = ma.fields.DateTime(required=True)
    reported_at = ma.fields.DateTime(required=True)
    status_reason = ma.fields.String(required=True, allow_none=True)
    consumer_notified_at = ma.fields.DateTime(required=True, allow_none=True)
    evidence = ma.fields.Nested(EvidenceHeldSchema, required=True)


class ProblemItemSchema(ma.Schema):
    type = ma.fields.String(required=True)
    title = ma.fields.String(required=True)
    status = ma.fields.Integer(required=True)
    detail = ma.fields.String()
    errors = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.List(ma.fields.String()))


class IncidentBatchCreatedSchema(ma.Schema):
    """A batch item that was stored (201) or was a replay of an earlier identical report (200)."""

    kind = ma.fields.String(required=True, validate=validate.OneOf(("incident",)))
    index = ma.fields.Integer(required=True, metadata={"description": "Position in the request"})
    status = ma.fields.Integer(required=True, validate=validate.OneOf((201, 200)))
    incident = ma.fields.Nested(IncidentCreatedSchema, required=True)


class IncidentBatchProblemSchema(ma.Schema):
    """A batch item that was refused: 409 (the `external_id` was reported with another body) or 422."""

    kind = ma.fields.String(required=True, validate=validate.OneOf(("problem",)))
    index = ma.fields.Integer(required=True, metadata={"description": "Position in the request"})
    status = ma.fields.Integer(required=True, validate=validate.OneOf((409, 422)))
    problem = ma.fields.Nested(ProblemItemSchema, required=True)


class IncidentBatchResultSchema(ma.Schema):
    results = ma.fields.List(
        Variant("kind", {"incident": IncidentBatchCreatedSchema, "problem": IncidentBatchProblemSchema}),
        required=True,
        metadata={"description": "One per submitted incident, in order; `kind` says which shape it has"},
    )


class RetractSchema(Strict):
    reason = ma.fields.String(required=True, validate=RETRACT_REASON)


HEX_HASH = r"^[0-9a-f]{64}$"


class ReceiptSchema(ma.Schema):
    """Like Certificate Transparency's signed certificate timestamp: a promise, signed with the log key,
    to include `leaf_hash` in the log by `integrate_by`. Verify it with `ledger log verify-remote`."""

    leaf_hash = ma.fields.String(
        required=True, metadata={"description": "RFC 9162 leaf hash of the event (hex)", "pattern": HEX_HASH}
    )
    received_at = ma.fields.String(
        required=True,
        metadata={
            "description": "When the event was recorded (UTC, microseconds, exactly as signed)",
            "format": "date-time",
        },
    )
    log_origin = ma.fields.String(required=True, metadata={"description": "The log's origin line"})
    integrate_by = ma.fields.String(
        required=True,
        metadata={"description": "received_at plus the maximum merge delay", "format": "date-time"},
    )
    promise = ma.fields.String(
        required=True,
        metadata={
            "description": "base64(4-byte key id || Ed25519 signature) over the promise text: "
            "`consumer-credit-ledger/promise/v1`, origin, base64 leaf hash, received_at, integrate_by, "
            "each followed by a newline"
        },
    )


class CheckpointSchema(ma.Schema):
    tree_size = ma.fields.Integer(required=True)
    root_hash = ma.fields.String(required=True, metadata={"description": "hex", "pattern": HEX_HASH})
    note = ma.fields.String(
        required=True,
        metadata={"description": "The C2SP tlog-checkpoint signed note, with every witness cosignature"},
    )
    cosignatures = ma.fields.Integer(required=True)
    signed_at = ma.fields.DateTime(required=True)


class LogKeySchema(ma.Schema):
    origin = ma.fields.String(required=True)
    vkey = ma.fields.String(required=True, metadata={"description": "C2SP signed-note verifier key"})
    key_id = ma.fields.String(required=True, metadata={"description": "The note key id (hex)"})
    public_key = ma.fields.String(required=True, metadata={"description": "Ed25519 public key (base64)"})
    algorithm = ma.fields.String(required=True)
    mmd_seconds = ma.fields.Integer(required=True, metadata={"description": "Maximum merge delay"})


class InclusionQuerySchema(Strict):
    leaf_hash = ma.fields.String(validate=validate.Regexp(HEX_HASH), metadata={"pattern": HEX_HASH})
    index = ma.fields.Integer(validate=validate.Range(min=0, max=2**62))
    tree_size = ma.fields.Integer(
        validate=validate.Range(min=1, max=2**62),
        metadata={"description": "A signed checkpoint's size; the latest by default"},
    )

    @ma.validates_schema
    def one_of(self, data: dict[str, Any], **_: Any) -> None:
        if ("leaf_hash" in data) == ("index" in data):
            raise ma.ValidationError("give exactly one of leaf_hash and index", "leaf_hash")


class InclusionProofSchema(ma.Schema):
    leaf_index = ma.fields.Integer(required=True)
    leaf_hash = ma.fields.String(required=True, metadata={"pattern": HEX_HASH})
    tree_size = ma.fields.Integer(required=True)
    root_hash = ma.fields.String(required=True, metadata={"pattern": HEX_HASH})
    proof = ma.fields.List(ma.fields.String(metadata={"pattern": HEX_HASH}), required=True)
    checkpoint = ma.fields.String(required=True, metadata={"description": "The signed checkpoint note"})


class InquiryInclusionQuerySchema(Strict):
    lookup_id = ma.fields.UUID(metadata={"description": "The lookup id your answer carried"})
    index = ma.fields.Integer(validate=validate.Range(min=0, max=2**62))
    tree_size = ma.fields.Integer(
        validate=validate.Range(min=1, max=2**62),
        metadata={"description": "A signed checkpoint's size; the latest by default"},
    )

    @ma.validates_schema
    def one_of(self, data: dict[str, Any], **_: Any) -> None:
        if ("lookup_id" in data) == ("index" in data):
            raise ma.ValidationError("give exactly one of lookup_id and index", "lookup_id")


class InquiryInclusionProofSchema(InclusionProofSchema):
    lookup_id = ma.fields.UUID(required=True)
    leaf = ma.fields.String(
        required=True,
        metadata={
            "description": "The leaf (canonical JSON; leaf_hash is SHA-256 of 0x00 and its bytes): who asked, "
            "when, why, the answer's tier and reasons, a salted commitment to the identifiers and the SHA-256 "
            "of the answer's bytes as you received them (`response`)"
        },
    )


class ConsistencyQuerySchema(Strict):
    from_ = ma.fields.Integer(
        data_key="from", required=True, validate=validate.Range(min=1, max=2**62), attribute="from"
    )
    to = ma.fields.Integer(required=True, validate=validate.Range(min=1, max=2**62))


class ConsistencyProofSchema(ma.Schema):
    from_ = ma.fields.Integer(data_key="from", attribute="from", required=True)
    to = ma.fields.Integer(required=True)
    proof = ma.fields.List(ma.fields.String(metadata={"pattern": HEX_HASH}), required=True)


class CosignatureSchema(Strict):
    tree_size = ma.fields.Integer(required=True, validate=validate.Range(min=0, max=2**62))
    cosigner = ma.fields.String(
        required=True,
        validate=validate.Length(min=1, max=400),
        metadata={"description": "The witness's verifier key, signature type 0x04 (C2SP tlog-cosignature)"},
    )
    signature = ma.fields.String(
        required=True,
        validate=validate.Length(min=1, max=600),
        metadata={
            "description": "The cosignature line: `— <name> <base64(key id || timestamp || signature)>`"
        },
    )


class LogStatusSchema(ma.Schema):
    lag_seconds = ma.fields.Float(required=True)
    mmd_seconds = ma.fields.Integer(required=True)
    tree_size = ma.fields.Integer(required=True)
    within_mmd = ma.fields.Boolean(required=True)


class RefundSchema(Strict):
    reference = ma.fields.String(
        validate=[validate.Length(min=1, max=128), storable],
        metadata={"description": "Your refund or order reference (purpose limitation)"},
    )
    amount = ma.fields.Nested(AmountSchema)
    kind = ma.fields.String(validate=REFUND_KIND)
    delivered_at = ma.fields.AwareDateTime(
        format="iso",
        metadata={
            "description": "RFC 3339: when the goods were delivered. An uploaded photo whose EXIF capture time "
            "is certainly earlier gets EVIDENCE_PREDATES_DELIVERY (docs/evidence.md)"
        },
    )


class LookupSchema(Strict):
    """Ask, before approving a refund, whether to restrict it. Every lookup is recorded for the consumer."""

    identifiers = Identifiers
    purpose = ma.fields.String(required=True, validate=PURPOSE)
    refund = ma.fields.Nested(RefundSchema)
    evidence = ma.fields.Nested(EvidenceSchema)
    operator_ref = ma.fields.String(
        validate=[validate.Length(min=1, max=128), storable],
        metadata={
            "description": "Your reference for the agent behind a manual review; kept in the inquiry trail "
            "(征信业管理条例 Art. 22). Use a staff number, not a name"
        },
    )

    def load(self, data: Any, *, many: bool | None = None, partial: Any = None, unknown: Any = None) -> Any:
        """The hand-written fast path when it is sure the body is valid; marshmallow otherwise."""
        loaded = fastload.lookup(data) if _plain_load(self, many, partial, unknown) else None
        if loaded is not None:
            return loaded
        return super().load(data, many=many, partial=partial, unknown=unknown)


LOOKUP_SCHEMA = LookupSchema()  # shared, as INCIDENT_SCHEMA


class LookupBatchSchema(Strict):
    lookups = ma.fields.List(
        LoadedLater(LookupSchema),
        required=True,
        validate=validate.Length(min=1, max=100),
        metadata={"description": "1 to 100 lookups, each as for POST /v1/lookups"},
    )


class ReasonSchema(ma.Schema):
    code = ma.fields.String(required=True)
    text_zh = ma.fields.String(required=True)
    text_en = ma.fields.String(required=True)


class DecisionSchema(ma.Schema):
    tier = ma.fields.String(required=True, validate=TIER)
    restrictions = ma.fields.List(ma.fields.String(validate=RESTRICTION), required=True)
    score = ma.fields.Integer(required=True)
    reasons = ma.fields.List(ma.fields.Nested(ReasonSchema), required=True)


class SummarySchema(ma.Schema):
    incidents = ma.fields.Integer(required=True)
    platforms = ma.fields.Integer(required=True, metadata={"description": "How many platforms; never which"})
    last_incident_at = DateTimeText(required=True, allow_none=True)


class AdverseActionSchema(ma.Schema):
    """FCRA §615 / PIPL Art. 24 notice: a consortium record influenced the decision; how to get and dispute it."""

    text_zh = ma.fields.String(required=True)
    text_en = ma.fields.String(required=True)
    decided_by = ma.fields.String(required=True)
    how_to_get_report_zh = ma.fields.String(required=True)
    how_to_get_report_en = ma.fields.String(required=True)
    how_to_dispute_zh = ma.fields.String(required=True)
    how_to_dispute_en = ma.fields.String(required=True)


class LookupResultSchema(ma.Schema):
    lookup_id = ma.fields.UUID(required=True)
    decision = ma.fields.Nested(DecisionSchema, required=True)
    summary = ma.fields.Nested(SummarySchema, required=True)
    policy_version = ma.fields.String(required=True)
    computed_at = DateTimeText(
        required=True, allow_none=True, metadata={"description": "When the score was computed"}
    )
    stale = ma.fields.Boolean(required=True, metadata={"description": "A recompute is pending"})
    consumer_statement = ma.fields.Boolean(
        required=True,
        metadata={"description": "The consumer filed a statement about a disputed entry (text not shown)"},
    )
    adverse_action = ma.fields.Nested(
        AdverseActionSchema,
        required=True,
        allow_none=True,
        metadata={
            "description": "A notice the refund system can show when the decision carries a restriction; "
            "null otherwise"
        },
    )
    evidence_matches = ma.fields.List(
        ma.fields.Nested("EvidenceMatchSchema"),  # defined with the evidence schemas below
        required=True,
        metadata={
            "description": "One entry per submitted evidence hash or image, in order (`evidence.pdq` first, "
            "then uploaded images); empty when the lookup carried no evidence"
        },
    )


class LookupBatchAnsweredSchema(ma.Schema):
    """A batch item that was answered, with its own lookup id and audit record."""

    kind = ma.fields.String(required=True, validate=validate.OneOf(("lookup",)))
    index = ma.fields.Integer(required=True, metadata={"description": "Position in the request"})
    status = ma.fields.Integer(required=True, validate=validate.OneOf((200,)))
    lookup = ma.fields.Nested(LookupResultSchema, required=True)


class LookupBatchProblemSchema(ma.Schema):
    """A batch item that was refused (422); no audit record was written for it."""

    kind = ma.fields.String(required=True, validate=validate.OneOf(("problem",)))
    index = ma.fields.Integer(required=True, metadata={"description": "Position in the request"})
    status = ma.fields.Integer(required=True, validate=validate.OneOf((422,)))
    problem = ma.fields.Nested(ProblemItemSchema, required=True)


class LookupBatchResultSchema(ma.Schema):
    results = ma.fields.List(
        Variant("kind", {"lookup": LookupBatchAnsweredSchema, "problem": LookupBatchProblemSchema}),
        required=True,
        metadata={"description": "One per submitted lookup, in order; `kind` says which shape it has"},
    )


class HealthSchema(ma.Schema):
    status = ma.fields.String(required=True, validate=validate.OneOf(("ok", "degraded")))
    checks = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.String())


class DisputeOpenSchema(Strict):
    """Opened by the operator's consumer channel on the consumer's behalf."""

    identifiers = Identifiers
    incident_id = ma.fields.UUID(metadata={"description": "The disputed incident; or set all_entries"})
    all_entries = ma.fields.Boolean(
        load_default=False, metadata={"description": "Dispute every entry about me"}
    )
    statement = ma.fields.String(
        validate=[validate.Length(max=500), storable],
        metadata={"description": "The consumer's statement, at most 500 characters"},
    )
    contact_ref = ma.fields.String(
        validate=[validate.Length(min=1, max=128), storable],
        metadata={"description": "The operator's own contact reference"},
    )


class DisputeSchemaOut(ma.Schema):
    id = ma.fields.UUID(required=True)
    incident_id = ma.fields.UUID(required=True)
    status = ma.fields.String(required=True, validate=DISPUTE_STATUS)
    respond_by = ma.fields.DateTime(required=True)


class DisputeOpenedSchema(ma.Schema):
    disputes = ma.fields.List(ma.fields.Nested(DisputeSchemaOut), required=True)


class DisputeListQuerySchema(Strict):
    status = ma.fields.String(validate=DISPUTE_STATUS)


class DisputeForReporterSchema(DisputeSchemaOut):
    external_id = ma.fields.String(required=True)
    statement = ma.fields.String(
        required=True, allow_none=True, metadata={"description": "The consumer's statement"}
    )
    opened_at = ma.fields.DateTime(required=True)
    resolved_at = ma.fields.DateTime(required=True, allow_none=True)
    basis = ma.fields.String(required=True, allow_none=True, validate=CONFIRMATION)


class DisputeListSchema(ma.Schema):
    disputes = ma.fields.List(ma.fields.Nested(DisputeForReporterSchema), required=True)


class DisputeResponseSchema(Strict):
    outcome = ma.fields.String(required=True, validate=validate.OneOf(("upheld", "retracted")))
    basis = ma.fields.String(
        validate=CONFIRMATION,
        metadata={"description": "Required when upheld: how it was re-verified"},
    )


class SubjectReportRequestSchema(Strict):
    identifiers = Identifiers


class ReportQuerySchema(Strict):
    lang = ma.fields.String(
        validate=validate.OneOf(("zh", "en")),
        metadata={"description": "Language of the page: Chinese (the default) or English"},
    )


class PlatformNameSchema(ma.Schema):
    slug = ma.fields.String(required=True)
    name = ma.fields.String(required=True)


class ReportDisputeSchema(ma.Schema):
    id = ma.fields.String(required=True)
    status = ma.fields.String(required=True, validate=DISPUTE_STATUS)
    opened_at = ma.fields.DateTime(required=True)
    respond_by = ma.fields.DateTime(required=True)
    resolved_at = ma.fields.DateTime(required=True, allow_none=True)
    statement_filed = ma.fields.Boolean(required=True)


class ReportIncidentSchema(ma.Schema):
    id = ma.fields.String(required=True)
    category = ma.fields.String(required=True, validate=CATEGORY)
    confirmation = ma.fields.String(required=True, validate=CONFIRMATION)
    amount = ma.fields.Nested(AmountSchema, required=True)
    occurred_at = ma.fields.DateTime(required=True)
    reported_at = ma.fields.DateTime(required=True)
    status = ma.fields.String(required=True, validate=INCIDENT_STATUS)
    status_reason = ma.fields.String(required=True, allow_none=True)
    consumer_notified_at = ma.fields.DateTime(
        required=True,
        allow_none=True,
        metadata={"description": "When the platform told the consumer (Art. 15)"},
    )
    platform = ma.fields.Nested(PlatformNameSchema, required=True)
    disputes = ma.fields.List(ma.fields.Nested(ReportDisputeSchema), required=True)
    evidence_images = ma.fields.Integer(
        required=True,
        metadata={
            "description": "How many evidence photos the incident holds (only their PDQ hashes are kept)"
        },
    )


class ReportScoreSchema(ma.Schema):
    score = ma.fields.Integer(required=True)
    tier = ma.fields.String(required=True, validate=TIER)
    restrictions = ma.fields.List(ma.fields.String(validate=RESTRICTION), required=True)
    reasons = ma.fields.List(ma.fields.Nested(ReasonSchema), required=True)
    policy_version = ma.fields.String(required=True)
    computed_at = ma.fields.DateTime(required=True)


class ReportLookupSchema(ma.Schema):
    platform = ma.fields.Nested(PlatformNameSchema, required=True)
    at = ma.fields.DateTime(required=True)
    purpose = ma.fields.String(required=True, validate=PURPOSE)


class FreeReportsSchema(ma.Schema):
    year = ma.fields.Integer(required=True, metadata={"description": "The calendar year counted"})
    free_per_year = ma.fields.Integer(required=True)
    used = ma.fields.Integer(required=True, metadata={"description": "Reports this year, this one included"})
    remaining = ma.fields.Integer(required=True, metadata={"description": "Free reports left this year"})
    this_report_free = ma.fields.Boolean(required=True)
    basis = ma.fields.String(required=True, metadata={"description": "The article that sets the number"})


class SubjectReportSchema(ma.Schema):
    generated_at = ma.fields.DateTime(required=True)
    jurisdiction = ma.fields.String(required=True, validate=validate.OneOf(("cn", "us")))
    dispute_days = ma.fields.Integer(required=True, metadata={"description": "Days a dispute takes at most"})
    free_reports = ma.fields.Nested(
        FreeReportsSchema,
        required=True,
        metadata={"description": "Free subject reports per calendar year, counted (征信业管理条例 Art. 17)"},
    )
    incidents = ma.fields.List(ma.fields.Nested(ReportIncidentSchema), required=True)
    scores = ma.fields.List(ma.fields.Nested(ReportScoreSchema), required=True)
    lookups = ma.fields.List(ma.fields.Nested(ReportLookupSchema), required=True)


# -- evidence images (docs/evidence.md) -------------------------------------------------------------------


class LabelFindingSchema(ma.Schema):
    """One AI-content label found in an uploaded image's metadata."""

    source = ma.fields.String(
        required=True,
        metadata={
            "description": "Where it was found: `xmp:TC260:AIGC` (GB 45438-2025 Annex E in XMP), "
            "`exif:UserComment`, `png:tEXt`, `png:zTXt`, `png:iTXt`, `xmp:Iptc4xmpExt:DigitalSourceType` or `c2pa`"
        },
    )
    label = ma.fields.String(
        required=True,
        allow_none=True,
        validate=Choice("AiLabel", ("ai_generated", "ai_edited", "possibly", "suspected")),
        metadata={"description": "What the label says; null when it is malformed"},
    )
    producer = ma.fields.String(
        required=True, allow_none=True, metadata={"description": "The label's content producer or generator"}
    )
    signature_valid = ma.fields.Boolean(
        required=True,
        allow_none=True,
        metadata={
            "description": "C2PA only: whether the manifest's signature and hashes check out (not whether the "
            "signer is trusted: the ledger holds no trust list); null for unsigned carriers"
        },
    )
    malformed = ma.fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "Why a label that is present could not be read; null when it was read"},
    )


class ImageFindingsSchema(ma.Schema):
    """What an uploaded image's own metadata says. Never stored apart from the lookup's answer."""

    labels = ma.fields.List(ma.fields.Nested(LabelFindingSchema), required=True)
    capture_time = ma.fields.String(
        required=True,
        allow_none=True,
        metadata={
            "description": "EXIF DateTimeOriginal, with OffsetTimeOriginal when the file has it (ISO 8601; "
            "local time without an offset otherwise)"
        },
    )
    software = ma.fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "EXIF Software, such as an editor's name: information, not a reason"},
    )
    malformed = ma.fields.List(
        ma.fields.String(), required=True, metadata={"description": "Metadata blocks that could not be read"}
    )
    predates_delivery = ma.fields.Boolean(
        required=True,
        metadata={
            "description": "The capture time is before `refund.delivered_at` whatever its time zone "
            "(EVIDENCE_PREDATES_DELIVERY)"
        },
    )


class ReferenceMatchSchema(ma.Schema):
    """The registered reference photo a claim photo may be derived from: its kind and distance only."""

    kind = ma.fields.String(
        required=True,
        validate=REFERENCE_KIND,
        metadata={"description": "listing or shipping"},
    )
    distance = ma.fields.Integer(required=True, metadata={"description": "PDQ Hamming distance, 0 to 31"})


class EvidenceMatchSchema(ma.Schema):
    """What a lookup learns about one submitted hash. Never which platform holds the match, never its
    incident."""

    hash = ma.fields.String(
        required=True,
        metadata={
            "description": "The submitted PDQ hash, or an uploaded image's hash as stored (ThreatExchange's "
            "convention: EXIF orientation and transparency ignored)"
        },
    )
    displayed_hash = ma.fields.String(
        allow_none=True,
        metadata={
            "description": "An uploaded image's hash as displayed (EXIF orientation applied, transparency "
            "flattened onto white), when it differs from `hash`; both were matched. Null otherwise"
        },
    )
    quality = ma.fields.Integer(
        required=True,
        allow_none=True,
        metadata={"description": "PDQ quality 0..100 of an uploaded image; null for a submitted hash"},
    )
    low_quality = ma.fields.Boolean(
        required=True,
        metadata={"description": "Quality below the policy minimum (50): never matched on its own"},
    )
    matched = ma.fields.Boolean(
        required=True,
        metadata={"description": "Confirmed forged evidence lies within the policy threshold (31 bits)"},
    )
    best_distance = ma.fields.Integer(
        required=True,
        allow_none=True,
        metadata={"description": "Hamming distance of the closest match; null without one"},
    )
    category = ma.fields.String(
        required=True,
        allow_none=True,
        validate=CATEGORY,
        metadata={"description": "Category of the incident with the closest match"},
    )
    platforms = ma.fields.Integer(
        required=True,
        metadata={"description": "How many distinct platforms hold confirmed evidence within the threshold"},
    )
    derived_from_reference = ma.fields.Nested(
        ReferenceMatchSchema,
        allow_none=True,
        metadata={
            "description": "The closest registered reference photo within the threshold (a listing of any "
            "platform, or your own shipping photo): kind and distance, never whose. Null without one"
        },
    )
    findings = ma.fields.Nested(
        ImageFindingsSchema,
        allow_none=True,
        metadata={"description": "An uploaded image's metadata findings; null for a submitted hash"},
    )


class EvidenceHashSchema(ma.Schema):
    hash = ma.fields.String(
        required=True,
        metadata={
            "description": "PDQ hash as stored (ThreatExchange's convention), 64 lowercase hex characters"
        },
    )
    displayed_hash = ma.fields.String(
        required=True,
        allow_none=True,
        metadata={
            "description": "PDQ hash as displayed (EXIF orientation applied, transparency flattened onto "
            "white) when it differs from `hash`; stored and matched too. Null otherwise"
        },
    )
    quality = ma.fields.Integer(required=True, metadata={"description": "PDQ quality, 0..100"})
    low_quality = ma.fields.Boolean(
        required=True, metadata={"description": "Stored, but never matched on its own (quality below 50)"}
    )
    added = ma.fields.Boolean(
        required=True, metadata={"description": "False if the incident already had this image's hashes"}
    )


class EvidenceAddedSchema(ma.Schema):
    incident_id = ma.fields.UUID(required=True)
    evidence = ma.fields.List(ma.fields.Nested(EvidenceHashSchema), required=True)
    stored = ma.fields.Integer(
        required=True, metadata={"description": "Evidence hashes the incident now holds (at most 20)"}
    )


class IndexLinksSchema(ma.Schema):
    reference = ma.fields.String(required=True, metadata={"description": "The API reference, for people"})
    explorer = ma.fields.String(
        required=True, metadata={"description": "Swagger UI over the OpenAPI document"}
    )
    openapi = ma.fields.String(required=True, metadata={"description": "The OpenAPI document"})
    errors = ma.fields.String(required=True, metadata={"description": "The problem types"})


class IndexSchema(ma.Schema):
    name = ma.fields.String(required=True)
    docs = ma.fields.Nested(IndexLinksSchema, required=True)
