"""ledger-client: the Consumer Credit Ledger's member library.

- `Client`: one typed method per endpoint, retries where repeating is safe, `ProblemError` for every
  problem+json answer;
- `tokenize` / `normalize`: the server's own identifier rules (vendored from `ledger/identity.py`), so
  raw identifiers never have to leave the member;
- `verify_webhook`: checks a webhook's Standard Webhooks signature.
"""

from __future__ import annotations

from ledger_client._identity import IDENTIFIER_TYPES, STRONG_TYPES, normalize, tokenize
from ledger_client.client import Client
from ledger_client.errors import InvalidIdentifier, LedgerClientError, ProblemError, TransportError
from ledger_client.types import Identifier
from ledger_client.webhooks import InvalidWebhook, verify_webhook

__all__ = [
    "IDENTIFIER_TYPES",
    "STRONG_TYPES",
    "Client",
    "Identifier",
    "InvalidIdentifier",
    "InvalidWebhook",
    "LedgerClientError",
    "ProblemError",
    "TransportError",
    "normalize",
    "token_identifier",
    "tokenize",
    "verify_webhook",
]


def token_identifier(id_type: str, value: str, key: str | bytes) -> Identifier:
    """An identifier as a request carries it when tokenised here: `{"type": ..., "token": ...}`."""
    return {"type": id_type, "token": tokenize(id_type, value, key)}  # type: ignore[typeddict-item]
