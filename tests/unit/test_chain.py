"""The hash chain's pure core: a canonical encoding that every verifier reproduces byte for byte, and a
re-verification that names the first event that does not check out.

If the encoding depended on key order or accepted floats, two honest verifiers could disagree about an
untouched ledger; if `first_bad_seq` missed a change, the operator could rewrite history unnoticed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ledger.domain.chain import (
    GENESIS_HASH,
    ChainEvent,
    canonical,
    entry_hash,
    first_bad_seq,
    format_time,
    identifiers_commitment,
)

T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)

JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**63), st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=10,
)
PAYLOADS = st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=6)
# Chains of many events: flat payloads keep generation cheap; the encoding tests above cover nesting.
EVENT_PAYLOADS = st.dictionaries(st.text(max_size=6), JSON_SCALARS, max_size=3)
# Other test processes share these cores: never fail on wall-clock time, only on behaviour.
PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def build_chain(payloads: list[Mapping[str, Any]], kind: str = "reported") -> list[ChainEvent]:
    events, prev = [], GENESIS_HASH
    for seq, payload in enumerate(payloads, start=1):
        at = T0 + timedelta(seconds=seq)
        digest = entry_hash(prev, seq, kind, at, payload)
        events.append(ChainEvent(seq, kind, at, payload, prev, digest))
        prev = digest
    return events


def reversed_keys(value: Any) -> Any:
    """The same JSON value with every object's keys inserted in the opposite order."""
    if isinstance(value, dict):
        return {k: reversed_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reversed_keys(v) for v in value]
    return value


# -- canonical encoding ------------------------------------------------------------------------------
def test_canonical_form_is_sorted_compact_ascii() -> None:
    assert canonical({"b": 1, "a": [True, None, "é"]}) == b'{"a":[true,null,"\\u00e9"],"b":1}'


@PROPERTY
@given(PAYLOADS)
def test_canonical_is_independent_of_key_order(payload: dict[str, Any]) -> None:
    assert canonical(payload) == canonical(reversed_keys(payload))


@PROPERTY
@given(PAYLOADS)
def test_canonical_round_trips_and_is_a_fixed_point(payload: dict[str, Any]) -> None:
    encoded = canonical(payload)
    assert json.loads(encoded) == payload
    assert canonical(json.loads(encoded)) == encoded  # what PostgreSQL gives back re-encodes identically
    assert encoded.isascii()


@pytest.mark.parametrize(
    "value", [1.5, {"amount": 12.5}, {"a": [1, {"b": 0.0}]}, [float("nan")], {"x": (1, 2.0)}]
)
def test_floats_are_refused_anywhere(value: Any) -> None:
    with pytest.raises(TypeError, match="float"):
        canonical(value)


def test_non_string_keys_are_refused() -> None:
    with pytest.raises(TypeError, match="keys"):
        canonical({1: "a"})


@PROPERTY
@given(PAYLOADS, st.floats(allow_nan=False), st.text(max_size=5))
def test_a_float_hidden_in_any_payload_is_refused(payload: dict[str, Any], number: float, key: str) -> None:
    with pytest.raises(TypeError):
        canonical({**payload, "nested": [{key: number}]})


# -- entry hash --------------------------------------------------------------------------------------
BASE = {"prev_hash": "a" * 64, "seq": 7, "kind": "reported", "at": T0, "payload": {"amount": 45000, "x": [1]}}
CHANGES = [
    ("prev_hash", "b" * 64),
    ("seq", 8),
    ("kind", "retracted"),
    ("at", T0 + timedelta(microseconds=1)),
    ("payload", {"amount": 45001, "x": [1]}),
    ("payload", {"amount": 45000, "x": [1], "extra": None}),
    ("payload", {"amount": 45000, "x": [1, 1]}),
    ("payload", {"amount": "45000", "x": [1]}),
]


@pytest.mark.parametrize(("field", "value"), CHANGES)
def test_entry_hash_changes_when_any_field_changes(field: str, value: Any) -> None:
    assert entry_hash(**{**BASE, field: value}) != entry_hash(**BASE)


def test_entry_hash_is_the_same_instant_in_any_time_zone() -> None:
    shanghai = T0.astimezone(timezone(timedelta(hours=8)))
    assert format_time(shanghai) == format_time(T0) == "2026-11-01T02:00:00.000000Z"
    assert entry_hash(**{**BASE, "at": shanghai}) == entry_hash(**BASE)


@PROPERTY
@given(PAYLOADS, st.integers(min_value=1, max_value=10**9))
def test_entry_hash_is_deterministic_and_hex(payload: dict[str, Any], seq: int) -> None:
    first = entry_hash(GENESIS_HASH, seq, "reported", T0, payload)
    assert first == entry_hash(GENESIS_HASH, seq, "reported", T0, reversed_keys(payload))
    assert len(first) == 64
    assert int(first, 16) >= 0


