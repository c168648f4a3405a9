"""The chain append that runs inside PostgreSQL (`ledger_append` in schema.sql) against the domain's hash.

The database builds the canonical text and hashes it itself, so the lock on the ledger head is held only
while it works; members still re-verify every hash in Python. If the two encodings ever differed by a
byte, an honest ledger would fail `ledger verify`, so they are compared here on awkward payloads.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg.errors
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from ledger.domain import chain
from ledger.storage import chain as chain_store
from ledger.storage.chain import NewEvent
from ledger.storage.db import Connection

# jsonb refuses "\u0000" and lone surrogates, as it did when the client sent Jsonb; never chainable.
TEXT = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12),
    st.sampled_from(['"', "\\", '\\"', "\u2028", "é", "雪", "😀", "</script>", "\x7f", "\x1f"]),
)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**40), max_value=10**40), TEXT)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)),
    max_leaves=12,
)
PAYLOADS = st.dictionaries(TEXT, VALUES, max_size=6)
KINDS = st.sampled_from(["reported", "retracted", "evidence_added", "expired", "Kind_9"])


@pytest.fixture
def conn(database_url: str) -> Iterator[Connection]:
    """A connection whose work is always rolled back, so examples leave the shared chain untouched."""
    with psycopg.connect(database_url, row_factory=dict_row) as connection:
        yield connection
        connection.rollback()


def head(conn: Connection) -> tuple[int, str]:
    row = conn.execute("SELECT seq, head_hash FROM ledger_head").fetchone()
    assert row is not None
    return int(row["seq"]), str(row["head_hash"])


# Each example rolls back, so sharing one connection across examples is safe.
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(st.tuples(KINDS, PAYLOADS), min_size=1, max_size=4))
def test_the_database_hashes_exactly_like_the_domain(
    conn: Connection, events: list[tuple[str, dict[str, Any]]]
) -> None:
    try:
        seq, prev = head(conn)
        appended = chain_store.append(conn, [NewEvent(kind, uuid.uuid4(), p) for kind, p in events])

        assert [a.seq for a in appended] == list(range(seq + 1, seq + 1 + len(events)))
        for (kind, payload), a in zip(events, appended, strict=True):
            assert a.entry_hash == chain.entry_hash(prev, a.seq, kind, a.at, payload)
            prev = a.entry_hash
        assert head(conn) == (appended[-1].seq, appended[-1].entry_hash)

        # What `ledger verify` reads back must re-hash to the same values.
        stored = list(chain_store.iter_events(conn))[-len(events) :]
        assert [e.at for e in stored] == [a.at for a in appended]
        assert chain.first_bad_seq(stored, stored[0].prev_hash, stored[0].seq) is None
        assert [e.payload for e in stored] == [p for _, p in events]
    finally:
        conn.rollback()


def test_one_call_appends_a_thousand_events_in_order(conn: Connection) -> None:
    seq, prev = head(conn)
    events = [NewEvent("reported", uuid.uuid4(), {"n": n, "note": f"é{n}"}) for n in range(1000)]

    appended = chain_store.append(conn, events)

    assert [a.seq for a in appended] == list(range(seq + 1, seq + 1001))
    assert len({a.at for a in appended}) == 1  # one timestamp per append
    stored = list(chain_store.iter_events(conn))[-1000:]
    assert chain.first_bad_seq(stored, prev, seq + 1) is None
    assert stored[-1].entry_hash == appended[-1].entry_hash == head(conn)[1]


def test_an_empty_append_touches_nothing(conn: Connection) -> None:
    before = head(conn)
    assert chain_store.append(conn, []) == []
    assert head(conn) == before


@pytest.mark.parametrize("kind", ['re"ported', "re\\ported", "réported", "re ported", ""])
def test_a_kind_that_json_would_escape_is_refused(conn: Connection, kind: str) -> None:
    before = head(conn)
    with pytest.raises(ValueError, match="kind"):
        chain_store.append(conn, [NewEvent(kind, None, {})])
    # The function guards itself too: it is callable by anyone with database access.
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute("SELECT * FROM ledger_append(%s::text[], ARRAY[NULL]::uuid[], ARRAY['{}'])", ([kind],))
    conn.rollback()
    assert head(conn) == before
