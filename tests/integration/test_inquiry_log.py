"""The inquiry log: every lookup record is a leaf of a second Merkle log, written as the checks and the
attacks that matter.

A consumer's "who looked me up" list is only worth something if nobody can quietly trim or rewrite it. So:
the sequencer integrates every record's leaf under the inquiry log's own signed checkpoints; `ledger verify`
names the leaf of a record that was changed or deleted; a member can prove that its own lookups are in
the log, and check that the leaf is of the answer it received; and asking about another member's lookup
answers byte for byte like asking about one that does not exist, or the proof endpoint would tell a
competitor who looked whom up.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import psycopg
import pytest

from ledger.config import Settings
from ledger.domain import merkle, note
from ledger.services import verification
from ledger.services.runtime import Runtime
from tests.support import Member, incident_body, integrate, run_ledger, stored_token

PROBLEM = "application/problem+json"
PHONE = {"type": "phone", "value": "13800138000"}
EMAIL = {"type": "email", "value": "Buyer.One@Example.com"}


def post_lookup(client: Any, member: Member, *identifiers: dict[str, str], reference: str = "R-1") -> Any:
    response = client.post(
        "/v1/lookups",
        json={
            "identifiers": list(identifiers),
            "purpose": "refund_review",
            "refund": {"reference": reference},
        },
        headers=member.headers,
    )
    assert response.status_code == 200, response.get_json()
    return response


def query(settings: Settings, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def tamper(settings: Settings, statement: str, params: tuple[Any, ...] = ()) -> None:
    """As the tables' owner, with every trigger and foreign key switched off."""
    with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(statement, params)


def test_the_sequencer_integrates_inquiry_leaves_under_their_own_origin(
    client: Any, alpha: Member, rt: Runtime, settings: Settings
) -> None:
    client.post("/v1/incidents", json=incident_body("order-1"), headers=alpha.headers)
    ids = [post_lookup(client, alpha, PHONE, reference=f"R-{n}").get_json()["lookup_id"] for n in range(3)]
    # Each record was committed with its pending leaf: the record's own leaf hash, nothing integrated yet.
    pending = query(
        settings,
        "SELECT p.lookup_id::text, p.leaf_hash = k.leaf_hash FROM inquiry_pending p JOIN lookups k ON k.id = p.lookup_id",
    )
    assert sorted(pending) == sorted((i, True) for i in ids)
    assert query(settings, "SELECT count(*) FROM inquiry_leaves") == [(0,)]

    assert integrate(rt) == 4  # one event, three inquiries

    leaves = query(settings, "SELECT idx, lookup_id::text FROM inquiry_leaves ORDER BY idx")
    assert [idx for idx, _ in leaves] == [0, 1, 2]
    assert sorted(i for _, i in leaves) == sorted(ids)
    assert query(settings, "SELECT count(*) FROM inquiry_pending") == [(0,)]
    assert query(settings, "SELECT max(idx) FROM log_leaves") == [(0,)]  # the event log has its one leaf
    checkpoint = client.get("/v1/log/inquiries/checkpoint")
    assert checkpoint.status_code == 200
    key = client.get("/v1/log/inquiries/key").get_json()
    assert key["origin"] == settings.inquiry_log_origin != settings.log_origin
    verifier = note.Verifier.parse(key["vkey"])
    signed = note.open_checkpoint(checkpoint.get_json()["note"], verifier, settings.inquiry_log_origin)
    hashes = [bytes(r[0]) for r in query(settings, "SELECT leaf_hash FROM inquiry_leaves ORDER BY idx")]
    assert (signed.size, signed.root) == (3, merkle.root(hashes))
    # An inquiry checkpoint can never pass for an event-log checkpoint, nor the other way round.
    with pytest.raises(note.NoteError):
        note.open_checkpoint(checkpoint.get_json()["note"], rt.log_signer.verifier, settings.log_origin)
    event_note = client.get("/v1/log/checkpoint").get_json()["note"]
    with pytest.raises(note.NoteError):
        note.open_checkpoint(event_note, verifier, settings.inquiry_log_origin)

    post_lookup(client, alpha, EMAIL)
    integrate(rt)
    consistency = client.get("/v1/log/inquiries/consistency?from=3&to=4").get_json()
    new_root = bytes.fromhex(client.get("/v1/log/inquiries/checkpoints/4").get_json()["root_hash"])
    merkle.verify_consistency(3, 4, signed.root, new_root, [bytes.fromhex(p) for p in consistency["proof"]])
    result = verification.verify(rt)
    assert (result.ok, result.lookups, result.inquiry_tree_size, result.inquiry_checkpoints) == (
        True,
        4,
        4,
        3,
    )


