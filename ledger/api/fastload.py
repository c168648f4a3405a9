"""A fast path for loading the two hot request bodies: POST /v1/lookups and POST /v1/incidents.

Request loading (a schema built per request, then marshmallow's generic fields) cost about 30% of their
CPU. The views now share one schema instance each, and these functions check the rules of `LookupSchema`
and `IncidentSchema` by hand and return exactly what `load` would return, but only for a body they are
sure is valid. Anything else (an unknown key, a wrong type, a bound crossed, a value of a type JSON
cannot produce) gives None, and the schema loads it with marshmallow, so every error message stays
marshmallow's. tests/unit/test_fastload.py checks the two against each other.

Each object is a table of its fields in the schema's declaration order (which is the order marshmallow
gives the loaded keys). A check returns the loaded value, or None when it is not sure: no field of these
schemas allows null, so None is never a loaded value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import marshmallow as ma
from marshmallow import ValidationError

from ledger.api.openapi import Pattern
from ledger.api.vocabulary import CATEGORIES, CONFIRMATIONS, CURRENCY, PDQ, PURPOSES, REFUND_KINDS, TOKEN
from ledger.identity import IDENTIFIER_TYPES

Check = Callable[[Any], Any]
Fields = dict[str, tuple[bool, Check]]
REQUIRED, OPTIONAL = True, False

_SURROGATE = re.compile("[\ud800-\udfff]")


def _text(low: int, high: int, *, storable: bool = False) -> Check:
    """A String with a Length(low, high) validator and, if asked, the `storable` one."""

    def check(value: Any) -> str | None:
        if type(value) is not str or not low <= len(value) <= high:
            return None
        if storable and ("\x00" in value or _SURROGATE.search(value)):
            return None
        return value

    return check


def _one_of(choices: tuple[str, ...]) -> Check:
    def check(value: Any) -> str | None:
        return value if type(value) is str and value in choices else None

    return check


def _matches(pattern: Pattern) -> Check:
    """The schema's own whole-string pattern (fullmatch: a trailing newline is refused, as ECMAScript's `$`
    would)."""
    full = pattern.full

    def check(value: Any) -> str | None:
        return value if type(value) is str and full.fullmatch(value) else None

    return check


def _money(value: Any) -> int | None:
    """Integer(strict=True) with Range(1, 10**13): a bool is not an int here."""
    return value if type(value) is int and 1 <= value <= 10**13 else None


def _aware_datetime() -> Check:
    """An AwareDateTime field made as IncidentSchema's `occurred_at` and `consumer_notified_at` (and
    RefundSchema's `delivered_at`) are
    (format "iso", no default time zone) parses it, so the two read a time alike."""
    field = ma.fields.AwareDateTime(format="iso")

    def check(value: Any) -> Any:
        if type(value) is not str:
            return None
        try:
            return field.deserialize(value)
        except ValidationError:
            return None

    return check


def _list(item: Check, low: int, high: int) -> Check:
    def check(value: Any) -> list[Any] | None:
        if type(value) is not list or not low <= len(value) <= high:
            return None
        loaded = [item(element) for element in value]
        return None if any(element is None for element in loaded) else loaded

    return check


def _object(value: Any, fields: Fields) -> dict[str, Any] | None:
    """A Nested schema with `unknown = RAISE`."""
    if type(value) is not dict or not value.keys() <= fields.keys():
        return None
    loaded = {}
    for key, (required, check) in fields.items():
        if key in value:
            field_value = check(value[key])
            if field_value is None:
                return None
            loaded[key] = field_value
        elif required:
            return None
    return loaded


def _nested(fields: Fields) -> Check:
    return lambda value: _object(value, fields)


IDENTIFIER: Fields = {
    "type": (REQUIRED, _one_of(IDENTIFIER_TYPES)),
    "value": (OPTIONAL, _text(1, 256)),
    "token": (OPTIONAL, _matches(TOKEN)),
}


def _identifier(value: Any) -> dict[str, Any] | None:
    loaded = _object(value, IDENTIFIER)
    if loaded is None or ("value" in loaded) == ("token" in loaded):
        return None
    return loaded


AMOUNT: Fields = {"value": (REQUIRED, _money), "currency": (REQUIRED, _matches(CURRENCY))}
EVIDENCE: Fields = {"pdq": (REQUIRED, _list(_matches(PDQ), 1, 20))}
REFUND: Fields = {
    "reference": (OPTIONAL, _text(1, 128, storable=True)),
    "amount": (OPTIONAL, _nested(AMOUNT)),
    "kind": (OPTIONAL, _one_of(REFUND_KINDS)),
    "delivered_at": (OPTIONAL, _aware_datetime()),
}
IDENTIFIERS = _list(_identifier, 1, 10)
LOOKUP: Fields = {
    "identifiers": (REQUIRED, IDENTIFIERS),
    "purpose": (REQUIRED, _one_of(PURPOSES)),
    "refund": (OPTIONAL, _nested(REFUND)),
    "evidence": (OPTIONAL, _nested(EVIDENCE)),
    "operator_ref": (OPTIONAL, _text(1, 128, storable=True)),
}
INCIDENT: Fields = {
    "external_id": (REQUIRED, _text(1, 128, storable=True)),
    "category": (REQUIRED, _one_of(CATEGORIES)),
    "confirmation": (REQUIRED, _one_of(CONFIRMATIONS)),
    "amount": (REQUIRED, _nested(AMOUNT)),
    "occurred_at": (REQUIRED, _aware_datetime()),
    "identifiers": (REQUIRED, IDENTIFIERS),
    "evidence": (OPTIONAL, _nested(EVIDENCE)),
    "consumer_notified_at": (OPTIONAL, _aware_datetime()),
}


def lookup(body: object) -> dict[str, Any] | None:
    """What `LookupSchema().load(body)` returns, or None when the body may be invalid."""
    return _object(body, LOOKUP)


def incident(body: object) -> dict[str, Any] | None:
    """What `IncidentSchema().load(body)` returns, or None when the body may be invalid."""
    return _object(body, INCIDENT)
