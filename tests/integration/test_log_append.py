"""Recording events inside PostgreSQL (`ledger_append` in schema.sql) against the domain's leaf.

The database builds each event's canonical leaf and hashes it itself, in the writer's own transaction and
with no log-wide lock; `ledger verify` and every member re-derive leaves in Python. If the two encodings
ever differed by a byte, an honest ledger would fail `ledger verify`, so they are compared here on awkward
payloads.
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

from ledger.domain import chain, merkle
from ledger.storage import events as event_store
from ledger.storage.db import Connection
from ledger.storage.events import NewEvent

# jsonb refuses "\u0000" and lone surrogates, as it did when the client sent Jsonb; never recordable.
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
PLATFORMS = st.one_of(st.none(), st.integers(min_value=1, max_value=2**62))


@pytest.fixture
def conn(database_url: str) -> Iterator[Connection]:
    """A connection whose work is always rolled back, so examples leave the shared log untouched."""
    with psycopg.connect(database_url, row_factory=dict_row) as connection:
        yield connection
        connection.rollback()


def pending(conn: Connection) -> dict[int, bytes]:
    return {
        r["event_id"]: bytes(r["leaf_hash"]) for r in conn.execute("SELECT * FROM log_pending").fetchall()
    }


def expected_leaf(
    at: Any, incident: uuid.UUID | None, kind: str, payload: Any, platform: int | None
) -> bytes:
    return merkle.leaf_hash(
        chain.leaf_bytes(at, str(incident) if incident else None, kind, payload, platform)
    )


# Each example rolls back, so sharing one connection across examples is safe.
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=st.lists(
        st.tuples(KINDS, PAYLOADS, PLATFORMS, st.one_of(st.none(), st.uuids())), min_size=1, max_size=4
    )
)
def test_the_database_builds_the_leaf_exactly_like_the_domain(
    conn: Connection, events: list[tuple[str, dict[str, Any], int | None, uuid.UUID | None]]
) -> None:
    try:
        before = pending(conn)
        appended = event_store.append(conn, [NewEvent(k, i, p, pl) for k, p, pl, i in events])

        assert [a.id for a in appended] == sorted(a.id for a in appended)
        for (kind, payload, platform, incident), a in zip(events, appended, strict=True):
            assert a.leaf_hash == expected_leaf(a.at, incident, kind, payload, platform)
        # Each event queued exactly its own leaf for the sequencer.
        assert pending(conn) == {**before, **{a.id: a.leaf_hash for a in appended}}
        # What `ledger verify` reads back must re-derive to the same leaves.
        stored = event_store.by_ids(conn, [a.id for a in appended])
        assert [stored[a.id].derived_leaf_hash() for a in appended] == [a.leaf_hash for a in appended]
        assert [stored[a.id].payload for a in appended] == [p for _, p, _, _ in events]
    finally:
        conn.rollback()


def test_one_call_records_a_thousand_events_in_order(conn: Connection) -> None:
    events = [NewEvent("reported", uuid.uuid4(), {"n": n, "note": f"é{n}"}, 7) for n in range(1000)]

    appended = event_store.append(conn, events)

    assert [a.id for a in appended] == list(range(appended[0].id, appended[0].id + 1000))
    assert len({a.at for a in appended}) == 1  # one timestamp per call
    stored = event_store.by_ids(conn, [a.id for a in appended])
    assert [stored[a.id].payload["n"] for a in appended] == list(range(1000))
    assert all(stored[a.id].derived_leaf_hash() == a.leaf_hash for a in appended)
    assert len(set(pending(conn).values())) == 1000


def test_an_empty_append_touches_nothing(conn: Connection) -> None:
    before = pending(conn), event_store.head_seq(conn)
    assert event_store.append(conn, []) == []
    assert (pending(conn), event_store.head_seq(conn)) == before


@pytest.mark.parametrize("kind", ['re"ported', "re\\ported", "réported", "re ported", ""])
def test_a_kind_that_json_would_escape_is_refused(conn: Connection, kind: str) -> None:
    before = pending(conn), event_store.head_seq(conn)
    with pytest.raises(ValueError, match="kind"):
        event_store.append(conn, [NewEvent(kind, None, {})])
    # The function guards itself too: it is callable by anyone with database access.
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute(
            "SELECT * FROM ledger_append(%s::text[], ARRAY[NULL]::uuid[], ARRAY[NULL]::bigint[], ARRAY['{}'])",
            ([kind],),
        )
    conn.rollback()
    assert (pending(conn), event_store.head_seq(conn)) == before
