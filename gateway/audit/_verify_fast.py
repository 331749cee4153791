"""The hot loops of the offline verifier: checking and hashing leaf lines, building the tree.

Private to ``verify``. Nothing here names a problem: a loop stops at the first line that is
not exactly what it expects, and ``verify`` works out what is wrong with it.

Lines come in blocks: bytes of lines split at ``"\\n"``, read in place (no bytes object per
line); only a file's last line may lack its ``"\\n"``.

- ``hash_lines`` checks each line's fixed prefix ``{"i":<p>,"prev":"<hex>","r":`` against
  the expected bytes (no JSON parse) and its closing ``}``, and appends its RFC 6962 leaf
  hash. ``hash_leaves`` only hashes, ``hash_pairs`` hashes pairs of nodes into their parents.
- ``Tree`` folds leaf hashes into the root. Leaves are grouped in aligned chunks of
  ``CHUNK`` leaves; inside the current chunk each level is extended a whole batch at a time
  (one list comprehension per level, instead of a per-leaf stack loop), and a completed
  chunk's root is appended to a ``CompactRange`` whose leaves are chunk roots. Chunks are
  aligned perfect subtrees, so that upper tree is exactly the top of the real one.
- ``read_blocks`` streams a file in blocks of whole lines.
- ``scan_range`` is the worker of the parallel mode: it checks and hashes the lines that
  start in one byte range of ``entries.jsonl``, taking the first line's index and ``prev``
  on trust (the parent checks they continue the previous range), and folds the leaf hashes
  into the roots of the aligned perfect subtrees that cover the range, split at checkpoint
  sizes (``subtree_roots``). The parent appends those few roots to a ``CompactRange``: all
  the hashing of the tree happens in the workers.

- ``check_records`` checks that each line is a leaf of the record schema
  (``record.RECORD_SCHEMAS``, compiled once into ``record_programs``): the prefix's shape,
  then the record's keys in order and the JSON type of each value, without a JSON parse.

``hash_leaves``, ``hash_lines``, ``hash_pairs`` and ``check_records`` are the per-entry loops.
They come from the C extension ``gateway.audit._native`` when it is used (``_accel.NATIVE``),
and otherwise from the Python functions of the same names prefixed ``py_``, which are the
reference the extension is tested against (``tests/audit/test_native.py``).
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import mmap
import os
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from itertools import pairwise
from typing import BinaryIO, NamedTuple

from gateway.audit._accel import NATIVE
from gateway.audit.compact import CompactRange, range_nodes
from gateway.audit.record import RECORD_SCHEMAS
from gateway.audit.rfc6962 import HASH_SIZE, LEAF_PREFIX, NODE_PREFIX

__all__ = [
    "BLOCK_SIZE",
    "CHUNK",
    "ENTRY_PREFIX",
    "LOOPS",
    "NATIVE",
    "ZERO_HEX",
    "RangeResult",
    "Tree",
    "check_records",
    "hash_leaves",
    "hash_lines",
    "hash_pairs",
    "py_check_records",
    "py_hash_leaves",
    "py_hash_lines",
    "py_hash_pairs",
    "read_blocks",
    "record_programs",
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
ENTRY_PREFIX = re.compile(rb'\{"i":(0|[1-9][0-9]*),"prev":"([0-9a-f]{64})","r":')
"""A leaf line's prefix, parsed: its index and the hex leaf hash before it."""
_CLOSE = ord("}")
_NEWLINE = ord("\n")
_LEAF = bytes([LEAF_PREFIX])
_NODE = bytes([NODE_PREFIX])
_sha256 = hashlib.sha256


def _lines(block: bytes | memoryview) -> list[bytes]:
    lines = bytes(block).split(b"\n")
    if not lines[-1]:
        lines.pop()  # the block ended with a newline (or was empty)
    return lines


def py_hash_leaves(block: bytes | memoryview) -> list[bytes]:
    """The RFC 6962 leaf hash of each line of ``block``."""
    sha256, leaf = _sha256, _LEAF
    return [sha256(leaf + line).digest() for line in _lines(block)]


