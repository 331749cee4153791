"""Merkle inclusion and consistency proofs: which nodes to read, how to build, how to verify.

Builders (``inclusion_proof``, ``consistency_proof``) read O(log n) complete nodes through one
batched ``NodeReader.read_nodes`` call and rehash the one "ephemeral" node, the root of an
incomplete subtree on the right border, from the complete nodes under it (after
transparency-dev/merkle ``proof.Inclusion`` / ``proof.Consistency``).

Verifiers follow RFC 9162 sections 2.1.3.2 (inclusion) and 2.1.4.2 (consistency) step by
step, after a length check that gives a precise message. ``root_of`` computes MTH (RFC 6962
section 2.1) of a whole list of leaf hashes, for full verification.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.audit.compact import NodeID, range_nodes
from gateway.audit.rfc6962 import EMPTY_ROOT, HASH_SIZE, NODE_PREFIX

__all__ = [
    "InvalidProofError",
    "NodeReader",
    "OutOfRangeError",
    "ProofError",
    "ProofNodes",
    "RootMismatchError",
    "consistency_nodes",
    "consistency_proof",
    "inclusion_nodes",
    "inclusion_proof",
    "root_from_inclusion_proof",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]

_sha256 = hashlib.sha256
_NODE = bytes([NODE_PREFIX])


class ProofError(Exception):
    """Root of every error raised when building or verifying a proof."""


class OutOfRangeError(ProofError, ValueError):
    """The index or tree sizes asked for do not exist (index >= size, size1 > size2, ...)."""


class InvalidProofError(ProofError):
    """The proof is malformed: wrong number of hashes, a hash of the wrong size."""


class RootMismatchError(ProofError):
    """The proof is well formed but leads to a root other than the expected one."""

    def __init__(self, expected: bytes, computed: bytes, what: str = "root") -> None:
        super().__init__(
            f"computed {what} {computed.hex()} does not match expected {what} {expected.hex()}"
        )
        self.expected = expected
        self.computed = computed


class NodeReader(Protocol):
    """Reads hashes of complete nodes, all in one batch (for example one SQL query)."""

    def read_nodes(self, ids: Sequence[NodeID]) -> Sequence[bytes]:
        """Return the hashes of ``ids``, in the same order."""
        ...


@dataclass(frozen=True, slots=True)
class ProofNodes:
    """The complete nodes a proof is built from.

    ``ids[ephem_begin:ephem_end]`` (possibly empty) are the complete nodes under the one
    ephemeral node, ordered from the lowest level up; they are hashed together into it.
    """

    ids: tuple[NodeID, ...]
    ephem_begin: int
    ephem_end: int

    def rehash(self, hashes: Sequence[bytes]) -> list[bytes]:
        """Turn the hashes of ``ids`` into the proof, hashing the ephemeral node."""
        if len(hashes) != len(self.ids):
            raise ProofError(f"node reader returned {len(hashes)} hashes for {len(self.ids)} nodes")
        begin, end = self.ephem_begin, self.ephem_end
        if end - begin < 2:
            return list(hashes)
        ephem = hashes[begin]
        for left in hashes[begin + 1 : end]:
            ephem = _sha256(_NODE + left + ephem).digest()
        return [*hashes[:begin], ephem, *hashes[end:]]

    def _skip_first(self) -> ProofNodes:
        begin, end = self.ephem_begin, self.ephem_end
        if begin < end:
            begin, end = begin - 1, end - 1
        return ProofNodes(self.ids[1:], begin, end)


def _nodes(index: int, level: int, size: int) -> ProofNodes:
    """Nodes proving that node (level, index) is in the tree of ``size`` leaves.

    The first ID is the node itself. Then come the siblings on the path up to the ``fork``
    node, where the paths to (level, index) and to leaf ``size`` diverge; then the complete
    nodes under the fork's sibling (the ephemeral node), lowest first; then the complete
    nodes left of the fork, lowest first.
    """
    inner = (index ^ (size >> level)).bit_length() - 1
    fork = NodeID(level + inner, index >> inner)
    begin, end = fork.coverage()

    node = NodeID(level, index)
    ids = [node]
    while node.level < fork.level:
        ids.append(node.sibling())
        node = node.parent()
    ephem_begin = len(ids)
    ids.extend(reversed(range_nodes(end, size)))
    ephem_end = len(ids)
    ids.extend(reversed(range_nodes(0, begin)))
    if ephem_begin >= ephem_end:
        ephem_begin = ephem_end = 0
    return ProofNodes(tuple(ids), ephem_begin, ephem_end)


def inclusion_nodes(index: int, size: int) -> ProofNodes:
    """Return the nodes of the inclusion proof of leaf ``index`` in a tree of ``size``."""
    if not 0 <= index < size:
        raise OutOfRangeError(f"leaf index {index} out of range for tree size {size}")
    return _nodes(index, 0, size)._skip_first()


def consistency_nodes(size1: int, size2: int) -> ProofNodes:
    """Return the nodes of the consistency proof from tree size ``size1`` to ``size2``.

    The proof is empty when ``size1`` is 0 or equals ``size2``.
    """
    if not 0 <= size1 <= size2:
        raise OutOfRangeError(f"invalid tree sizes for consistency: {size1} > {size2}")
    if size1 in (0, size2):
        return ProofNodes((), 0, 0)
    # The largest perfect subtree ending at size1, and its inclusion path in size2; its own
    # hash is left out when it is the whole first tree (the client knows it as root1).
    level = (size1 & -size1).bit_length() - 1
    nodes = _nodes((size1 - 1) >> level, level, size2)
    if size1 & (size1 - 1) == 0:
        return nodes._skip_first()
    return nodes


def inclusion_proof(reader: NodeReader, index: int, size: int) -> list[bytes]:
    """Build the RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
    nodes = inclusion_nodes(index, size)
    return nodes.rehash(reader.read_nodes(nodes.ids) if nodes.ids else ())


