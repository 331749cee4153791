"""Node addressing and the compact range (right border) of a growing log.

A log of ``size`` leaves is covered, left to right, by one perfect subtree per set bit of
``size``: its right border. ``CompactRange`` keeps only those border hashes, so appending a
leaf costs O(1) amortised hashes and memory stays O(log n). Every perfect subtree that an
append completes is reported, so that a store can persist each complete node once and later
serve proofs from them (see ``proof``). A restarted process rebuilds the range from the
stored border nodes, ``border_ids(size)``, without reading the leaves.

Modelled on transparency-dev/merkle ``compact/``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from gateway.audit._accel import NATIVE
from gateway.audit.rfc6962 import EMPTY_ROOT, HASH_SIZE, NODE_PREFIX

__all__ = ["CompactRange", "NodeID", "border_ids", "range_nodes"]

_sha256 = hashlib.sha256
_NODE = bytes([NODE_PREFIX])


class NodeID(NamedTuple):
    """A perfect subtree: the node covering leaves [index * 2**level, (index + 1) * 2**level).

    Level 0 nodes are the leaves themselves.
    """

    level: int
    # Shadows tuple.index on purpose: the name is the one used by RFC 9162 and
    # transparency-dev/merkle, and a NamedTuple is cheap to build and unpack in hot loops.
    index: int  # type: ignore[assignment]

    def parent(self) -> NodeID:
        return NodeID(self.level + 1, self.index >> 1)

    def sibling(self) -> NodeID:
        return NodeID(self.level, self.index ^ 1)

    def coverage(self) -> tuple[int, int]:
        """Return the [begin, end) range of leaf indexes under this node."""
        return self.index << self.level, (self.index + 1) << self.level


def _decompose(begin: int, end: int) -> tuple[int, int]:
    """Split [begin, end) into perfect subtrees, as two bit masks of their sizes.

    The left mask lists, from low to high bits, the sizes of the subtrees on the left part
    of the range; the right mask lists, from high to low bits, those on the right part.
    """
    if begin == 0:
        return 0, end
    before = begin - 1
    # Only nodes strictly below the point where the paths to leaves begin-1 and end diverge
    # lie inside the range.
    mask = (1 << ((before ^ end).bit_length() - 1)) - 1
    return ~before & mask, end & mask


def range_nodes(begin: int, end: int) -> list[NodeID]:
    """Return the minimal perfect subtrees covering leaves [begin, end), left to right."""
    if not 0 <= begin <= end:
        raise ValueError(f"invalid range [{begin}, {end})")
    left, right = _decompose(begin, end)
    ids: list[NodeID] = []
    pos = begin
    while left:
        bit = left & -left
        level = bit.bit_length() - 1
        ids.append(NodeID(level, pos >> level))
        pos += bit
        left ^= bit
    while right:
        level = right.bit_length() - 1
        bit = 1 << level
        ids.append(NodeID(level, pos >> level))
        pos += bit
        right ^= bit
    return ids


def border_ids(size: int) -> list[NodeID]:
    """Return the right-border nodes of a tree of ``size`` leaves, left to right.

    These are the nodes a store reads to rebuild a ``CompactRange`` after a restart.
    """
    return range_nodes(0, size)


class CompactRange:
    """The right border of a log growing from leaf 0, with its root hash."""

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @classmethod
    def from_border(cls, size: int, hashes: Sequence[bytes]) -> CompactRange:
        """Rebuild the range of a tree of ``size`` leaves from its stored border hashes.

        ``hashes`` are the hashes of ``border_ids(size)``, in that order.
        """
        if size < 0:
            raise ValueError(f"invalid tree size {size}")
        want = size.bit_count()
        if len(hashes) != want:
            raise ValueError(f"tree size {size} has {want} border nodes, got {len(hashes)}")
        for h in hashes:
            _check_hash(h)
        rng = cls()
        rng._size = size
        rng._hashes = list(hashes)
        return rng

    @property
    def size(self) -> int:
        """The number of leaves appended so far."""
        return self._size

    def border(self) -> list[tuple[NodeID, bytes]]:
        """Return the right-border nodes and their hashes, left to right."""
        return list(zip(border_ids(self._size), self._hashes, strict=True))

    def append(self, leaf_hash: bytes) -> list[tuple[NodeID, bytes]]:
        """Append one leaf hash; return the nodes it completes, lowest level first.

        The first node returned is the leaf itself (level 0); each following one is the
        parent of the previous, up to the highest perfect subtree the leaf completes.
        """
        index = self._size
        return [(NodeID(level, index >> level), h) for level, h in enumerate(self.push(leaf_hash))]

    def push(self, leaf_hash: bytes) -> list[bytes]:
        """``append`` without the node ids: the hashes of the completed nodes, level 0 first.

        Leaf ``i`` completes the nodes (level, i >> level) for level 0 up to the number of
        trailing one bits of ``i``: node (level, k) is completed by leaf ((k + 1) << level) - 1.
        """
        return self.push_subtree(0, leaf_hash)

    def push_subtree(self, level: int, root: bytes) -> list[bytes]:
        """Append a perfect subtree of 2**level leaves, given its root hash.

        The current size must be a multiple of 2**level (the subtree is aligned, as every
        node of ``range_nodes`` is). Returns the hashes of the nodes completed, ``root`` first.
        """
        _check_hash(root)
        if self._size & ((1 << level) - 1):
            raise ValueError(f"a subtree of level {level} is not aligned at size {self._size}")
        index = self._size >> level
        completed = [root]
        hashes = self._hashes
        h = root
        while index & 1:
            h = _sha256(_NODE + hashes.pop() + h).digest()
            index >>= 1
            completed.append(h)
        hashes.append(h)
        self._size += 1 << level
        return completed

    def push_leaves(self, leaf_hashes: list[bytes]) -> list[bytes]:
        """``push`` each of ``leaf_hashes`` in order; for each, its completed nodes joined.

        One call per batch of appends (``push_leaves``, in C where it is built); nothing
        changes if a hash is not 32 bytes.
        """
        nodes = push_leaves(self._hashes, self._size, leaf_hashes)
        self._size += len(leaf_hashes)
        return nodes

    def extend(self, leaf_hashes: Iterable[bytes]) -> list[tuple[NodeID, bytes]]:
        """Append leaf hashes in order; return every node they complete, in that order."""
        completed: list[tuple[NodeID, bytes]] = []
        for leaf_hash in leaf_hashes:
            completed.extend(self.append(leaf_hash))
        return completed

    def root(self) -> bytes:
        """Return the RFC 6962 root hash of the tree of the current size."""
        hashes = self._hashes
        if not hashes:
            return EMPTY_ROOT
        h = hashes[-1]
        for left in reversed(hashes[:-1]):
            h = _sha256(_NODE + left + h).digest()
        return h

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size})"


def py_push_leaves(border: list[bytes], size: int, leaf_hashes: list[bytes]) -> list[bytes]:
    """Extend the right ``border`` of a tree of ``size`` leaves with ``leaf_hashes``, in place.

    Returns, for each leaf, the hashes of the nodes it completes (its own first, as ``push``
    returns them), joined. Checks everything before changing anything.
    """
    if size < 0 or len(border) != size.bit_count():
        raise ValueError(
            f"push_leaves: a border of {len(border)} hashes is not that of a tree of size {size}"
        )
    if size > (1 << 62) - len(leaf_hashes):
        raise OverflowError(f"push_leaves: a tree of {size} + {len(leaf_hashes)} is too large")
    for what, hashes in (("border hash", border), ("leaf hash", leaf_hashes)):
        for i, h in enumerate(hashes):
            if not isinstance(h, bytes):
                raise TypeError(f"{what} must be bytes, not {type(h).__name__}")
            if len(h) != HASH_SIZE:
                raise ValueError(f"{what} {i} has {len(h)} bytes, not {HASH_SIZE}")
    rng = CompactRange.from_border(size, border)
    joined = [b"".join(rng.push(h)) for h in leaf_hashes]
    border[:] = rng._hashes
    return joined


if NATIVE:
    from gateway.audit._native import push_leaves
else:
    push_leaves = py_push_leaves


def _check_hash(h: bytes) -> None:
    if len(h) != HASH_SIZE:
        raise ValueError(f"hash has {len(h)} bytes, want {HASH_SIZE}")