def py_hash_lines(
    block: bytes | memoryview, p: int, prev_hex: bytes, out: list[bytes]
) -> tuple[int, bytes, int]:
    """Check and hash the lines of ``block`` as entries ``p, p+1, ...``; append their leaf
    hashes to ``out``.

    ``prev_hex`` is the 64 hex digits of the leaf hash before line ``p``. Returns the next
    index, the hex leaf hash of the last good line, and the offset in ``block`` of the first
    bad line (-1 if every line was good). The index returned is that line's.
    """
    if p < 0:
        raise ValueError(f"hash_lines: index {p} is negative")
    if len(prev_hex) != 2 * HASH_SIZE:
        raise ValueError(
            f"hash_lines: prev_hex must be {2 * HASH_SIZE} hex digits, not {len(prev_hex)} bytes"
        )
    sha256, hexlify, append = _sha256, binascii.hexlify, out.append
    prefix, leaf, close = _PREFIX, _LEAF, _CLOSE
    at = 0
    for line in _lines(block):
        if not line.startswith(prefix % (p, prev_hex)) or line[-1] != close:
            return p, prev_hex, at
        digest = sha256(leaf + line).digest()
        append(digest)
        prev_hex = hexlify(digest)
        p += 1
        at += len(line) + 1
    return p, prev_hex, -1


def py_hash_pairs(hashes: list[bytes], start: int, end: int) -> list[bytes]:
    """The RFC 6962 parents of the pairs in ``hashes[start:end]`` (32-byte hashes)."""
    if not 0 <= start <= end <= len(hashes) or (end - start) % 2:
        raise ValueError(
            f"hash_pairs: [{start}, {end}) is not an even-sized range of a list of "
            f"{len(hashes)} hashes"
        )
    sha256, node = _sha256, _NODE
    return [
        sha256(node + left + right).digest()
        for left, right in zip(hashes[start:end:2], hashes[start + 1 : end : 2], strict=True)
    ]


_TYPE_CODES = {"string": b"s", "int": b"i", "bool": b"b", "strings": b"l", "index": b"n"}
_KEY = re.compile(r"[a-z_][a-z0-9_]*")


@functools.cache
def record_programs() -> tuple[bytes, ...]:
    """``record.RECORD_SCHEMAS`` as ``check_records`` programs, one per record version.

    A program is items ``<type><literal>\0``: the literal (``{"key":`` or ``,"key":``) must
    come next, then a value of the type (``s`` string, ``i`` integer, ``b`` bool, ``l`` list
    of strings, ``n`` non-negative integer or null, ``z`` none); the keys in sorted order,
    ``v`` holding the version, and the closing ``}}`` of the record and the leaf last.
    """
    programs = []
    for version, schema in sorted(RECORD_SCHEMAS.items()):
        items = []
        for n, key in enumerate(sorted({*schema, "v"})):
            if not _KEY.fullmatch(key):
                raise ValueError(f"record schema {version}: key {key!r} is not a plain name")
            literal = b'%s"%s":' % (b"," if n else b"{", key.encode())
            if key == "v":
                items.append(b"z" + literal + b"%d\0" % version)
            else:
                items.append(_TYPE_CODES[schema[key]] + literal + b"\0")
        items.append(b"z}}\0")
        programs.append(b"".join(items))
    return tuple(programs)


_PLAIN = rb'[^"\\\x00-\x1f\x80-\xff]*'
_STRING = rb'"' + _PLAIN + rb'(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})' + _PLAIN + rb')*"'
"""A JSON string as ``json.dumps`` writes it (ASCII only), as an unrolled loop: fast in ``re``."""
_VALUES = {
    ord("s"): _STRING,
    ord("i"): rb"-?(?:0|[1-9][0-9]*)",
    ord("b"): rb"(?:true|false)",
    ord("l"): rb"\[(?:" + _STRING + rb"(?:," + _STRING + rb")*)?\]",
    ord("n"): rb"(?:null|0|[1-9][0-9]*)",
    ord("z"): b"",
}
_LEAF_HEAD = rb'\{"i":(?:0|[1-9][0-9]*),"prev":"[0-9a-f]{64}","r":'


