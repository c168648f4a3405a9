"""The transparency log's endpoints, written as the attacks and the checks a member would run.

A platform may get inclusion proofs only for its own events; for any other leaf the answer must be
byte for byte the answer for a leaf that does not exist, or the proof endpoint would tell a competitor
which identifiers another platform reported. Everything a member needs to check the log (checkpoint,
key, consistency proof) is public and cacheable where it can never change.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from ledger.domain import merkle, note
from ledger.services.runtime import Runtime
from tests.support import Member, check_receipt, incident_body, integrate, metric, post_report, report

PROBLEM = "application/problem+json"


@pytest.fixture
def sequencer(rt: Runtime) -> Iterator[None]:
    """The sequencer's loop in a thread, integrating every 50 ms."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            integrate(rt)
            stop.wait(0.05)

    thread = threading.Thread(target=loop)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=30)


def check_proof(rt: Runtime, proof: dict[str, Any], leaf: bytes) -> None:
    signed = note.open_checkpoint(proof["checkpoint"], rt.log_signer.verifier, rt.settings.log_origin)
    assert (signed.size, signed.root.hex()) == (proof["tree_size"], proof["root_hash"])
    assert proof["leaf_hash"] == leaf.hex()
    merkle.verify_inclusion(
        proof["leaf_index"], signed.size, leaf, [bytes.fromhex(p) for p in proof["proof"]], signed.root
    )


def test_proofs_combine_stored_nodes_and_nodes_recomputed_from_leaves(
    client: Any, alpha: Member, rt: Runtime
) -> None:
    """Nodes below level 8 are not stored: a proof recomputes them from the leaves under them. Every
    inclusion and consistency proof of a 300-leaf tree, whose right edge is a partial block of 44 leaves,
    still verifies."""
    items = [incident_body(f"mix-{i}") for i in range(300)]
    created = client.post("/v1/incidents/batch", json={"incidents": items}, headers=alpha.headers)
    assert created.status_code == 200
    leaves = [bytes.fromhex(r["incident"]["receipt"]["leaf_hash"]) for r in created.get_json()["results"]]
    integrate(rt)
    for index in (0, 1, 127, 255, 256, 257, 298, 299):
        proof = client.get(f"/v1/log/inclusion?index={index}", headers=alpha.headers)
        assert proof.status_code == 200
        check_proof(rt, proof.get_json(), leaves[index])
    assert merkle.root(leaves) == bytes.fromhex(proof.get_json()["root_hash"])
    for old in (1, 5, 255, 256, 257, 299):
        step = client.get(f"/v1/log/consistency?from={old}&to=300")
        assert step.status_code == 200
        merkle.verify_consistency(
            old,
            300,
            merkle.root(leaves[:old]),
            merkle.root(leaves),
            [bytes.fromhex(p) for p in step.get_json()["proof"]],
        )


def test_key_and_checkpoint_are_published(client: Any, alpha: Member, rt: Runtime) -> None:
    assert client.get("/v1/log/checkpoint").status_code == 404  # nothing signed before the sequencer runs
    integrate(rt)
    key = client.get("/v1/log/key")
    assert key.status_code == 200
    assert "max-age" in key.headers["Cache-Control"]
    verifier = note.Verifier.parse(key.get_json()["vkey"])
    assert verifier == rt.log_signer.verifier
    assert key.get_json()["key_id"] == verifier.key_id.hex()
    empty = client.get("/v1/log/checkpoint").get_json()
    assert note.open_checkpoint(empty["note"], verifier, rt.settings.log_origin).size == 0
    report(client, alpha, "cp-1")
    integrate(rt)
    latest = client.get("/v1/log/checkpoint")
    assert latest.headers["Cache-Control"] == "no-cache"
    signed = note.open_checkpoint(latest.get_json()["note"], verifier, rt.settings.log_origin)
    assert signed.size == latest.get_json()["tree_size"] == 1
    assert client.get("/v1/log/checkpoints/1").get_json()["note"] == latest.get_json()["note"]
    assert client.get("/v1/log/checkpoints/7").status_code == 404