def test_a_member_proves_its_own_inquiry_and_checks_the_leaf_is_its_answer(
    client: Any, alpha: Member, rt: Runtime, settings: Settings
) -> None:
    answer = post_lookup(client, alpha, PHONE, EMAIL)
    lookup_id = answer.get_json()["lookup_id"]
    not_yet = client.get(f"/v1/log/inquiries/inclusion?lookup_id={lookup_id}", headers=alpha.headers)
    assert not_yet.status_code == 404  # recorded, not yet under a signed checkpoint
    integrate(rt)

    proof = client.get(f"/v1/log/inquiries/inclusion?lookup_id={lookup_id}", headers=alpha.headers)
    assert proof.status_code == 200, proof.get_json()
    assert proof.headers["Cache-Control"] == "private, no-cache"
    body = proof.get_json()
    leaf = body["leaf"].encode()
    fields = json.loads(leaf)
    # The leaf is of this answer, byte for byte as received, and of this member's key and purpose.
    assert fields["response"] == hashlib.sha256(answer.get_data()).hexdigest()
    assert (fields["id"], fields["purpose"], fields["key_id"]) == (lookup_id, "refund_review", alpha.key_id)
    # Salted commitments only: neither a token nor an identifier is in the leaf.
    for token in (stored_token("phone", PHONE["value"]), stored_token("email", "buyer.one@example.com")):
        assert token not in body["leaf"]
    assert PHONE["value"] not in body["leaf"]
    assert "R-1" not in body["leaf"]
    assert body["leaf_hash"] == merkle.leaf_hash(leaf).hex()
    verifier = note.Verifier.parse(client.get("/v1/log/inquiries/key").get_json()["vkey"])
    signed = note.open_checkpoint(body["checkpoint"], verifier, settings.inquiry_log_origin)
    merkle.verify_inclusion(
        body["leaf_index"],
        signed.size,
        merkle.leaf_hash(leaf),
        [bytes.fromhex(p) for p in body["proof"]],
        signed.root,
    )
    by_index = client.get(
        f"/v1/log/inquiries/inclusion?index={body['leaf_index']}&tree_size=1", headers=alpha.headers
    )
    assert by_index.get_json() == body
    assert by_index.headers["Cache-Control"] == "private, max-age=31536000, immutable"


def test_another_members_inquiry_answers_exactly_like_an_unknown_one(
    client: Any, alpha: Member, beta: Member, rt: Runtime
) -> None:
    theirs = post_lookup(client, alpha, PHONE).get_json()["lookup_id"]
    integrate(rt)
    assert (
        client.get(f"/v1/log/inquiries/inclusion?lookup_id={theirs}", headers=alpha.headers).status_code
        == 200
    )

    attempts = [
        client.get(f"/v1/log/inquiries/inclusion?lookup_id={theirs}", headers=beta.headers),
        client.get("/v1/log/inquiries/inclusion?index=0", headers=beta.headers),
        client.get("/v1/log/inquiries/inclusion?index=0&tree_size=1", headers=beta.headers),
    ]
    unknown = [
        client.get(f"/v1/log/inquiries/inclusion?lookup_id={uuid.uuid4()}", headers=beta.headers),
        client.get("/v1/log/inquiries/inclusion?index=7", headers=beta.headers),
        client.get("/v1/log/inquiries/inclusion?index=7&tree_size=1", headers=beta.headers),
    ]
    for attempt, control in zip(attempts, unknown, strict=True):
        assert attempt.status_code == control.status_code == 404
        assert attempt.mimetype == control.mimetype == PROBLEM
        assert attempt.get_data() == control.get_data()
        assert attempt.headers.get("Cache-Control") == control.headers.get("Cache-Control")
        assert theirs not in attempt.get_data(as_text=True)


