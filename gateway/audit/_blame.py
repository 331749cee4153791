"""Naming what is wrong with an export, once the verifier's fast pass stopped at it.

Private to ``verify``. The fast pass proves entries ``[0, proven)`` with a signed root and
stops at the first line that is not what the chain implies, or at a checkpoint whose root the
leaves do not give. This module works out which entry is at fault, reading the export's lines
again (``Lines``): only on failure, so it may take its time.

- A line of the wrong index: a copy or an insertion (the line chains to an earlier line), a
  swap or move (the expected entry comes later), else a deletion (the range it skipped).
- A line whose ``prev`` is not the leaf hash of the line before: either that entry was changed
  (the ``prev`` holds its signed hash) or the ``prev`` field itself was; both readings are
  tried against the next signed root, and only one that reproduces it is believed.
- A root that does not match, with every link before it intact: any entry since the last
  matching root may have been changed and the chain rewritten to hide it, so the range is named.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice

from gateway.audit import _verify_fast as fast
from gateway.audit.compact import CompactRange
from gateway.audit.rfc6962 import LEAF_PREFIX

Lines = Callable[[int], Iterator[bytes]]
"""The export's lines (without ``"\\n"``) from a position on."""

WINDOW = 4096
"""Lines looked at before or after a misplaced line to find where it belongs."""

_BATCH = 4096


@dataclass(frozen=True)
class Problem:
    """What is wrong with a log: the entry at fault (``index``) or the range ``index..last``
    one of whose entries is, when that is all the signed roots can tell; ``None`` when no entry
    can be named (a checkpoint file, a missing file)."""

    index: int | None
    message: str
    last: int | None = None

    @property
    def where(self) -> str:
        """``first bad entry: N``, ``bad entries N..M`` or nothing."""
        if self.index is None:
            return ""
        if self.last is None or self.last == self.index:
            return f"first bad entry: {self.index}"
        return f"bad entries {self.index}..{self.last}"

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


@dataclass(frozen=True)
class Cut:
    """A signed tree size the leaves must reproduce: the export's or a trusted checkpoint's."""

    size: int
    root: bytes
    label: str
    trusted: bool = False


def blame_root(
    lines: Lines | None, proven: int, cut: Cut, root: bytes, same_size_matched: bool
) -> Problem:
    """The leaves ``[0, cut.size)``, chained without a break, give ``root``, not ``cut.root``.

    If the next line is misplaced in a way that names an entry of the range (an insertion), or
    its ``prev`` breaks the chain and its reading of the last entry gives the signed root, that
    entry is named.
    """
    if same_size_matched:  # the export's own checkpoint of this size did match
        return Problem(
            None,
            f"the export's checkpoint {cut.size} and the {cut.label} are both signed and hold "
            f"different roots: the log was forked (rewritten after the trusted checkpoint)",
        )
    got = f"the tree root is {root.hex()}, not the signed {cut.root.hex()}"
    size = cut.size
    following = next(lines(size), b"") if lines is not None else b""
    after = fast.ENTRY_PREFIX.match(following)
    if lines is not None and after is not None and int(after[1]) != size:
        moved = _misplaced(lines, size, int(after[1]), bytes(after[2]), following)
        if moved.index is not None and moved.index >= proven:  # it explains the wrong root
            return moved
    if (
        lines is not None
        and after is not None
        and after[2] != _hex_hash(next(lines(size - 1), b""))
        and _reading_root(lines, size, size, bytes.fromhex(after[2].decode()), None) == cut.root
    ):
        return Problem(
            size - 1,
            f"entry {size - 1} was changed: entry {size} and {cut.label} hold another entry "
            f"there (leaf hash {after[2].decode()})",
        )
    if cut.trusted:
        got += "; the log was rewritten after the trusted checkpoint was signed: a fork"
    if cut.size - proven == 1:
        return Problem(cut.size - 1, f"entry {cut.size - 1} is not the one in {cut.label}: {got}")
    return Problem(
        proven,
        f"entries {proven}..{cut.size - 1} are chained but do not give the root of {cut.label}"
        f": one of them was changed and the entries after it re-chained ({got})",
        cut.size - 1,
    )


def blame_line(lines: Lines, p: int, prev_hex: bytes, proven: int, ahead: Cut | None) -> Problem:
    """Line ``p`` failed the fast check; ``prev_hex`` is the leaf hash of line ``p - 1``,
    ``[0, proven)`` is proven by a signed root and ``ahead`` is the next signed size past ``p``.
    """
    line = next(lines(p), b"")
    match = fast.ENTRY_PREFIX.match(line)
    if match is None:
        return Problem(p, f'entry {p}: malformed: does not start with {{"i":{p},"prev":"..."')
    index, recorded = int(match[1]), bytes(match[2])
    if index != p:
        return _misplaced(lines, p, index, recorded, line)
    if recorded != prev_hex:
        return _broken_link(lines, p, (recorded, prev_hex), proven, ahead)
    return Problem(
        p,
        f"entry {p}: malformed: its record is not one of the leaf format (docs/audit-format.md)",
    )