def test_another_platforms_leaf_answers_exactly_like_an_unknown_one(
    client: Any, alpha: Member, beta: Member, rt: Runtime
) -> None:
    mine = check_receipt(rt, report(client, alpha, "secret-order")["receipt"])
    integrate(rt)
    own = client.get(f"/v1/log/inclusion?leaf_hash={mine.hex()}", headers=alpha.headers)
    assert own.status_code == 200
    check_proof(rt, own.get_json(), mine)
    assert client.get("/v1/log/inclusion?index=0", headers=alpha.headers).get_json() == own.get_json()

    attempts = [
        client.get(f"/v1/log/inclusion?leaf_hash={mine.hex()}", headers=beta.headers),
        client.get("/v1/log/inclusion?index=0", headers=beta.headers),
        client.get("/v1/log/inclusion?index=0&tree_size=1", headers=beta.headers),
    ]
    unknown = [
        client.get(f"/v1/log/inclusion?leaf_hash={'ab' * 32}", headers=beta.headers),
        client.get("/v1/log/inclusion?index=5", headers=beta.headers),
        client.get("/v1/log/inclusion?index=5&tree_size=1", headers=beta.headers),
    ]
    for attempt, control in zip(attempts, unknown, strict=True):
        assert attempt.status_code == control.status_code == 404
        assert attempt.mimetype == control.mimetype == PROBLEM
        assert attempt.get_data() == control.get_data()
        assert mine.hex() not in attempt.get_data(as_text=True)


def test_inclusion_needs_a_report_key_and_valid_parameters(
    client: Any, alpha: Member, make_platform: Any, rt: Runtime
) -> None:
    report(client, alpha, "param-1")
    integrate(rt)
    assert client.get("/v1/log/inclusion?index=0").status_code == 401
    lookup_only = make_platform("gamma", "lookup")
    assert client.get("/v1/log/inclusion?index=0", headers=lookup_only.headers).status_code == 403
    for query, field in [
        ("", "leaf_hash"),
        ("index=0&leaf_hash=" + "ab" * 32, "leaf_hash"),
        ("leaf_hash=XYZ", "leaf_hash"),
        ("index=-1", "index"),
        ("index=0&tree_size=0", "tree_size"),
        ("index=0&tree_size=9", "tree_size"),
    ]:
        response = client.get(f"/v1/log/inclusion?{query}", headers=alpha.headers)
        assert response.status_code == 422, (query, response.get_json())
        assert response.mimetype == PROBLEM
        assert field in response.get_json()["errors"], (query, response.get_json())


def test_consistency_proofs_are_immutable_and_verify(client: Any, alpha: Member, rt: Runtime) -> None:
    roots = {}
    for n in range(5):
        report(client, alpha, f"grow-{n}")
        integrate(rt)
        cp = client.get("/v1/log/checkpoint").get_json()
        roots[cp["tree_size"]] = bytes.fromhex(cp["root_hash"])
    for old in range(1, 6):
        response = client.get(f"/v1/log/consistency?from={old}&to=5")
        assert response.status_code == 200
        assert "immutable" in response.headers["Cache-Control"]
        proof = [bytes.fromhex(p) for p in response.get_json()["proof"]]
        merkle.verify_consistency(old, 5, roots[old], roots[5], proof)
    for query, field in [
        ("from=0&to=3", "from"),
        ("from=4&to=3", "from"),
        ("from=1&to=6", "to"),
        ("to=3", "from"),
    ]:
        response = client.get(f"/v1/log/consistency?{query}")
        assert response.status_code == 422, query
        assert field in response.get_json()["errors"], (query, response.get_json())


def test_prefer_wait_returns_the_inclusion_proof(
    client: Any, alpha: Member, rt: Runtime, sequencer: None
) -> None:
    response = post_report(client, alpha, "waited", headers={"Prefer": "wait=5"})
    assert response.headers["Preference-Applied"] == "wait=5"
    body = response.get_json()
    check_proof(rt, body["inclusion"], check_receipt(rt, body["receipt"]))
    # A replay of the same report returns the same receipt (and, asked, the proof again).
    again = client.post("/v1/incidents", json=incident_body("waited"), headers=alpha.headers)
    assert again.status_code == 200
    assert again.get_json()["receipt"] == body["receipt"]


