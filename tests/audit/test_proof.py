"""Proof construction and RFC 9162 verification: golden vectors, properties, mutations.

Golden vectors come from transparency-dev/merkle proof/verify_test.go (the same data as
google/certificate-transparency-go's merkle tree tests).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence

import pytest

from gateway.audit import proof as proof_module
from gateway.audit.compact import CompactRange, NodeID
from gateway.audit.proof import (
    InvalidProofError,
    OutOfRangeError,
    ProofError,
    RootMismatchError,
    consistency_nodes,
    consistency_proof,
    inclusion_nodes,
    inclusion_proof,
    root_from_inclusion_proof,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from gateway.audit.rfc6962 import EMPTY_ROOT, hash_leaf
from tests.audit.vectors import EMPTY_ROOT_HEX, LEAVES, ROOTS


def _hashes(*hexes: str) -> list[bytes]:
    return [bytes.fromhex(h) for h in hexes]


# (leaf index, tree size, proof); the Go file numbers leaves from 1, these from 0.
INCLUSION_PROOFS: list[tuple[int, int, list[bytes]]] = [
    (0, 1, []),
    (
        0,
        8,
        _hashes(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        5,
        8,
        _hashes(
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (2, 3, _hashes("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")),
    (
        1,
        5,
        _hashes(
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
]

# (size1, size2, proof)
CONSISTENCY_PROOFS: list[tuple[int, int, list[bytes]]] = [
    (1, 1, []),
    (
        1,
        8,
        _hashes(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        6,
        8,
        _hashes(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (
        2,
        5,
        _hashes(
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
    (
        6,
        7,
        _hashes(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
]

# sha256SomeHash from the same file.
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


# --- a fake store: every complete node, read through one batched call ---------------------


class DictReader:
    """A NodeReader over the nodes a CompactRange emitted; counts calls and nodes read."""

    def __init__(self, nodes: dict[NodeID, bytes], size: int) -> None:
        self.nodes = nodes
        self.size = size
        self.calls = 0
        self.reads = 0

    def read_nodes(self, ids: Sequence[NodeID]) -> Sequence[bytes]:
        self.calls += 1
        self.reads += len(ids)
        for node in ids:
            # A proof for a tree of this size may only use nodes complete at this size.
            assert node.coverage()[1] <= self.size, (node, self.size)
        return [self.nodes[node] for node in ids]


def build(leaf_hashes: Sequence[bytes]) -> tuple[CompactRange, dict[NodeID, bytes]]:
    rng = CompactRange()
    nodes = dict(rng.extend(leaf_hashes))
    return rng, nodes


def synthetic_leaves(n: int) -> list[bytes]:
    return [hash_leaf(i.to_bytes(8, "big")) for i in range(n)]


GOLDEN_LEAF_HASHES = [hash_leaf(d) for d in LEAVES]
GOLDEN_RNG, GOLDEN_NODES = build(GOLDEN_LEAF_HASHES)


# --- mutations, after transparency-dev/merkle corruptInclusionProof / corruptConsistencyProof


def flip(h: bytes, bit: int = 3) -> bytes:
    return bytes([h[0] ^ (1 << bit)]) + h[1:]


def inclusion_mutations(
    index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes
) -> Iterator[tuple[str, bytes, int, int, list[bytes], bytes]]:
    yield "index - 1", leaf, index - 1, size, proof, root
    yield "index + 1", leaf, index + 1, size, proof, root
    yield "index ^ 2", leaf, index ^ 2, size, proof, root
    yield "size * 2", leaf, index, size * 2, proof, root
    yield "size / 2", leaf, index, size // 2, proof, root
    yield "wrong leaf", hash_leaf(b"WrongLeaf"), index, size, proof, root
    yield "empty root", leaf, index, size, proof, EMPTY_ROOT
    yield "random root", leaf, index, size, proof, SOME_HASH
    yield "trailing garbage", leaf, index, size, [*proof, b""], root
    yield "trailing root", leaf, index, size, [*proof, root], root
    yield "preceding garbage", leaf, index, size, [b"", *proof], root
    yield "preceding root", leaf, index, size, [root, *proof], root
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = flip(wrong[i])
        yield f"flipped bit in proof[{i}]", leaf, index, size, wrong, root
    if proof:
        yield "truncated", leaf, index, size, proof[:-1], root
    if len(proof) > 1:
        yield "inserted", leaf, index, size, [proof[0], SOME_HASH, *proof[1:]], root


def consistency_mutations(
    size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes
) -> Iterator[tuple[str, int, int, list[bytes], bytes, bytes]]:
    yield "size1 - 1", size1 - 1, size2, proof, root1, root2
    yield "size1 + 1", size1 + 1, size2, proof, root1, root2
    yield "size1 ^ 2", size1 ^ 2, size2, proof, root1, root2
    yield "size2 * 2", size1, size2 * 2, proof, root1, root2
    yield "size2 / 2", size1, size2 // 2, proof, root1, root2
    yield "wrong root1", size1, size2, proof, SOME_HASH, root2
    yield "wrong root2", size1, size2, proof, root1, SOME_HASH
    yield "swapped roots", size1, size2, proof, root2, root1
    yield "empty proof", size1, size2, [], root1, root2
    yield "trailing garbage", size1, size2, [*proof, b""], root1, root2
    yield "trailing root1", size1, size2, [*proof, root1], root1, root2
    yield "trailing root2", size1, size2, [*proof, root2], root1, root2
    yield "preceding garbage", size1, size2, [b"", *proof], root1, root2
    yield "preceding root1", size1, size2, [root1, *proof], root1, root2
    yield "preceding root2", size1, size2, [root2, *proof], root1, root2
    yield "preceding proof[0]", size1, size2, [proof[0], *proof], root1, root2
    yield "truncated", size1, size2, proof[:-1], root1, root2
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = flip(wrong[i], 4)
        yield f"flipped bit in proof[{i}]", size1, size2, wrong, root1, root2


def assert_inclusion_mutations_fail(
    index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes
) -> None:
    for desc, m_leaf, m_index, m_size, m_proof, m_root in inclusion_mutations(
        index, size, proof, root, leaf
    ):
        with pytest.raises(ProofError):
            verify_inclusion(m_leaf, m_index, m_size, m_proof, m_root)
            pytest.fail(f"verified a mutated inclusion proof: {desc}")


def assert_consistency_mutations_fail(
    size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes
) -> None:
    for desc, m_size1, m_size2, m_proof, m_root1, m_root2 in consistency_mutations(
        size1, size2, proof, root1, root2
    ):
        with pytest.raises(ProofError):
            verify_consistency(m_size1, m_size2, m_proof, m_root1, m_root2)
            pytest.fail(f"verified a mutated consistency proof: {desc}")


# --- golden vectors ------------------------------------------------------------------------


@pytest.mark.parametrize("size", range(9))
def test_root_of_matches_golden_roots(size: int) -> None:
    assert root_of(GOLDEN_LEAF_HASHES[:size]) == ROOTS[size]


def test_root_of_empty_tree() -> None:
    assert root_of([]) == EMPTY_ROOT
    assert EMPTY_ROOT.hex() == EMPTY_ROOT_HEX


@pytest.mark.parametrize(("index", "size", "want"), INCLUSION_PROOFS)
def test_inclusion_proof_matches_golden(index: int, size: int, want: list[bytes]) -> None:
    reader = DictReader(GOLDEN_NODES, size)
    assert inclusion_proof(reader, index, size) == want


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION_PROOFS)
def test_golden_inclusion_proof_verifies_and_mutations_fail(
    index: int, size: int, proof: list[bytes]
) -> None:
    leaf = GOLDEN_LEAF_HASHES[index]
    root = ROOTS[size]
    assert root_from_inclusion_proof(leaf, index, size, proof) == root
    verify_inclusion(leaf, index, size, proof, root)
    assert_inclusion_mutations_fail(index, size, proof, root, leaf)


@pytest.mark.parametrize(("size1", "size2", "want"), CONSISTENCY_PROOFS)
def test_consistency_proof_matches_golden(size1: int, size2: int, want: list[bytes]) -> None:
    reader = DictReader(GOLDEN_NODES, size2)
    assert consistency_proof(reader, size1, size2) == want


@pytest.mark.parametrize(("size1", "size2", "proof"), CONSISTENCY_PROOFS)
def test_golden_consistency_proof_verifies_and_mutations_fail(
    size1: int, size2: int, proof: list[bytes]
) -> None:
    root1, root2 = ROOTS[size1], ROOTS[size2]
    verify_consistency(size1, size2, proof, root1, root2)
    if proof:
        assert_consistency_mutations_fail(size1, size2, proof, root1, root2)


def test_single_entry_tree() -> None:
    # transparency-dev/merkle TestVerifyInclusionSingleEntry.
    h = hash_leaf(b"data")
    verify_inclusion(h, 0, 1, [], h)
    with pytest.raises(ProofError):
        verify_inclusion(b"", 0, 1, [], h)
    with pytest.raises(ProofError):
        verify_inclusion(h, 0, 1, [], b"")
    with pytest.raises(RootMismatchError):
        verify_inclusion(h, 0, 1, [], SOME_HASH)


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 0), (2, 1), (1, 1), (-1, 4)])
def test_inclusion_index_out_of_range(index: int, size: int) -> None:
    with pytest.raises(OutOfRangeError, match="out of range"):
        verify_inclusion(SOME_HASH, index, size, [], EMPTY_ROOT)
    with pytest.raises(ValueError, match="out of range"):
        inclusion_nodes(index, size)


# --- properties over every small tree ------------------------------------------------------

MAX_SIZE = 70
LEAF_HASHES = synthetic_leaves(MAX_SIZE)
RNG, NODES = build(LEAF_HASHES)
ROOTS_BY_SIZE = [root_of(LEAF_HASHES[:n]) for n in range(MAX_SIZE + 1)]


def max_nodes(size: int) -> int:
    return 2 * math.ceil(math.log2(size)) + 2 if size > 1 else 2


@pytest.mark.parametrize("size", range(1, MAX_SIZE + 1))
def test_every_inclusion_proof_verifies(size: int) -> None:
    root = ROOTS_BY_SIZE[size]
    for index in range(size):
        reader = DictReader(NODES, size)
        proof = inclusion_proof(reader, index, size)
        assert reader.calls <= 1
        assert reader.reads <= max_nodes(size)
        assert reader.reads == len(inclusion_nodes(index, size).ids)
        verify_inclusion(LEAF_HASHES[index], index, size, proof, root)
        if size <= 33:
            assert_inclusion_mutations_fail(index, size, proof, root, LEAF_HASHES[index])


@pytest.mark.parametrize("size2", range(1, MAX_SIZE + 1))
def test_every_consistency_proof_verifies(size2: int) -> None:
    root2 = ROOTS_BY_SIZE[size2]
    for size1 in range(size2 + 1):
        reader = DictReader(NODES, size2)
        proof = consistency_proof(reader, size1, size2)
        assert reader.calls <= 1
        assert reader.reads <= max_nodes(size2)
        root1 = ROOTS_BY_SIZE[size1]
        verify_consistency(size1, size2, proof, root1, root2)
        if proof and size2 <= 33:
            assert_consistency_mutations_fail(size1, size2, proof, root1, root2)


def test_proof_against_the_root_of_another_size_fails() -> None:
    reader = DictReader(NODES, 13)
    proof = inclusion_proof(reader, 4, 13)
    with pytest.raises(RootMismatchError) as info:
        verify_inclusion(LEAF_HASHES[4], 4, 13, proof, ROOTS_BY_SIZE[12])
    assert info.value.expected == ROOTS_BY_SIZE[12]
    assert info.value.computed == ROOTS_BY_SIZE[13]


def test_inclusion_proof_length_message() -> None:
    proof = inclusion_proof(DictReader(NODES, 8), 0, 8)
    with pytest.raises(InvalidProofError, match="inclusion proof has 4 hashes, want 3"):
        verify_inclusion(LEAF_HASHES[0], 0, 8, [*proof, SOME_HASH], ROOTS_BY_SIZE[8])
    with pytest.raises(InvalidProofError, match="has 31 bytes, want 32"):
        verify_inclusion(LEAF_HASHES[0], 0, 8, [*proof[:2], proof[2][:31]], ROOTS_BY_SIZE[8])


def test_consistency_proof_length_message() -> None:
    proof = consistency_proof(DictReader(NODES, 7), 6, 7)
    with pytest.raises(InvalidProofError, match="consistency proof has 2 hashes, want 3"):
        verify_consistency(6, 7, proof[:2], ROOTS_BY_SIZE[6], ROOTS_BY_SIZE[7])


def test_consistency_mismatch_names_the_root() -> None:
    proof = consistency_proof(DictReader(NODES, 7), 6, 7)
    with pytest.raises(RootMismatchError, match="second root") as info:
        verify_consistency(6, 7, proof, ROOTS_BY_SIZE[6], ROOTS_BY_SIZE[8])
    assert info.value.computed == ROOTS_BY_SIZE[7]


def test_consistency_edge_sizes() -> None:
    root3 = ROOTS_BY_SIZE[3]
    # Equal sizes: empty proof and equal roots.
    verify_consistency(3, 3, [], root3, root3)
    with pytest.raises(RootMismatchError):
        verify_consistency(3, 3, [], root3, ROOTS_BY_SIZE[4])
    with pytest.raises(InvalidProofError):
        verify_consistency(3, 3, [root3], root3, root3)
    # From the empty tree: empty proof, and root1 must be the empty root.
    verify_consistency(0, 3, [], EMPTY_ROOT, root3)
    with pytest.raises(RootMismatchError):
        verify_consistency(0, 3, [], root3, root3)
    with pytest.raises(InvalidProofError):
        verify_consistency(0, 3, [EMPTY_ROOT], EMPTY_ROOT, root3)
    # Time travel.
    with pytest.raises(OutOfRangeError):
        verify_consistency(4, 3, [], root3, root3)
    with pytest.raises(OutOfRangeError):
        consistency_nodes(4, 3)


def test_reader_returning_too_few_hashes_is_an_error() -> None:
    class ShortReader:
        def read_nodes(self, ids: Sequence[NodeID]) -> Sequence[bytes]:
            return [SOME_HASH] * (len(ids) - 1)

    with pytest.raises(ProofError, match="returned 2 hashes for 3 nodes"):
        inclusion_proof(ShortReader(), 0, 8)


def test_ephemeral_node_is_rehashed_from_complete_nodes() -> None:
    # Leaf 0 of a 7-leaf tree: its proof's last hash covers leaves [4, 7), which is no
    # complete node; it is hashed from (1, 2) and (0, 6).
    nodes = inclusion_nodes(0, 7)
    assert nodes.ids == (NodeID(0, 1), NodeID(1, 1), NodeID(0, 6), NodeID(1, 2))
    assert (nodes.ephem_begin, nodes.ephem_end) == (2, 4)
    proof = inclusion_proof(DictReader(NODES, 7), 0, 7)
    assert proof[2] == root_of(LEAF_HASHES[4:7])


def test_large_tree_proofs_read_few_nodes() -> None:
    size = 100_003
    leaves = synthetic_leaves(size)
    rng, nodes = build(leaves)
    root = root_of(leaves)
    assert rng.root() == root
    for index in (0, 1, size // 2, size - 2, size - 1):
        reader = DictReader(nodes, size)
        proof = inclusion_proof(reader, index, size)
        assert reader.reads <= max_nodes(size)
        verify_inclusion(leaves[index], index, size, proof, root)
    for size1 in (1, 2, 65_536, 99_999, size - 1):
        reader = DictReader(nodes, size)
        proof = consistency_proof(reader, size1, size)
        assert reader.reads <= max_nodes(size)
        verify_consistency(size1, size, proof, root_of(leaves[:size1]), root)


def test_root_of_is_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    # Not a timing: root_of must hash each interior node exactly once (n - 1 hashes).
    calls = 0

    def counting_sha256(data: bytes) -> hashlib._Hash:
        nonlocal calls
        calls += 1
        return hashlib.sha256(data)

    leaves = synthetic_leaves(100_000)
    monkeypatch.setattr(proof_module, "_sha256", counting_sha256)
    root = root_of(leaves)
    monkeypatch.undo()
    assert calls == len(leaves) - 1
    assert root == build(leaves)[0].root()
