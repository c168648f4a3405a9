"""The decision cache's wire format: what scoring writes is what lookups read, and what the Lua
compare-and-set script (`_SET_IF_NEWER`, in the same module) can order.

If `decode(encode(...))` lost or changed a field, a lookup answered from Redis would differ from the
same lookup answered from PostgreSQL; if the sequence prefix or `o` moved, the script would let an older
score replace a newer one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.domain.decisions import SubjectView
from ledger.storage.decision_cache import (
    SEQ_WIDTH,
    DeviceSignal,
    decode,
    encode,
    order,
    subject_view,
)

AT = datetime(2026, 11, 20, 2, 0, 0, 123456, tzinfo=UTC)

times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))
sequences = st.integers(min_value=0, max_value=10**SEQ_WIDTH - 1)
subject_views = st.builds(
    subject_view,
    subject_id=st.integers(min_value=1, max_value=2**63 - 1),
    score=st.integers(min_value=0, max_value=100),
    tier=st.sampled_from(["clear", "review", "return_required", "block_refund_only"]),
    reasons=st.lists(st.text(max_size=30), max_size=6),
    incidents=st.integers(min_value=0, max_value=10**6),
    platforms=st.integers(min_value=0, max_value=1000),
    last_incident_at=st.none() | times,
    policy_version=st.text(min_size=1, max_size=20),
    computed_at=times,
)
device_signals = st.builds(
    DeviceSignal,
    subjects=st.integers(min_value=0, max_value=10**6),
    policy_version=st.none() | st.text(min_size=1, max_size=20),
    computed_at=st.none() | times.map(datetime.isoformat),
)


@given(seq=sequences, value=subject_views | device_signals)
def test_decode_inverts_encode(seq: int, value: SubjectView | DeviceSignal) -> None:
    assert decode(encode(seq, value)) == (seq, value)
    assert decode(encode(seq, value).encode()) == (seq, value)  # as redis-py returns it: bytes


@given(seq=sequences, value=subject_views | device_signals)
def test_the_prefix_and_o_are_where_the_lua_script_reads_them(
    seq: int, value: SubjectView | DeviceSignal
) -> None:
    text = encode(seq, value)
    assert int(text[:SEQ_WIDTH]) == seq  # string.sub(current, 1, 20)
    assert json.loads(text[SEQ_WIDTH:])["o"] == order(value)  # cjson.decode(string.sub(current, 21))['o']


@given(earlier=times, gap=st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=400)))
def test_a_later_computation_orders_after_an_earlier_one(earlier: datetime, gap: timedelta) -> None:
    first = subject_view(1, 10, "review", [], 1, 1, None, "v1", earlier)
    second = subject_view(1, 10, "review", [], 1, 1, None, "v1", earlier + gap)
    assert order(first) < order(second)


def test_a_subject_entry_is_the_documented_bytes() -> None:
    view = subject_view(7, 42, "review", ("MULTI_PLATFORM", "近期"), 2, 2, AT, "2026.11", AT)
    assert encode(12, view) == (
        "00000000000000000012"
        '{"at":"2026-11-20T02:00:00.123456+00:00","last":"2026-11-20T02:00:00.123456+00:00","n":2,'
        '"o":1795140000123456,"p":2,"pv":"2026.11","s":7,"score":42,"tier":"review",'
        '"why":["MULTI_PLATFORM","\\u8fd1\\u671f"]}'
    )


def test_a_device_entry_is_the_documented_bytes() -> None:
    assert encode(3, DeviceSignal(4, "2026.11", AT.isoformat())) == (
        '00000000000000000003{"at":"2026-11-20T02:00:00.123456+00:00","d":4,"o":1795140000123456,"pv":"2026.11"}'
    )
    # Read from PostgreSQL, a device signal has no version or time, and orders first.
    assert order(DeviceSignal(4)) == 0


def test_a_sequence_wider_than_the_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="20 digits"):
        encode(10**SEQ_WIDTH, DeviceSignal(1))
