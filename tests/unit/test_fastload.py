"""The hand-written fast path for the hot request bodies (ledger/api/fastload.py), against marshmallow.

Differential: for valid bodies, and for bodies with one or two things wrong, whenever the fast path
answers, its answer must be exactly what marshmallow loads: the same keys in the same order, the same
types and values. And for typical valid bodies it must answer, or the requests never use it.
"""

from __future__ import annotations

import copy
import string
from collections.abc import Callable
from datetime import UTC, timedelta, timezone
from typing import Any

import marshmallow as ma
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.api import fastload, schemas
from tests.support import incident_body

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FastLoad = Callable[[object], dict[str, Any] | None]


def marshmallow_load(schema: ma.Schema, body: object) -> Any:
    """marshmallow's own answer, or its error: `ma.Schema.load` skips the schema's fast-path override."""
    try:
        return ma.Schema.load(schema, body)  # type: ignore[arg-type]
    except ma.ValidationError as exc:
        return exc


def assert_agrees(fast_load: FastLoad, schema: ma.Schema, body: object) -> dict[str, Any] | None:
    fast = fast_load(body)
    slow = marshmallow_load(schema, body)
    if fast is not None:
        assert not isinstance(slow, ma.ValidationError), slow.messages
        assert fast == slow
        assert repr(fast) == repr(slow)  # key order, and 1 is not True
    # and the schema's public load answers as marshmallow does, errors included
    if isinstance(slow, ma.ValidationError):
        with pytest.raises(ma.ValidationError) as raised:
            schema.load(body)  # type: ignore[arg-type]
        assert raised.value.messages == slow.messages
    else:
        assert repr(schema.load(body)) == repr(slow)  # type: ignore[arg-type]
    return fast


# -- valid bodies, built from the schemas' rules --------------------------------------------------------

HEX64 = st.text("0123456789abcdef", min_size=64, max_size=64)
# NUL and lone surrogates are fine in an identifier value (normalisation refuses them later), never in
# a reference or an external_id.
ANY_CHAR = st.characters() | st.sampled_from(["\x00", "\ud800", "\udfff"])
STORABLE = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
TIMEZONES = [UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5, minutes=-30))]


@st.composite
def occurred_at(draw: st.DrawFn) -> str:
    moment = draw(st.datetimes(timezones=st.sampled_from(TIMEZONES)))
    text = moment.isoformat(timespec=draw(st.sampled_from(["seconds", "milliseconds", "microseconds"])))
    return text.replace("+00:00", "Z") if draw(st.booleans()) else text


IDENTIFIER = st.fixed_dictionaries(
    {"type": st.sampled_from(schemas.IDENTIFIER_TYPES), "value": st.text(ANY_CHAR, min_size=1, max_size=256)}
) | st.fixed_dictionaries({"token": HEX64, "type": st.sampled_from(schemas.IDENTIFIER_TYPES)})
AMOUNT = st.fixed_dictionaries(
    {
        "currency": st.text(string.ascii_uppercase, min_size=3, max_size=3),
        "value": st.integers(1, 10**13) | st.sampled_from([1, 10**13]),
    }
)
EVIDENCE = st.fixed_dictionaries({"pdq": st.lists(HEX64, min_size=1, max_size=20)})
REFERENCE = st.text(STORABLE, min_size=1, max_size=128) | st.sampled_from(["x", "x" * 128])
REFUND = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.sampled_from(schemas.REFUND_KINDS),
        "amount": AMOUNT,
        "reference": REFERENCE,
        "delivered_at": occurred_at(),
    },
)
LOOKUP = st.fixed_dictionaries(
    {
        "purpose": st.sampled_from(schemas.PURPOSES),
        "identifiers": st.lists(IDENTIFIER, min_size=1, max_size=10),
    },
    optional={"evidence": EVIDENCE, "refund": REFUND, "operator_ref": REFERENCE},
)


INCIDENT = st.fixed_dictionaries(
    {
        "identifiers": st.lists(IDENTIFIER, min_size=1, max_size=10),
        "occurred_at": occurred_at(),
        "amount": AMOUNT,
        "confirmation": st.sampled_from(schemas.CONFIRMATIONS),
        "category": st.sampled_from(schemas.CATEGORIES),
        "external_id": REFERENCE,
    },
    optional={"evidence": EVIDENCE, "consumer_notified_at": occurred_at()},
)

