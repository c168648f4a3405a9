"""The API's closed vocabularies and text patterns: what the schemas (ledger/api/schemas.py) and the hot
path's hand-written loader (ledger/api/fastload.py) both check a request against.

They live apart from the schemas so that the schemas can use the fast loader and the fast loader can use
these rules without the two modules importing each other.
"""

from __future__ import annotations

from ledger.api.openapi import Pattern

CATEGORIES = (
    "fabricated_evidence",
    "false_damage_claim",
    "false_not_received",
    "refund_only_abuse",
    "return_fraud",
    "chargeback_abuse",
)
CONFIRMATIONS = ("platform_review", "merchant_evidence", "consumer_admission", "court_or_police")
PURPOSES = ("refund_review", "dispute_investigation", "account_review")
REFUND_KINDS = ("refund_only", "return_and_refund")
RETRACT_REASONS = ("reported_in_error", "overturned_on_review", "consumer_resolved", "duplicate_report")
INCIDENT_STATUSES = ("active", "disputed", "retracted", "expired")
DISPUTE_STATUSES = ("open", "upheld", "retracted", "expired")
TIERS = ("clear", "review", "return_required", "hold")
RESTRICTIONS = ("manual_review", "no_refund_only", "require_return", "no_auto_refund")
RESTRICTIONS_HELP = (
    "What a refund system should do for each restriction: `manual_review`: route the claim to a person "
    "before approving; `no_refund_only`: do not grant a refund without the goods coming back; "
    "`require_return`: approve only after the goods are returned and checked; `no_auto_refund`: never "
    "approve automatically, even on a return. With refund.kind=return_and_refund, `no_refund_only` and "
    "`require_return` are already satisfied and are left out. The ledger informs the decision; the "
    "refund system makes it."
)
PDQ = Pattern("[0-9a-f]{64}", error="must be 64 lowercase hex characters")
TOKEN = Pattern("[0-9a-f]{64}", error="must be 64 lowercase hex characters")
CURRENCY = Pattern("[A-Z]{3}", error="must be an ISO 4217 code such as CNY")
