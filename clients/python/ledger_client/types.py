"""Typed requests and responses, as TypedDicts: what the server's OpenAPI document describes, in a form a
type checker reads and plain JSON fills. `NotRequired` marks optional fields."""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

IdentifierType = Literal["id_card", "phone", "email", "payment_account", "device_id"]
Purpose = Literal["refund_review", "dispute_investigation", "account_review"]
EventType = Literal["dispute.opened", "dispute.resolved", "incident.retracted", "subject.cleared"]


class Identifier(TypedDict):
    """A raw `value` (tokenised by the server) or a `token` (tokenised here, see `tokenize`)."""

    type: IdentifierType
    value: NotRequired[str]
    token: NotRequired[str]


class Amount(TypedDict):
    value: int  # minor units (fen)
    currency: str


class Evidence(TypedDict):
    pdq: list[str]


class Incident(TypedDict):
    external_id: str
    category: str
    confirmation: str
    amount: Amount
    occurred_at: str
    identifiers: list[Identifier]
    consumer_notified_at: NotRequired[str]  # required under the `cn` profile (征信业管理条例 Art. 15)
    evidence: NotRequired[Evidence]


class Receipt(TypedDict):
    """The log's signed promise to include the report's leaf by `integrate_by` (docs/transparency.md)."""

    leaf_hash: str
    received_at: str
    log_origin: str
    integrate_by: str
    promise: str


class IncidentCreated(TypedDict):
    id: str
    external_id: str
    status: str
    receipt: Receipt
    inclusion: NotRequired[dict[str, object]]  # with `Prefer: wait=N`, once under a signed checkpoint


class IncidentView(IncidentCreated):
    category: str
    confirmation: str
    amount: Amount
    occurred_at: str
    reported_at: str
    status_reason: str | None
    consumer_notified_at: str | None
    evidence: Evidence


class Problem(TypedDict):
    type: str
    title: str
    status: int
    detail: str
    errors: NotRequired[dict[str, list[str]]]


class BatchItem(TypedDict):
    """`kind` says which of `incident` (201 or 200) and `problem` (409 or 422) the item carries."""

    kind: Literal["incident", "problem"]
    index: int
    status: int
    incident: NotRequired[IncidentCreated]
    problem: NotRequired[Problem]


class Refund(TypedDict, total=False):
    reference: str
    amount: Amount
    kind: Literal["refund_only", "return_and_refund"]


class Lookup(TypedDict):
    identifiers: list[Identifier]
    purpose: Purpose
    refund: NotRequired[Refund]
    evidence: NotRequired[Evidence]
    operator_ref: NotRequired[str]  # the agent behind a manual review (征信业管理条例 Art. 22)


class Reason(TypedDict):
    code: str
    text_zh: str
    text_en: str


class Decision(TypedDict):
    tier: Literal["clear", "review", "return_required", "hold"]
    restrictions: list[str]
    score: int
    reasons: list[Reason]


class LookupResult(TypedDict):
    lookup_id: str
    decision: Decision
    summary: dict[str, object]
    policy_version: str
    computed_at: str | None
    stale: bool
    consumer_statement: bool
    adverse_action: dict[str, str] | None
    evidence_matches: list[dict[str, object]]


class LookupBatchItem(TypedDict):
    """`kind` says which of `lookup` (200) and `problem` the item carries."""

    kind: Literal["lookup", "problem"]
    index: int
    status: int
    lookup: NotRequired[LookupResult]
    problem: NotRequired[Problem]


class Dispute(TypedDict):
    id: str
    incident_id: str
    status: Literal["open", "upheld", "retracted", "expired"]
    respond_by: str
    external_id: NotRequired[str]
    statement: NotRequired[str | None]
    opened_at: NotRequired[str]
    resolved_at: NotRequired[str | None]
    basis: NotRequired[str | None]


class WebhookEndpoint(TypedDict):
    id: str
    url: str
    events: list[str]
    status: Literal["active", "disabled"]
    status_reason: str | None
    consecutive_failures: int
    created_at: str
    status_at: str
    secret: NotRequired[str]  # only in the answer to its creation


class WebhookEvent(TypedDict):
    type: EventType
    timestamp: str
    data: dict[str, object]
