# GENERATED from ledger/domain/merkle.py by clients/python/vendor_identity.py: do not edit here.
# A test fails when the two differ; change ledger/domain/merkle.py and run the script.
"""The Merkle tree of the transparency log: RFC 9162 §2.1 hashing, proofs and their verification.

A member platform cannot replay a hash chain without seeing every other member's events. With a Merkle
tree it can check, with about log2(n) hashes and nothing else, that its own event is in the log (an
inclusion proof) and that the log only grew between two signed checkpoints (a consistency proof).

Everything here is pure: proof *generation* is expressed as the list of subtree ranges a proof needs
(`inclusion_ranges`, `consistency_ranges`), each range split into perfect subtrees (`perfect_subtrees`),
so that the store can fetch all the stored nodes of a proof in one query and `range_hash` folds them.
The sequencer extends the tree with `CompactRange`, which holds only the right frontier (one hash per
set bit of the size) and reports every new complete node so that it can be stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(ValueError):
    """A proof, root or leaf does not verify."""


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes (RFC 9162 §2.1.1), by the compact range so it is linear and iterative."""
    if not leaf_hashes:
        return EMPTY_ROOT
    compact = CompactRange()
    for h in leaf_hashes:
        compact.append(h)
    return compact.root()


# --- proof generation as ranges ----------------------------------------------------------------------


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The subtree ranges [start, end) whose hashes form PATH(index, D[size]), leaf level first."""
    if not 0 <= index < size:
        raise ValueError(f"index {index} is not below tree size {size}")
    out: list[tuple[int, int]] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start = start + k
    out.reverse()
    return out


def consistency_ranges(old: int, new: int) -> list[tuple[int, int]]:
    """The subtree ranges whose hashes form PROOF(old, D[new]) (RFC 9162 §2.1.4.1), in proof order."""
    if not 0 < old <= new:
        raise ValueError(f"no consistency proof from size {old} to size {new}")
    out: list[tuple[int, int]] = []
    start, end, complete = 0, new, True
    m = old
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            m -= k
            start, complete = start + k, False
    if not complete:
        out.append((start, end))
    out.reverse()
    return out


def perfect_subtrees(start: int, end: int) -> list[tuple[int, int]]:
    """Split [start, end) into perfect subtrees (level, index), largest first; index counts subtrees of
    that level from the left. A perfect subtree of level L at index i covers [i * 2^L, (i + 1) * 2^L)."""
    out: list[tuple[int, int]] = []
    while start < end:
        level = (start & -start).bit_length() - 1 if start else (end - start).bit_length() - 1
        while start + (1 << level) > end:
            level -= 1
        out.append((level, start >> level))
        start += 1 << level
    return out


def range_hash(parts: Sequence[bytes]) -> bytes:
    """The hash of a subtree given its perfect subtrees' hashes, largest first (the RFC's right spine)."""
    acc = parts[-1]
    for part in reversed(parts[:-1]):
        acc = node_hash(part, acc)
    return acc


def proof_from_nodes(ranges: Sequence[tuple[int, int]], node: Callable[[int, int], bytes]) -> list[bytes]:
    """Hashes of `ranges`, given `node(level, index)` for stored perfect subtrees."""
    return [range_hash([node(level, idx) for level, idx in perfect_subtrees(s, e)]) for s, e in ranges]


def nodes_needed(ranges: Iterable[tuple[int, int]]) -> set[tuple[int, int]]:
    return {n for s, e in ranges for n in perfect_subtrees(s, e)}


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PATH over an in-memory tree (tests, tools); the server builds the same from stored nodes."""
    return [root(leaf_hashes[s:e]) for s, e in inclusion_ranges(index, len(leaf_hashes))]


def consistency_proof(old: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    return [root(leaf_hashes[s:e]) for s, e in consistency_ranges(old, len(leaf_hashes))]


# --- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) ---------------------------------------------------


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, not {HASH_SIZE}")


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root an inclusion proof implies; raises ProofError when the proof is malformed."""
    if not 0 <= index < size:
        raise ProofError(f"index {index} is not below tree size {size}")
    _check_hash(leaf, "leaf hash")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        _check_hash(p, "proof hash")
        if sn == 0:
            raise ProofError("the proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the proof is shorter than the tree is deep")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root_hash: bytes) -> None:
    _check_hash(root_hash, "root hash")
    if root_from_inclusion(index, size, leaf, proof) != root_hash:
        raise ProofError("the inclusion proof does not lead to the root")


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    if new < old:
        raise ProofError(f"size {new} is smaller than size {old}")
    if old == 0:
        raise ProofError("a consistency proof from the empty tree proves nothing")
    if old == new:
        if proof:
            raise ProofError("equal sizes need an empty proof")
        if old_root != new_root:
            raise ProofError("equal sizes with different roots: the log forked")
        return
    _check_hash(old_root, "old root")
    _check_hash(new_root, "new root")
    if not proof:
        raise ProofError("empty consistency proof")
    for p in proof:
        _check_hash(p, "proof hash")
    path = list(proof)
    if old & (old - 1) == 0:  # an exact power of two: the old root is itself a node of the new tree
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the proof is shorter than the tree is deep")
    if fr != old_root:
        raise ProofError("the consistency proof does not lead to the old root")
    if sr != new_root:
        raise ProofError("the consistency proof does not lead to the new root")


# --- appending -----------------------------------------------------------------------------------------


@dataclass
class CompactRange:
    """The right frontier of a tree of `size` leaves: the perfect subtrees of [0, size), largest first.
    `append` returns the complete nodes it created (level >= 1) so the caller can store them."""

    size: int = 0
    frontier: list[bytes] = field(default_factory=list)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        created: list[tuple[int, int, bytes]] = []
        self.frontier.append(leaf)
        index, level, h = self.size, 0, leaf
        while index & 1:
            left = self.frontier[-2]
            h = node_hash(left, h)
            del self.frontier[-2:]
            self.frontier.append(h)
            index >>= 1
            level += 1
            created.append((level, index, h))
        self.size += 1
        return created

    def root(self) -> bytes:
        return range_hash(self.frontier) if self.frontier else EMPTY_ROOT

    @staticmethod
    def frontier_nodes(size: int) -> list[tuple[int, int]]:
        """The (level, index) of the frontier of a tree of `size` leaves, largest first."""
        return perfect_subtrees(0, size)
