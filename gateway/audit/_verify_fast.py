"""The hot loops of the offline verifier: checking and hashing leaf lines, building the tree.

Private to ``verify``. Nothing here names a problem: a loop stops at the first line that is
not exactly what it expects, and ``verify`` works out what is wrong with it.

- ``hash_lines`` checks each line's fixed prefix ``{"i":<p>,"prev":"<hex>","r":`` against
  the expected bytes (one bytes formatting and one ``startswith`` per entry, no JSON parse)
  and its closing ``}``, and appends its RFC 6962 leaf hash.
- ``Tree`` folds leaf hashes into the root. Leaves are grouped in aligned chunks of
  ``CHUNK`` leaves; inside the current chunk each level is extended a whole batch at a time
  (one list comprehension per level, instead of a per-leaf stack loop), and a completed
  chunk's root is appended to a ``CompactRange`` whose leaves are chunk roots. Chunks are
  aligned perfect subtrees, so that upper tree is exactly the top of the real one.
- ``read_lines`` streams a file in blocks, split into lines without their ``"\\n"``.
- ``scan_range`` is the worker of the parallel mode: it checks and hashes the lines that
  start in one byte range of ``entries.jsonl``, taking the first line's index and ``prev``
  on trust (the parent checks they continue the previous range), and folds the leaf hashes
  into the roots of the aligned perfect subtrees that cover the range, split at checkpoint
  sizes (``subtree_roots``). The parent appends those few roots to a ``CompactRange``: all
  the hashing of the tree happens in the workers.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from itertools import pairwise
from typing import BinaryIO, NamedTuple

from gateway.audit.compact import CompactRange, range_nodes
from gateway.audit.rfc6962 import HASH_SIZE, LEAF_PREFIX, NODE_PREFIX

__all__ = [
    "BLOCK_SIZE",
    "CHUNK",
    "ZERO_HEX",
    "RangeResult",
    "Tree",
    "hash_lines",
    "read_lines",
    "scan_range",
    "set_cuts",
    "subtree_roots",
]

CHUNK_BITS = 12
CHUNK = 1 << CHUNK_BITS
"""Leaves per aligned chunk of the tree."""

BLOCK_SIZE = 1 << 20
"""Bytes read from the entries file at a time."""

ZERO_HEX = b"0" * (2 * HASH_SIZE)
"""The ``prev`` of entry 0."""

_PREFIX = b'{"i":%d,"prev":"%b","r":'
_PREFIX_RE = re.compile(rb'\{"i":(0|[1-9][0-9]*),"prev":"([0-9a-f]{64})","r":')
_CLOSE = ord("}")
_LEAF = bytes([LEAF_PREFIX])
_NODE = bytes([NODE_PREFIX])
_sha256 = hashlib.sha256


def hash_lines(
    lines: list[bytes], p: int, prev_hex: bytes, out: list[bytes]
) -> tuple[int, bytes, bool]:
    """Check and hash ``lines`` as entries ``p, p+1, ...``; append their leaf hashes to ``out``.

    Returns the next index, the hex leaf hash of the last good line, and whether every line
    was good. On a bad line, it stops there: the index returned is that line's.
    """
    sha256, hexlify, append = _sha256, binascii.hexlify, out.append
    prefix, leaf, close = _PREFIX, _LEAF, _CLOSE
    for line in lines:
        if not line.startswith(prefix % (p, prev_hex)) or line[-1] != close:
            return p, prev_hex, False
        digest = sha256(leaf + line).digest()
        append(digest)
        prev_hex = hexlify(digest)
        p += 1
    return p, prev_hex, True


def _pair_up(lower: list[bytes], upper: list[bytes]) -> bool:
    """Append to ``upper`` the parents of the pairs of ``lower`` it lacks; return if any."""
    start = 2 * len(upper)
    end = start + ((len(lower) - start) & ~1)
    if end == start:
        return False
    sha256, node = _sha256, _NODE
    upper.extend(
        [
            sha256(node + left + right).digest()
            for left, right in zip(lower[start:end:2], lower[start + 1 : end : 2], strict=True)
        ]
    )
    return True


class Tree:
    """The Merkle tree of a growing sequence of leaf hashes, with the root at any size."""

    __slots__ = ("_levels", "_top")

    def __init__(self) -> None:
        self._top = CompactRange()
        self._levels: list[list[bytes]] = [[] for _ in range(CHUNK_BITS + 1)]

    @property
    def size(self) -> int:
        return self._top.size * CHUNK + len(self._levels[0])

    def extend(self, leaf_hashes: list[bytes]) -> None:
        """Append leaf hashes, in order."""
        levels = self._levels
        leaves = levels[0]
        done = 0
        while done < len(leaf_hashes):
            take = min(CHUNK - len(leaves), len(leaf_hashes) - done)
            leaves.extend(leaf_hashes[done : done + take])
            done += take
            for level in range(CHUNK_BITS):
                if not _pair_up(levels[level], levels[level + 1]):
                    break
            if len(leaves) == CHUNK:
                self._top.append(levels[CHUNK_BITS][0])
                for nodes in levels:
                    nodes.clear()

    def root(self) -> bytes:
        """Return the root hash of the tree of the current size."""
        levels = self._levels
        partial = len(levels[0])
        if not partial:
            return self._top.root()
        # The border of the partial chunk: one complete node per set bit, highest first;
        # then fold from the right over it and over the border of the chunks before it.
        border = []
        pos = 0
        for level in range(CHUNK_BITS - 1, -1, -1):
            if partial >> level & 1:
                border.append(levels[level][pos >> level])
                pos += 1 << level
        border[:0] = [h for _, h in self._top.border()]
        sha256, node = _sha256, _NODE
        h = border[-1]
        for left in reversed(border[:-1]):
            h = sha256(node + left + h).digest()
        return h


def read_lines(f: BinaryIO, block_size: int = BLOCK_SIZE) -> Iterator[tuple[list[bytes], bool]]:
    """Yield the lines of ``f`` in batches, each line without its ``"\\n"``.

    Each batch comes with whether its lines all ended in a newline: only a last line without
    one comes alone in a final batch marked ``False``.
    """
    rest = b""
    while True:
        data = f.read(block_size)
        if not data:
            break
        lines = (rest + data).split(b"\n")
        rest = lines.pop()
        if lines:
            yield lines, True
    if rest:
        yield [rest], False


def subtree_roots(
    first: int, leaf_hashes: list[bytes], cuts: Sequence[int]
) -> list[tuple[int, bytes]]:
    """(level, root) of the aligned perfect subtrees covering leaves [first, first + n).

    Left to right, split at every size in ``cuts`` (sorted) inside the range, so that a
    ``CompactRange`` fed these roots passes through each of those sizes.
    """
    end = first + len(leaf_hashes)
    bounds = [first, *cuts[bisect_right(cuts, first) : bisect_left(cuts, end)], end]
    roots = []
    for begin, stop in pairwise(bounds):
        for node in range_nodes(begin, stop):
            low, high = node.coverage()
            roots.append((node.level, _perfect_root(leaf_hashes[low - first : high - first])))
    return roots


def _perfect_root(hashes: list[bytes]) -> bytes:
    sha256, node = _sha256, _NODE
    while len(hashes) > 1:
        hashes = [
            sha256(node + left + right).digest()
            for left, right in zip(hashes[::2], hashes[1::2], strict=True)
        ]
    return hashes[0]


class RangeResult(NamedTuple):
    """What a worker found in one byte range of the entries file.

    ``ok`` is false if a line is not exactly what its predecessor implies, or the range ends
    the file without a newline: the parent then runs the sequential pass to name the problem.
    """

    ok: bool
    first_index: int
    entries: int
    first_prev_hex: bytes
    last_hex: bytes
    subtrees: list[tuple[int, bytes]]


_cuts: tuple[int, ...] = ()


def set_cuts(cuts: Sequence[int]) -> None:
    """Tell a worker process the checkpoint sizes (its pool's initializer)."""
    global _cuts  # noqa: PLW0603 - one value per worker process, set once
    _cuts = tuple(cuts)


_SLACK = 1 << 16  # bytes read past a range's end to finish its last line, in one read
_buffer = bytearray()  # one per worker process, reused: no fresh pages for every range


def _read_range(path: str, start: int, end: int) -> bytes:
    """The bytes of the lines of ``path`` that start in [start, end), whole."""
    global _buffer  # noqa: PLW0603 - the worker's reusable read buffer
    with open(path, "rb") as f:
        if start > 0:
            f.seek(start - 1)
            if f.read(1) != b"\n":
                f.readline()  # the line that straddles ``start`` belongs to the range before
        pos = f.tell()
        if pos >= end:
            return b""
        want = end - pos + _SLACK
        if len(_buffer) < want:
            _buffer = bytearray(want)
        view = memoryview(_buffer)
        got = f.readinto(view[:want])
        cut = _buffer.find(b"\n", end - pos - 1, got)
        if cut >= 0:
            return bytes(view[: cut + 1])
        data = bytes(view[:got])
        return data if got < want else data + f.readline()  # the end of the file, or a long line


def scan_range(path: str, start: int, end: int) -> RangeResult:
    """Check and hash the lines of ``path`` that start in bytes [start, end)."""
    data = _read_range(path, start, end)
    if not data:
        return RangeResult(True, -1, 0, b"", b"", [])
    lines = data.split(b"\n")
    terminated = lines.pop() == b""
    match = _PREFIX_RE.match(lines[0]) if lines else None
    if not terminated or match is None:
        return RangeResult(False, -1, 0, b"", b"", [])
    first, first_prev = int(match[1]), match[2]
    # Lines up to the latest checkpoint are only hashed: if the roots match the signed
    # checkpoints, they are the very leaves the gateway signed, prefixes and chain included
    # (and if a root does not match, the sequential pass finds the line). Lines after it are
    # signed by nothing yet, so their chain is checked line by line.
    signed = max(0, min(len(lines), (_cuts[-1] if _cuts else 0) - first))
    sha256, leaf = _sha256, _LEAF
    out = [sha256(leaf + line).digest() for line in lines[:signed]]
    prev_hex = binascii.hexlify(out[-1]) if signed else first_prev
    p, last_hex, ok = hash_lines(lines[signed:], first + signed, prev_hex, out)
    if not ok:
        return RangeResult(False, first, p - first, first_prev, last_hex, [])
    return RangeResult(
        True, first, p - first, first_prev, last_hex, subtree_roots(first, out, _cuts)
    )
