"""Turn the identifiers of a request into tokens, forgetting raw values at once.

Members compute `member token = HMAC(identity key, type:value)` (`ledger.identity`), and every member
holds that key. So that one member's leaked key plus a dump of the database or Redis does not make the
stored tokens reversible by enumerating phone numbers, what the ledger stores and indexes is keyed
again with a secret only the server holds: `token at rest = HMAC(LEDGER_TOKEN_KEY, member token)`.
Without the setting, tokens are stored as members compute them (see docs/operations.md).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any

from ledger import identity
from ledger.errors import InvalidIdentifier, InvalidInput


def at_rest(member_token: str, token_key: bytes | None) -> str:
    """The token the ledger stores for a member token (itself when no server token key is set)."""
    if token_key is None:
        return member_token
    return hmac.new(token_key, member_token.encode(), hashlib.sha256).hexdigest()


def tokenize_all(
    identifiers: Sequence[Mapping[str, Any]],
    key: str,
    field: str = "identifiers",
    token_key: bytes | None = None,
) -> list[tuple[str, str]]:
    """[(type, token at rest)] in request order, duplicates removed; InvalidInput names each bad item."""
    errors: dict[str, list[str]] = {}
    out: list[tuple[str, str]] = []
    for index, item in enumerate(identifiers):
        id_type = item["type"]
        try:
            if item.get("token") is not None:
                token = identity.check_token(id_type, item["token"])
            else:
                token = identity.tokenize(id_type, item["value"], key)
        except InvalidIdentifier as exc:
            which = "token" if item.get("token") is not None else "value"
            errors[f"{field}.{index}.{which}"] = [exc.reason]
            continue
        token = at_rest(token, token_key)
        if (id_type, token) not in out:
            out.append((id_type, token))
    if errors:
        raise InvalidInput("one or more identifiers are invalid", errors)
    return out