@functools.cache
def _program_pattern(programs: tuple[bytes, ...]) -> re.Pattern[bytes]:
    """One regular expression for a whole line: the leaf's head, then any of the programs."""
    bodies = []
    for program in programs:
        items = program.split(b"\0")
        if items.pop() != b"":
            raise ValueError("check_records: a program must end with an item's \\0")
        bodies.append(b"".join(re.escape(item[1:]) + _VALUES[item[0]] for item in items))
    return re.compile(_LEAF_HEAD + b"(?:" + b"|".join(bodies) + b")")


def py_check_records(block: bytes | memoryview, programs: tuple[bytes, ...]) -> int:
    """The offset in ``block`` of the first line that is not a leaf whose record matches one
    of ``programs`` (``record_programs``), or -1 if every line is one."""
    fullmatch = _program_pattern(programs).fullmatch
    at = 0
    for line in _lines(block):
        if fullmatch(line) is None:
            return at
        at += len(line) + 1
    return -1


LOOPS = ("hash_leaves", "hash_lines", "hash_pairs", "check_records")
"""The per-entry loops, each in C (``_native``) and in Python (``py_`` + its name)."""

if NATIVE:
    from gateway.audit._native import check_records, hash_leaves, hash_lines, hash_pairs
else:
    hash_leaves, hash_lines, hash_pairs = py_hash_leaves, py_hash_lines, py_hash_pairs
    check_records = py_check_records


def _pair_up(lower: list[bytes], upper: list[bytes]) -> bool:
    """Append to ``upper`` the parents of the pairs of ``lower`` it lacks; return if any."""
    start = 2 * len(upper)
    end = start + ((len(lower) - start) & ~1)
    if end == start:
        return False
    upper.extend(hash_pairs(lower, start, end))
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


def read_blocks(f: BinaryIO, block_size: int = BLOCK_SIZE) -> Iterator[bytes | memoryview]:
    """Yield the bytes of ``f`` in blocks of whole lines, each ending with ``"\\n"``.

    Only a last line without a newline comes alone, in a final block without one.
    """
    rest = b""
    while data := f.read(block_size):
        data = rest + data if rest else data
        cut = data.rfind(b"\n") + 1
        rest = data[cut:]
        if cut:
            yield memoryview(data)[:cut]
    if rest:
        yield rest


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
    while len(hashes) > 1:
        hashes = hash_pairs(hashes, 0, len(hashes))
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


def _read_range(path: str, start: int, end: int) -> bytes | memoryview:
    """The bytes of the lines of ``path`` that start in [start, end), whole.

    A view of the file mapped into memory: the lines are hashed where the page cache holds
    them, never copied. (The file must not shrink meanwhile: an export is written once.)
    """
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return b""
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if start > 0 and data[start - 1] != _NEWLINE:
        # the line that straddles ``start`` belongs to the range before
        newline = data.find(b"\n", start)
        start = newline + 1 if newline >= 0 else len(data)
    if start >= end:
        return b""
    newline = data.find(b"\n", end - 1)
    return memoryview(data)[start : newline + 1 if newline >= 0 else len(data)]


def scan_range(path: str, start: int, end: int) -> RangeResult:
    """Check and hash the lines of ``path`` that start in bytes [start, end)."""
    data = _read_range(path, start, end)
    if not data:
        return RangeResult(True, -1, 0, b"", b"", [])
    match = ENTRY_PREFIX.match(data)
    if match is None or data[-1] != _NEWLINE:
        return RangeResult(False, -1, 0, b"", b"", [])
    first, first_prev = int(match[1]), bytes(match[2])
    if check_records(data, record_programs()) >= 0:
        return RangeResult(False, first, 0, first_prev, b"", [])
    out: list[bytes] = []
    p, last_hex, bad = hash_lines(data, first, first_prev, out)
    if bad >= 0:
        return RangeResult(False, first, p - first, first_prev, last_hex, [])
    return RangeResult(
        True, first, p - first, first_prev, last_hex, subtree_roots(first, out, _cuts)
    )