def test_inquiry_inclusion_needs_a_lookup_key_and_valid_parameters(
    client: Any, alpha: Member, make_platform: Any, rt: Runtime
) -> None:
    lookup_id = post_lookup(client, alpha, PHONE).get_json()["lookup_id"]
    integrate(rt)
    assert client.get("/v1/log/inquiries/inclusion?index=0").status_code == 401
    report_only = make_platform("gamma", "report")
    assert client.get("/v1/log/inquiries/inclusion?index=0", headers=report_only.headers).status_code == 403
    for params, field in [
        ("", "lookup_id"),
        (f"index=0&lookup_id={lookup_id}", "lookup_id"),
        ("lookup_id=not-a-uuid", "lookup_id"),
        ("index=-1", "index"),
        ("index=0&tree_size=0", "tree_size"),
        ("index=0&tree_size=9", "tree_size"),
    ]:
        response = client.get(f"/v1/log/inquiries/inclusion?{params}", headers=alpha.headers)
        assert response.status_code == 422, (params, response.get_json())
        assert response.mimetype == PROBLEM
        assert field in response.get_json()["errors"], (params, response.get_json())


REWRITES = {
    "tier": "UPDATE lookups SET tier = 'hold' WHERE id = %s",
    "answer": """UPDATE lookups SET response = jsonb_set(response, '{decision,tier}', '"hold"') WHERE id = %s""",
    "purpose": "UPDATE lookups SET purpose = 'account_review' WHERE id = %s",
    "operator": "UPDATE lookups SET operator_ref = 'agent-9' WHERE id = %s",
    "commitment": "UPDATE lookups SET refund_ref = 'R-other' WHERE id = %s",
    "deleted": "DELETE FROM lookups WHERE id = %s",
}


@pytest.mark.parametrize("rewrite", REWRITES.values(), ids=REWRITES.keys())
def test_verify_names_the_leaf_of_a_changed_or_deleted_record(
    client: Any, alpha: Member, rt: Runtime, settings: Settings, rewrite: str
) -> None:
    for n in range(3):
        post_lookup(client, alpha, PHONE, reference=f"R-{n}")
    integrate(rt)
    assert verification.verify(rt).ok
    [(target,)] = query(settings, "SELECT lookup_id::text FROM inquiry_leaves WHERE idx = 1")

    tamper(settings, rewrite, (target,))

    result = verification.verify(rt)
    assert not result.ok
    assert (result.first_bad_inquiry, result.bad_lookup) == (1, target), result
    assert "inquiry leaf 1" in (result.problem or "")
    assert target in (result.problem or "")
    text = run_ledger(settings, "verify")
    assert text.returncode == 1
    assert "inquiry leaf 1" in text.stdout


def test_verify_checks_records_not_yet_integrated_and_a_cut_log(
    client: Any, alpha: Member, rt: Runtime, settings: Settings
) -> None:
    first = post_lookup(client, alpha, PHONE).get_json()["lookup_id"]
    integrate(rt)
    pending = post_lookup(client, alpha, EMAIL).get_json()["lookup_id"]
    assert verification.verify(rt).ok

    tamper(settings, "UPDATE lookups SET tier = 'hold' WHERE id = %s", (pending,))
    result = verification.verify(rt)
    assert (result.ok, result.bad_lookup) == (False, pending)
    assert "pending" in (result.problem or "")

    tamper(settings, "UPDATE lookups SET tier = 'clear' WHERE id = %s", (pending,))
    assert verification.verify(rt).ok
    # A record slipped in with no leaf at all is counted.
    tamper(settings, "DELETE FROM inquiry_pending")
    result = verification.verify(rt)
    assert not result.ok
    assert "outside the log" in (result.problem or "")
    # And a leaf cut from under its signed checkpoint is named.
    tamper(settings, "DELETE FROM inquiry_leaves WHERE lookup_id = %s", (first,))
    result = verification.verify(rt)
    assert not result.ok
    assert result.first_bad_inquiry == 0


def test_retention_erases_tokens_and_the_log_still_verifies(
    client: Any, alpha: Member, rt: Runtime, settings: Settings
) -> None:
    from datetime import UTC, datetime, timedelta

    from ledger.storage import audit

    lookup_id = post_lookup(client, alpha, PHONE).get_json()["lookup_id"]
    integrate(rt)
    before = client.get(
        f"/v1/log/inquiries/inclusion?lookup_id={lookup_id}", headers=alpha.headers
    ).get_json()

    with rt.db.transaction() as conn:  # as the retention job does, as the application's role
        assert audit.erase_before(conn, datetime.now(UTC) + timedelta(days=1), 100) == 1

    assert query(settings, "SELECT tokens, salt, refund_ref FROM lookups") == [(None, None, None)]
    assert verification.verify(rt).ok
    after = client.get(f"/v1/log/inquiries/inclusion?lookup_id={lookup_id}", headers=alpha.headers).get_json()
    assert after == before
