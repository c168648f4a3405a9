"""Turn the identifiers of a request into tokens, forgetting raw values at once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ledger import identity
from ledger.errors import InvalidIdentifier, InvalidInput


def tokenize_all(
    identifiers: Sequence[Mapping[str, Any]], key: str, field: str = "identifiers"
) -> list[tuple[str, str]]:
    """[(type, token)] in request order, duplicates removed; InvalidInput names each bad item."""
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
        if (id_type, token) not in out:
            out.append((id_type, token))
    if errors:
        raise InvalidInput("one or more identifiers are invalid", errors)
    return out