def _misplaced(lines: Lines, p: int, index: int, recorded: bytes, line: bytes) -> Problem:
    """Line ``p`` holds entry ``index``."""
    if index > p:
        for j, other in enumerate(islice(lines(p + 1), WINDOW), p + 1):
            match = fast.ENTRY_PREFIX.match(other)
            if match is not None and int(match[1]) == p:
                if j == p + 1 and index == p + 1:
                    return Problem(p, f"entries {p} and {p + 1} were swapped", p + 1)
                return Problem(p, f"entry {p} was moved: line {j} holds it, line {p} entry {index}")
        what = f"entry {p} is" if index == p + 1 else f"entries {p}..{index - 1} are"
        where = f"the line after entry {p - 1}" if p else "the first line"
        return Problem(p, f"{what} missing: {where} holds entry {index}", index - 1)
    if next(lines(index), None) == line:
        return Problem(p, f"entry {p}: a copy of entry {index} was inserted here")
    before = next(lines(index - 1), b"") if index else b""
    if (_hex_hash(before) if index else fast.ZERO_HEX) == recorded:
        what = f"entry {index} was" if index == p - 1 else f"entries {index}..{p - 1} were"
        return Problem(
            index,
            f"{what} inserted: line {p} holds entry {index}, chained to the one before",
            p - 1,
        )
    return Problem(
        p, f"entry {p}: holds index {index}: entries were deleted, inserted or reordered"
    )


def _broken_link(
    lines: Lines, p: int, prevs: tuple[bytes, bytes], proven: int, ahead: Cut | None
) -> Problem:
    """Line ``p``'s ``prev`` is ``recorded``, not ``prev_hex`` (the hash of line ``p - 1``)."""
    recorded, prev_hex = prevs
    if p == 0:
        return Problem(0, "entry 0: malformed: its prev is not 64 zeros")
    if proven == p:
        return Problem(
            p,
            f"entry {p} was changed: its prev is not the leaf hash of entry {p - 1}, which a "
            f"signed checkpoint of size {p} proves",
        )
    if ahead is None:
        return Problem(
            proven,
            f"entry {p} does not chain to entry {p - 1}, and no signed checkpoint after entry "
            f"{proven - 1} tells which of entries {proven}..{p} was changed",
            p,
        )
    if _reading_root(lines, p, ahead.size, bytes.fromhex(recorded.decode()), None) == ahead.root:
        return Problem(
            p - 1,
            f"entry {p - 1} was changed: entry {p} and {ahead.label} hold another entry there "
            f"(leaf hash {recorded.decode()})",
        )
    line = next(lines(p), b"")
    fixed = line.replace(recorded, prev_hex, 1)
    if _reading_root(lines, p, ahead.size, None, fixed) == ahead.root:
        return Problem(
            p,
            f"entry {p} was changed: its prev field was altered (entry {p - 1} is intact: "
            f"with the prev it should hold, {ahead.label} verifies)",
        )
    return Problem(
        proven,
        f"entry {p} does not chain to entry {p - 1}, and neither of them alone explains "
        f"{ahead.label}: more than one entry of {proven}..{p} was changed",
        p,
    )


def _reading_root(
    lines: Lines, p: int, size: int, hash_before: bytes | None, line_p: bytes | None
) -> bytes | None:
    """The root at ``size`` if entry ``p - 1``'s leaf hash were ``hash_before`` (else the
    export's) and line ``p`` were ``line_p`` (else the export's), or None if the lines from
    ``p`` on do not then chain up to ``size``."""
    tree = CompactRange()
    source = lines(0)
    for batch in _batched(islice(source, p - 1)):
        tree.push_leaves(fast.hash_leaves(b"".join(line + b"\n" for line in batch)))
    before = next(source, b"")
    tree.push(hash_before if hash_before is not None else _hash(before))
    first = next(source, b"") if line_p is None else _skip_one(source, line_p)
    expected = fast.ENTRY_PREFIX.match(first)
    if expected is None:
        return None
    prev_hex, at = bytes(expected[2]), p
    for batch in _batched(islice(_chain_of(first, source), size - p)):
        out: list[bytes] = []
        at, prev_hex, bad = fast.hash_lines(b"".join(x + b"\n" for x in batch), at, prev_hex, out)
        tree.push_leaves(out)
        if bad >= 0:
            return None
    return tree.root() if at == size else None


def _skip_one(source: Iterator[bytes], replacement: bytes) -> bytes:
    next(source, None)
    return replacement


def _chain_of(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _batched(it: Iterator[bytes]) -> Iterator[list[bytes]]:
    while batch := list(islice(it, _BATCH)):
        yield batch


def _hash(line: bytes) -> bytes:
    return hashlib.sha256(bytes([LEAF_PREFIX]) + line).digest()


def _hex_hash(line: bytes) -> bytes:
    return _hash(line).hex().encode()