def consistency_proof(reader: NodeReader, size1: int, size2: int) -> list[bytes]:
    """Build the RFC 9162 consistency proof between tree sizes ``size1`` <= ``size2``."""
    nodes = consistency_nodes(size1, size2)
    return nodes.rehash(reader.read_nodes(nodes.ids) if nodes.ids else ())


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return MTH (RFC 6962 section 2.1) of a tree with the given leaf hashes.

    Computed level by level: an unpaired node at the right end of a level moves up
    unchanged, which yields the same root as the recursive definition.
    """
    level = list(leaf_hashes)
    if not level:
        return EMPTY_ROOT
    sha256, node = _sha256, _NODE
    while len(level) > 1:
        carry = level.pop() if len(level) & 1 else None
        level = [
            sha256(node + left + right).digest()
            for left, right in zip(level[::2], level[1::2], strict=True)
        ]
        if carry is not None:
            level.append(carry)
    return level[0]


def _decomp_inclusion(index: int, size: int) -> tuple[int, int]:
    """Split the proof of leaf ``index`` in ``size`` into its inner and border lengths."""
    inner = (index ^ (size - 1)).bit_length()
    border = (index >> inner).bit_count()
    return inner, border


def _check_size(h: bytes, what: str) -> None:
    if len(h) != HASH_SIZE:
        raise InvalidProofError(f"{what} has {len(h)} bytes, want {HASH_SIZE}")


def _check_proof(proof: Sequence[bytes], want: int, what: str) -> None:
    if len(proof) != want:
        raise InvalidProofError(f"{what} proof has {len(proof)} hashes, want {want}")
    for i, h in enumerate(proof):
        _check_size(h, f"{what} proof hash {i}")


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """Return the root that the inclusion proof of ``leaf_hash`` at ``index`` leads to.

    RFC 9162 section 2.1.3.2, steps 1 to 4.
    """
    if not 0 <= index < size:
        raise OutOfRangeError(f"leaf index {index} out of range for tree size {size}")
    _check_size(leaf_hash, "leaf hash")
    _check_proof(proof, sum(_decomp_inclusion(index, size)), "inclusion")
    sha256, node = _sha256, _NODE
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            raise InvalidProofError("inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = sha256(node + p + r).digest()
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = sha256(node + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProofError("inclusion proof is shorter than the path to the root")
    return r


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` with ``root``.

    Raises a ``ProofError`` (``RootMismatchError`` if the proof leads to another root).
    """
    _check_size(root, "root hash")
    computed = root_from_inclusion_proof(leaf_hash, index, size, proof)
    if computed != root:
        raise RootMismatchError(root, computed)


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree of ``size2`` with ``root2`` extends the one of ``size1``, ``root1``.

    RFC 9162 section 2.1.4.2 for 0 < size1 < size2. Also: equal sizes need an empty proof
    and equal roots; from size 0, the proof is empty and ``root1`` is the empty root.
    Raises a ``ProofError`` (``RootMismatchError`` if a computed root differs).
    """
    if not 0 <= size1 <= size2:
        raise OutOfRangeError(f"invalid tree sizes for consistency: {size1} > {size2}")
    _check_size(root1, "first root hash")
    _check_size(root2, "second root hash")
    if size1 in (0, size2):
        _check_proof(proof, 0, "consistency")
        if size1 == 0 and root1 != EMPTY_ROOT:
            raise RootMismatchError(EMPTY_ROOT, root1, "first root")
        if size1 == size2 and root1 != root2:
            raise RootMismatchError(root2, root1, "second root")
        return
    fr, sr = _roots_from_consistency_proof(size1, size2, proof, root1)
    if fr != root1:
        raise RootMismatchError(root1, fr, "first root")
    if sr != root2:
        raise RootMismatchError(root2, sr, "second root")


def _roots_from_consistency_proof(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes
) -> tuple[bytes, bytes]:
    """RFC 9162 section 2.1.4.2, steps 1 to 6, for 0 < size1 < size2: (fr, sr)."""
    inner, border = _decomp_inclusion(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1
    power_of_two = size1 & (size1 - 1) == 0
    _check_proof(proof, (0 if power_of_two else 1) + inner - shift + border, "consistency")
    path = [root1, *proof] if power_of_two else list(proof)  # step 2
    sha256, node = _sha256, _NODE
    fn, sn = size1 - 1, size2 - 1  # step 3
    while fn & 1:  # step 4
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]  # step 5
    for c in path[1:]:  # step 6
        if sn == 0:
            raise InvalidProofError("consistency proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            fr = sha256(node + c + fr).digest()
            sr = sha256(node + c + sr).digest()
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = sha256(node + sr + c).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:  # step 7
        raise InvalidProofError("consistency proof is shorter than the path to the root")
    return fr, sr
