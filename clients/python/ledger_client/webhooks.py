"""Verifying the ledger's webhooks: Standard Webhooks signatures, checked by the `standardwebhooks` library
the server signs with, so the two cannot disagree."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from standardwebhooks import Webhook, WebhookVerificationError

from ledger_client.errors import LedgerClientError
from ledger_client.types import WebhookEvent


class InvalidWebhook(LedgerClientError):
    """The headers or the signature do not check out, or the timestamp is more than 5 minutes off."""


def verify_webhook(secret: str, body: bytes | str, headers: Mapping[str, str]) -> WebhookEvent:
    """The event, once `webhook-id`, `webhook-timestamp` and `webhook-signature` are checked against the
    endpoint's `whsec_` secret and the exact body received. Deduplicate on `headers["webhook-id"]`: a
    delivery is at least once."""
    try:
        return cast(WebhookEvent, Webhook(secret).verify(body, dict(headers)))
    except (WebhookVerificationError, ValueError) as exc:
        raise InvalidWebhook(str(exc)) from None