# -- the same, with one or two things changed: near the edge of a rule, or over it ----------------------

DELETE = object()
EXTRA_FIELDS = {"note": "x", "token": "a" * 64, "value": "x", "evidence": {"pdq": ["a" * 64]}}
OTHER_TYPES: list[Any] = [None, True, False, 0, 1.0, "", [], {}]
# Every choice of every field, so a field checked against another field's choices is caught.
VOCABULARY = sorted(
    {
        *schemas.IDENTIFIER_TYPES, *schemas.PURPOSES, *schemas.REFUND_KINDS, *schemas.CATEGORIES,
        *schemas.CONFIRMATIONS, *schemas.RETRACT_REASONS,
    }
)  # fmt: skip


def near_misses(value: Any) -> list[Any]:
    """Values close to `value` that a schema may or may not accept: each rule's edges and wrong types."""
    if isinstance(value, bool):
        return [*OTHER_TYPES, int(value)]
    if isinstance(value, int):
        return [*OTHER_TYPES, value - 1, value + 1, -1, 1, 10**13, 10**13 + 1, float(value), str(value)]
    if isinstance(value, str):
        sized = ["x" * n for n in (1, 3, 63, 64, 65, 128, 129, 256, 257)] + ["a" * n for n in (63, 64, 65)]
        return [
            *OTHER_TYPES, *sized, "A" * 64, value.lower(), value.upper(), value + "\n", value[:-1],
            value + value[-1:], "\x00" + value, value + "\ud800", "\udfff", int("1" * max(1, len(value))),
            *VOCABULARY,
        ]  # fmt: skip
    if isinstance(value, list):
        longer = (value * 21)[:21] if value else [None]
        return [
            *OTHER_TYPES, longer[:10], longer[:11], longer[:20], longer, tuple(value), [*value, None],
            dict.fromkeys(map(str, value)),
        ]  # fmt: skip
    return OTHER_TYPES