def test_identifiers_commitment_hides_order_and_duplicates_but_not_the_salt() -> None:
    tokens = ["b" * 64, "a" * 64]
    assert identifiers_commitment(b"s1", tokens) == identifiers_commitment(
        b"s1", [*reversed(tokens), "a" * 64]
    )
    assert identifiers_commitment(b"s1", tokens) != identifiers_commitment(b"s2", tokens)
    assert identifiers_commitment(b"s1", tokens) != identifiers_commitment(b"s1", tokens[:1])


# -- re-verification ---------------------------------------------------------------------------------
@PROPERTY
@given(st.lists(EVENT_PAYLOADS, max_size=8))
def test_an_untouched_chain_verifies(payloads: list[dict[str, Any]]) -> None:
    assert first_bad_seq(build_chain(payloads)) is None


@PROPERTY
@given(st.lists(EVENT_PAYLOADS, min_size=1, max_size=8), st.data())
def test_a_changed_payload_is_found_at_its_sequence_number(payloads: list[dict[str, Any]], data: Any) -> None:
    events = build_chain(payloads)
    index = data.draw(st.integers(0, len(events) - 1))
    tampered = dict(events[index].payload)
    tampered["tampered"] = data.draw(JSON_SCALARS)
    assume(tampered != events[index].payload)
    events[index] = replace(events[index], payload=tampered)
    assert first_bad_seq(events) == index + 1


@PROPERTY
@given(st.lists(EVENT_PAYLOADS, min_size=1, max_size=8), st.data())
def test_a_changed_field_is_found(payloads: list[dict[str, Any]], data: Any) -> None:
    events = build_chain(payloads)
    index = data.draw(st.integers(0, len(events) - 1))
    event = events[index]
    change = data.draw(
        st.sampled_from(
            [
                {"kind": "retracted"},
                {"at": event.at + timedelta(seconds=1)},
                {"entry_hash": "f" * 64 if event.entry_hash != "f" * 64 else "e" * 64},
                {"prev_hash": "1" * 64},
            ]
        )
    )
    events[index] = replace(event, **change)
    assert first_bad_seq(events) == index + 1


@PROPERTY
@given(st.lists(EVENT_PAYLOADS, min_size=2, max_size=8), st.data())
def test_reordered_events_are_found(payloads: list[dict[str, Any]], data: Any) -> None:
    events = build_chain(payloads)
    i = data.draw(st.integers(0, len(events) - 2))
    j = data.draw(st.integers(i + 1, len(events) - 1))
    events[i], events[j] = events[j], events[i]
    assert first_bad_seq(events) == i + 1


@PROPERTY
@given(st.lists(EVENT_PAYLOADS, min_size=2, max_size=8), st.data())
def test_a_missing_event_is_named(payloads: list[dict[str, Any]], data: Any) -> None:
    events = build_chain(payloads)
    index = data.draw(st.integers(0, len(events) - 2))  # not the last: a cut tail is the checkpoint's job
    del events[index]
    assert first_bad_seq(events) == index + 1


def test_a_rewritten_event_with_a_recomputed_hash_breaks_the_next_link() -> None:
    events = build_chain([{"n": n} for n in range(5)])
    forged = replace(events[2], payload={"n": 99})
    events[2] = replace(
        forged, entry_hash=entry_hash(forged.prev_hash, 3, forged.kind, forged.at, forged.payload)
    )
    assert first_bad_seq(events) == 4


def test_verification_can_resume_from_a_checkpoint() -> None:
    events = build_chain([{"n": n} for n in range(10)])
    assert first_bad_seq(events[4:], start_prev=events[3].entry_hash, start_seq=5) is None
    assert first_bad_seq(events[4:], start_prev=GENESIS_HASH, start_seq=5) == 5
    assert first_bad_seq(events[4:], start_prev=events[3].entry_hash, start_seq=4) == 4


@PROPERTY
@given(
    st.lists(st.integers(), min_size=3, max_size=30).map(lambda ns: [{"n": n} for n in ns]),
    st.randoms(use_true_random=False),
)
def test_any_shuffle_of_a_chain_is_detected_unless_it_is_the_identity(
    payloads: list[dict[str, Any]], rnd: random.Random
) -> None:
    events = build_chain(payloads)
    shuffled = events[:]
    rnd.shuffle(shuffled)
    found = first_bad_seq(shuffled)
    if shuffled == events:
        assert found is None
    else:
        first_moved = next(i for i, (a, b) in enumerate(zip(shuffled, events, strict=True)) if a != b)
        assert found == first_moved + 1
