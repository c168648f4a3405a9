"""The audit group commit against the real PostgreSQL: concurrent lookups in one process share INSERTs,
and every lookup id a client received is in `lookups`, with its row hash intact, when its answer
arrives (not later).

Each of 16 threads makes lookups through the app; after every 200 answer it checks, on its own
connection, that the record is already there. Concurrency in one process is what lets records share a
commit, so the number of statements written is below the number of lookups.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.services import verification
from ledger.services.runtime import Runtime
from ledger.storage import audit
from tests.support import Member

THREADS, PER_THREAD = 16, 12


def test_concurrent_lookups_share_commits_and_each_record_is_durable_before_its_answer(
    app: Any, rt: Runtime, alpha: Member, database_url: str
) -> None:
    batches_before, records_before = rt.audit.batches, rt.audit.records
    received: list[str] = []
    missing: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def client_thread(n: int) -> None:
        client = app.test_client()
        start.wait()
        with psycopg.connect(database_url, autocommit=True) as conn:
            for i in range(PER_THREAD):
                body = {
                    "identifiers": [{"type": "phone", "value": f"139{n:04d}{i:04d}"}],
                    "purpose": "refund_review",
                    "refund": {"reference": f"R-{n}-{i}"},
                }
                response = client.post("/v1/lookups", json=body, headers=alpha.headers)
                if response.status_code != 200:
                    with lock:
                        errors.append(f"{response.status_code} {response.get_data(as_text=True)}")
                    continue
                lookup_id = response.get_json()["lookup_id"]
                found = conn.execute("SELECT 1 FROM lookups WHERE id = %s", (lookup_id,)).fetchone()
                with lock:
                    received.append(lookup_id)
                    if found is None:
                        missing.append(lookup_id)

    threads = [threading.Thread(target=client_thread, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert len(received) == THREADS * PER_THREAD
    assert missing == [], "an answer arrived before its audit record was committed"
    assert rt.audit.records - records_before == len(received)
    assert rt.audit.batches - batches_before < len(received), "no two lookups shared a commit"
    with psycopg.connect(database_url) as conn:
        stored = {
            str(r[0]) for r in conn.execute("SELECT id FROM lookups WHERE id = ANY(%s::uuid[])", (received,))
        }
    assert stored == set(received)
    assert verification.verify(rt).ok is True


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.none(),
        st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))),
    )
)
def test_the_array_literal_is_the_same_text_array(
    session_database_url: str, values: list[str] | None
) -> None:
    """audit.text_array sends tokens and reasons as literals; PostgreSQL must read back exactly the list
    (quotes, backslashes, braces, commas, spaces, NULL-looking text, non-ASCII)."""
    with psycopg.connect(session_database_url, autocommit=True) as conn:
        row = conn.execute("SELECT %s::text[]", (audit.text_array(values),)).fetchone()
    assert row is not None
    assert row[0] == values


def test_the_array_literal_examples(session_database_url: str) -> None:
    tricky = ['a"b', "c\\d", "{e}", "f,g", " h ", "NULL", "", "中文"]
    with psycopg.connect(session_database_url, autocommit=True) as conn:
        assert conn.execute("SELECT %s::text[]", (audit.text_array(tricky),)).fetchone() == (tricky,)
        assert conn.execute("SELECT %s::text[]", (audit.text_array([]),)).fetchone() == ([],)