def places(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    """Every (path, value) in a body, the body itself first."""
    found = [(path, node)]
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        found += places(value, (*path, key))
    return found


def changed(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A copy of `body` with the value at `path` replaced, or deleted (DELETE)."""
    if not path:
        return copy.deepcopy(value)
    body = copy.deepcopy(body)
    *parents, last = path
    target = body
    for key in parents:
        target = target[key]
    if value is DELETE:
        del target[last]
    else:
        target[last] = copy.deepcopy(value)
    return body


def one_change_each(body: dict[str, Any]) -> list[Any]:
    """Every body one near miss, deletion or extra field away from `body`."""
    bodies = []
    for path, value in places(body):
        bodies += [changed(body, path, other) for other in near_misses(value)]
        if path:
            bodies.append(changed(body, path, DELETE))
        if isinstance(value, dict):
            bodies += [changed(body, (*path, k), v) for k, v in EXTRA_FIELDS.items() if k not in value]
    return bodies


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]]) -> Any:
    body: Any = draw(valid)
    for _ in range(draw(st.integers(1, 2))):
        path, value = draw(st.sampled_from(places(body)))
        if isinstance(value, dict) and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(EXTRA_FIELDS)))
            body = changed(body, (*path, key), EXTRA_FIELDS[key])
        elif path and draw(st.integers(0, 4)) == 0:
            body = changed(body, path, DELETE)
        else:
            body = changed(body, path, draw(st.sampled_from(near_misses(value))))
    return body


# -- the properties ----------------------------------------------------------------------------------------


@PROPERTY
@given(LOOKUP)
def test_valid_lookups_take_the_fast_path_and_agree(body: dict[str, Any]) -> None:
    assert assert_agrees(fastload.lookup, schemas.LOOKUP_SCHEMA, body) is not None


@PROPERTY
@given(INCIDENT)
def test_valid_incidents_take_the_fast_path_and_agree(body: dict[str, Any]) -> None:
    assert assert_agrees(fastload.incident, schemas.INCIDENT_SCHEMA, body) is not None


@settings(PROPERTY, max_examples=250)
@given(mutated(LOOKUP))
def test_any_lookup_the_fast_path_answers_loads_the_same(body: Any) -> None:
    assert_agrees(fastload.lookup, schemas.LOOKUP_SCHEMA, body)


@settings(PROPERTY, max_examples=250)
@given(mutated(INCIDENT))
def test_any_incident_the_fast_path_answers_loads_the_same(body: Any) -> None:
    assert_agrees(fastload.incident, schemas.INCIDENT_SCHEMA, body)


# -- typical bodies, and the cases that must go to marshmallow -------------------------------------------

TYPICAL_LOOKUPS: list[dict[str, Any]] = [
    {  # as benchmarks/lookup.py sends them: raw identifiers, a refund reference and amount
        "identifiers": [
            {"type": "phone", "value": "139 0012 3456"},
            {"type": "email", "value": "SHOPPER123@EXAMPLE.COM"},
            {"type": "device_id", "value": "dev-unknown-4242"},
        ],
        "purpose": "refund_review",
        "refund": {"reference": "RF0000000001", "amount": {"value": 12_345, "currency": "CNY"}, "kind": "refund_only"},
    },
    {"identifiers": [{"type": "phone", "token": "a" * 64}], "purpose": "account_review"},
    {
        "identifiers": [{"type": "email", "value": "a@example.com"}],
        "purpose": "dispute_investigation",
        "evidence": {"pdq": ["0" * 64, "f" * 64]},
        "refund": {"kind": "return_and_refund"},
    },
]  # fmt: skip
TYPICAL_INCIDENTS = [
    incident_body(),
    incident_body("order-2", evidence={"pdq": ["ab" * 32]}, occurred_at="2026-11-01T02:00:00Z"),
    incident_body("order-3", identifiers=[{"type": "id_card", "token": "0" * 64}]),
]


@pytest.mark.parametrize("body", TYPICAL_LOOKUPS)
def test_typical_lookups_take_the_fast_path(body: dict[str, Any]) -> None:
    assert assert_agrees(fastload.lookup, schemas.LOOKUP_SCHEMA, body) is not None


@pytest.mark.parametrize("body", TYPICAL_INCIDENTS)
def test_typical_incidents_take_the_fast_path(body: dict[str, Any]) -> None:
    assert assert_agrees(fastload.incident, schemas.INCIDENT_SCHEMA, body) is not None


def test_the_loaded_body_is_a_copy() -> None:
    """Views add keys to the loaded body (evidence images); the client's body must not change with it."""
    body = copy.deepcopy(TYPICAL_LOOKUPS[2])
    loaded = schemas.LOOKUP_SCHEMA.load(body)
    loaded["identifiers"].append({})
    loaded["evidence"]["pdq"].clear()
    assert body == TYPICAL_LOOKUPS[2]


def test_load_options_go_to_marshmallow() -> None:
    body = {**TYPICAL_LOOKUPS[1], "note": "x"}
    assert "note" not in schemas.LOOKUP_SCHEMA.load(body, unknown=ma.EXCLUDE)
    assert schemas.LookupSchema(partial=True).load({"purpose": "refund_review"}) == {
        "purpose": "refund_review"
    }
    assert schemas.LookupSchema(exclude=["refund"]).load(TYPICAL_LOOKUPS[1]) == TYPICAL_LOOKUPS[1]
    with pytest.raises(ma.ValidationError) as excinfo:
        schemas.LookupSchema(exclude=["refund"]).load(TYPICAL_LOOKUPS[0])
    assert excinfo.value.messages == {"refund": ["Unknown field."]}
    assert schemas.LOOKUP_SCHEMA.load([TYPICAL_LOOKUPS[1]], many=True) == [TYPICAL_LOOKUPS[1]]


@pytest.mark.parametrize("body", TYPICAL_LOOKUPS + TYPICAL_INCIDENTS)
def test_every_near_miss_of_a_typical_body_loads_the_same(body: dict[str, Any]) -> None:
    """Each rule's edges, one at a time and exhaustively: hypothesis alone rarely lands on all of them."""
    fast_load, schema = (
        (fastload.incident, schemas.INCIDENT_SCHEMA)
        if "external_id" in body
        else (fastload.lookup, schemas.LOOKUP_SCHEMA)
    )
    answered = [variant for variant in one_change_each(body) if assert_agrees(fast_load, schema, variant)]
    assert answered  # some near misses are still valid ("x" * 128 as a reference): compared, not skipped