def test_batch_items_each_get_a_promise_and_a_proof(
    client: Any, alpha: Member, rt: Runtime, sequencer: None
) -> None:
    items = [
        incident_body(f"bw-{i}", identifiers=[{"type": "device_id", "value": f"bw-{i}"}]) for i in range(5)
    ]
    response = client.post(
        "/v1/incidents/batch", json={"incidents": items}, headers={**alpha.headers, "Prefer": "wait=5"}
    )
    assert response.status_code == 200
    results = response.get_json()["results"]
    for result in results:
        leaf = check_receipt(rt, result["incident"]["receipt"])
        check_proof(rt, result["incident"]["inclusion"], leaf)


def test_without_a_sequencer_prefer_wait_answers_with_the_promise_only(
    client: Any, alpha: Member, rt: Runtime
) -> None:
    body = report(client, alpha, "unsequenced", headers={"Prefer": "wait=1"})
    check_receipt(rt, body["receipt"])
    assert "inclusion" not in body


def test_a_witness_cosignature_is_checked_and_published(client: Any, alpha: Member, rt: Runtime) -> None:
    report(client, alpha, "witnessed")
    integrate(rt)
    cp = client.get("/v1/log/checkpoint").get_json()
    text, _ = note.split_note(cp["note"])
    witness = note.Signer.from_seed("witness.example/alpha", bytes(range(32)), note.COSIGNATURE_V1)
    line = witness.cosign(text, 1_700_000_000)
    body = {"tree_size": cp["tree_size"], "cosigner": witness.verifier.vkey(), "signature": line}
    accepted = client.post("/v1/log/cosignatures", json=body, headers=alpha.headers)
    assert accepted.status_code == 200, accepted.get_json()
    published = client.get("/v1/log/checkpoint").get_json()
    assert published["cosignatures"] == 1
    opened, lines = note.open_note(published["note"], rt.log_signer.verifier)
    assert note.verify_cosignature(opened, lines[1], witness.verifier) == 1_700_000_000

    other = note.Signer.from_seed("witness.example/alpha", bytes(32), note.COSIGNATURE_V1)
    bad = [
        ({**body, "signature": other.cosign(text, 1_700_000_000)}, "signature"),  # signed by another key
        ({**body, "signature": line.replace("—", "-")}, "signature"),
        ({**body, "cosigner": rt.log_signer.verifier.vkey()}, "cosigner"),  # a 0x01 key is not a cosigner
        ({**body, "cosigner": "nonsense"}, "cosigner"),
        ({**body, "tree_size": "one"}, "tree_size"),
    ]
    for payload, field in bad:
        response = client.post("/v1/log/cosignatures", json=payload, headers=alpha.headers)
        assert response.status_code == 422, (payload, response.get_json())
        assert field in response.get_json()["errors"]
    assert (
        client.post("/v1/log/cosignatures", json={**body, "tree_size": 99}, headers=alpha.headers).status_code
        == 404
    )
    assert client.post("/v1/log/cosignatures", json=body).status_code == 401
    assert client.get("/v1/log/checkpoint").get_json()["cosignatures"] == 1


def test_readyz_and_metrics_show_the_log_lag(client: Any, alpha: Member, rt: Runtime) -> None:
    report(client, alpha, "lagging")
    ready = client.get("/readyz").get_json()
    assert ready["checks"]["log"].startswith("ok (lag")
    assert metric(client, "ledger_log_mmd_seconds") == rt.settings.log_mmd_seconds
    assert metric(client, "ledger_log_lag_seconds") >= 0
    integrate(rt)
    assert metric(client, "ledger_log_tree_size") == 1
    assert metric(client, "ledger_log_lag_seconds") == 0
