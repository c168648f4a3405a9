"""The log's tree code against vectors nobody here wrote, and properties over random trees.

A member trusts the log only as far as its proofs: if our hashing differed from RFC 9162 by one byte,
every off-the-shelf verifier would reject our proofs; if verification accepted a proof with one bit
changed, the operator could prove anything. The vectors are transparency-dev/merkle's (see
tests/data/merkle/README.md).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.domain import merkle

DATA = Path(__file__).parent.parent / "data" / "merkle"
VECTORS = DATA / "testdata"
LEAVES = json.loads((DATA / "leaves.json").read_text())
PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=150)


def _b64(values: list[str] | None) -> list[bytes]:
    return [base64.b64decode(v) for v in values or []]


def _probes(kind: str) -> list[tuple[str, dict]]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    assert len(files) > 60, "the vectors are missing"
    return [(str(f.relative_to(VECTORS)), json.loads(f.read_text())) for f in files]


def test_hashing_vectors() -> None:
    h = LEAVES["hashing"]
    assert merkle.EMPTY_ROOT.hex() == h["empty"]
    assert merkle.leaf_hash(b"").hex() == h["empty_leaf"]
    assert merkle.leaf_hash(b"L123456").hex() == h["leaf_L123456"]
    assert merkle.node_hash(b"N123", b"N456").hex() == h["node_N123_N456"]


def test_roots_at_every_size() -> None:
    leaves = [merkle.leaf_hash(bytes.fromhex(x)) for x in LEAVES["leaf_inputs_hex"]]
    for size, want in enumerate(LEAVES["roots_hex"]):
        assert merkle.root(leaves[:size]).hex() == want, size


@pytest.mark.parametrize(("name", "probe"), _probes("inclusion"))
def test_inclusion_vectors(name: str, probe: dict) -> None:
    args = (probe["leafIdx"], probe["treeSize"], base64.b64decode(probe["leafHash"] or ""))
    proof, root = _b64(probe["proof"]), base64.b64decode(probe["root"] or "")
    if probe["wantErr"]:
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(*args, proof, root)
    else:
        merkle.verify_inclusion(*args, proof, root)


@pytest.mark.parametrize(("name", "probe"), _probes("consistency"))
def test_consistency_vectors(name: str, probe: dict) -> None:
    args = (
        probe["size1"],
        probe["size2"],
        base64.b64decode(probe["root1"]),
        base64.b64decode(probe["root2"]),
    )
    if probe["wantErr"]:
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(*args, _b64(probe["proof"]))
    else:
        merkle.verify_consistency(*args, _b64(probe["proof"]))


def test_generated_proofs_match_the_vectors() -> None:
    """Our generation produces byte for byte the happy-path proofs of the vectors."""
    leaves = [merkle.leaf_hash(bytes.fromhex(x)) for x in LEAVES["leaf_inputs_hex"]]
    checked = 0
    for _, probe in _probes("inclusion"):
        if probe["desc"] == "happy path" and probe["treeSize"] <= len(leaves):
            got = merkle.inclusion_proof(probe["leafIdx"], leaves[: probe["treeSize"]])
            assert got == _b64(probe["proof"])
            checked += 1
    for _, probe in _probes("consistency"):
        if probe["desc"] == "happy path" and probe["size1"] > 0 and probe["size2"] <= len(leaves):
            got = merkle.consistency_proof(probe["size1"], leaves[: probe["size2"]])
            assert got == _b64(probe["proof"])
            checked += 1
    assert checked >= 6


def _leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def _flip(value: bytes, bit: int) -> bytes:
    bit %= len(value) * 8
    out = bytearray(value)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@PROPERTY
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))), st.data())
def test_every_inclusion_proof_verifies_and_no_bit_flip_does(
    case: tuple[int, int], data: st.DataObject
) -> None:
    size, index = case
    leaves = _leaves(size)
    root = merkle.root(leaves)
    proof = merkle.inclusion_proof(index, leaves)
    merkle.verify_inclusion(index, size, leaves[index], proof, root)
    bit = data.draw(st.integers(0, 255))
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(index, size, _flip(leaves[index], bit), proof, root)
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(index, size, leaves[index], proof, _flip(root, bit))
    if proof:
        at = data.draw(st.integers(0, len(proof) - 1))
        bad = [*proof]
        bad[at] = _flip(bad[at], bit)
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(index, size, leaves[index], bad, root)


@PROPERTY
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.integers(1, n), st.just(n))), st.data())
def test_every_consistency_proof_verifies_and_no_bit_flip_does(
    case: tuple[int, int], data: st.DataObject
) -> None:
    old, new = case
    leaves = _leaves(new)
    old_root, new_root = merkle.root(leaves[:old]), merkle.root(leaves)
    proof = merkle.consistency_proof(old, leaves)
    merkle.verify_consistency(old, new, old_root, new_root, proof)
    bit = data.draw(st.integers(0, 255))
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(old, new, _flip(old_root, bit), new_root, proof)
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(old, new, old_root, _flip(new_root, bit), proof)
    if proof:
        at = data.draw(st.integers(0, len(proof) - 1))
        bad = [*proof]
        bad[at] = _flip(bad[at], bit)
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(old, new, old_root, new_root, bad)


@PROPERTY
@given(st.integers(0, 600), st.integers(0, 600))
def test_stored_nodes_give_the_same_proofs(a: int, b: int) -> None:
    """The server builds proofs from the nodes the sequencer stored; they equal the in-memory ones."""
    size = max(a, b, 1)
    leaves = _leaves(size)
    nodes: dict[tuple[int, int], bytes] = {}
    compact = merkle.CompactRange()
    for i, h in enumerate(leaves):
        nodes[(0, i)] = h
        for level, idx, value in compact.append(h):
            nodes[(level, idx)] = value
    assert compact.root() == merkle.root(leaves)
    assert nodes.keys() >= set(merkle.CompactRange.frontier_nodes(size))
    index = min(a, b) % size
    ranges = merkle.inclusion_ranges(index, size)
    assert merkle.proof_from_nodes(ranges, lambda lv, i: nodes[(lv, i)]) == merkle.inclusion_proof(
        index, leaves
    )
    old = min(a, b) or 1
    ranges = merkle.consistency_ranges(old, size)
    assert merkle.proof_from_nodes(ranges, lambda lv, i: nodes[(lv, i)]) == merkle.consistency_proof(
        old, leaves
    )
    assert merkle.range_hash([nodes[n] for n in merkle.CompactRange.frontier_nodes(size)]) == compact.root()
