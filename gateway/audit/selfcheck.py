"""The log's self-check: what the gateway is about to sign over extends what it already signed.

A log signs each new checkpoint over its compact range (the right border of its tree), which it
rebuilds from stored nodes when it starts and after a rolled-back batch. If a stored node was
changed, the new roots would no longer extend the signed ones: the log would sign a fork of its
own history. ``check_stored_log`` refuses that before anything is signed, from O(log n) stored
nodes and one leaf, never by rehashing the log:

- the border at the newest signed checkpoint's size ``m`` must give that checkpoint's root;
- the nodes covering ``[m, n)`` (``range_nodes``) are merged onto it one by one, and every
  parent the merge completes must be the stored one: the border at ``n`` that the next
  checkpoints are computed from is then the signed tree at ``m`` extended by those nodes;
- the newest entry ``n - 1`` must name its own index, hash to its stored leaf node and chain to
  entry ``n - 2``'s leaf hash (the size, taken from the highest index, agrees with it).

Any mismatch, or a node that cannot be read, raises ``LogDamagedError`` naming the range of
entries involved. Pure functions over a ``NodeReader``: the store supplies the reads.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.audit.checkpoint import Checkpoint
from gateway.audit.compact import CompactRange, NodeID, border_ids, range_nodes
from gateway.audit.proof import NodeReader, inclusion_proof, root_from_inclusion_proof
from gateway.audit.record import ZERO_HASH
from gateway.audit.rfc6962 import hash_leaf
from gateway.errors import SetupError

__all__ = [
    "LogDamagedError",
    "StoredTip",
    "UnreadableNodeError",
    "check_extension",
    "check_stored_log",
]

_LEAF_HEAD = re.compile(rb'\{"i":(0|[1-9][0-9]*),"prev":"([0-9a-f]{64})",')


class UnreadableNodeError(LookupError):
    """A stored Merkle node is missing, too short, or not stored as a BLOB."""

    def __init__(self, node: NodeID, why: str) -> None:
        begin, end = node.coverage()
        super().__init__(f"stored Merkle node (level {node.level}, index {node.index}) {why}")
        self.node = node
        self.begin = begin
        self.end = end


class LogDamagedError(SetupError):
    """The stored log does not extend its newest signed checkpoint: nothing may be signed."""

    def __init__(self, begin: int, end: int, detail: str) -> None:
        super().__init__(
            f"audit log damaged at entries [{begin}, {end}): {detail}; the gateway signs no "
            f"checkpoint over it: stop it, and find the changed entry with `onecard audit "
            f"export` and `onecard audit verify`"
        )
        self.begin = begin
        self.end = end
        self.detail = detail


@dataclass(frozen=True, slots=True)
class StoredTip:
    """What the store holds at the end of the log: its size and its newest entry's leaf."""

    size: int  # the highest stored index + 1
    first_index: int  # the lowest stored index (0 unless entries were deleted)
    newest_leaf: bytes | None  # entry size - 1's leaf (None when the log is empty)


def check_stored_log(
    tip: StoredTip, checkpoint: Checkpoint | None, reader: NodeReader
) -> tuple[CompactRange, bytes]:
    """Check the stored log against its newest signed ``checkpoint`` (see the module docstring).

    Returns the compact range at ``tip.size`` and the newest entry's leaf hash, both checked.
    """
    size = tip.size
    signed = checkpoint.size if checkpoint is not None else 0
    if size and checkpoint is None:
        # Every batch that makes a log non-empty signs a checkpoint in its own transaction: a
        # log with entries and none has lost them, and nothing here could be checked.
        raise LogDamagedError(0, size, "the log has entries but no signed checkpoint")
    if size and tip.first_index != 0:
        raise LogDamagedError(0, tip.first_index, "the first entries are missing")
    if signed > size:
        raise LogDamagedError(
            size, signed, f"signed checkpoint {signed} covers entries that are not stored"
        )
    try:
        rng = _signed_range(signed, checkpoint, reader)
        _extend(rng, size, reader)
        prev = _check_newest(tip, rng, reader)
    except UnreadableNodeError as exc:
        raise LogDamagedError(exc.begin, min(exc.end, size), str(exc)) from None
    return rng, prev


def check_extension(
    known: CompactRange, tip: StoredTip, reader: NodeReader
) -> tuple[CompactRange, bytes]:
    """Check that the stored log at ``tip`` extends ``known``, a compact range this process
    built and checked earlier (where several processes append to one log, what the others
    appended since is checked this way before this one signs over it).

    The stored nodes covering ``[known.size, tip.size)`` are merged onto a copy of ``known``,
    every parent they complete must be the stored one, and the newest entry must be in the
    resulting tree and chain to its predecessor. Returns the range at ``tip.size`` and the
    newest entry's leaf hash; raises ``LogDamagedError`` as ``check_stored_log`` does.
    """
    if tip.size < known.size:
        raise LogDamagedError(
            tip.size, known.size, f"the log holds {tip.size} entries, fewer than {known.size}"
        )
    rng = CompactRange.from_border(known.size, [h for _, h in known.border()])
    try:
        _extend(rng, tip.size, reader)
        prev = _check_newest(tip, rng, reader)
    except UnreadableNodeError as exc:
        raise LogDamagedError(exc.begin, min(exc.end, tip.size), str(exc)) from None
    return rng, prev


def _signed_range(signed: int, checkpoint: Checkpoint | None, reader: NodeReader) -> CompactRange:
    """The compact range at the checkpoint's size, from stored nodes, checked against its root."""
    rng = CompactRange.from_border(signed, list(reader.read_nodes(border_ids(signed))))
    if checkpoint is not None and rng.root() != checkpoint.root_hash:
        raise LogDamagedError(
            0,
            signed,
            f"the stored Merkle nodes do not give the root of signed checkpoint {signed}",
        )
    return rng


def _extend(rng: CompactRange, size: int, reader: NodeReader) -> None:
    """Merge the stored nodes covering [rng.size, size) onto ``rng``; check every parent."""
    nodes = range_nodes(rng.size, size)
    completed: list[tuple[NodeID, bytes]] = []
    for node, h in zip(nodes, reader.read_nodes(nodes), strict=True):
        for up, parent in enumerate(rng.push_subtree(node.level, h)[1:], 1):
            completed.append((NodeID(node.level + up, node.index >> up), parent))
    stored = reader.read_nodes([node for node, _ in completed]) if completed else []
    for (node, computed), h in zip(completed, stored, strict=True):
        if computed != h:
            begin, end = node.coverage()
            raise LogDamagedError(
                begin,
                end,
                f"stored Merkle node (level {node.level}, index {node.index}) is not the hash "
                f"of its stored children",
            )


def _check_newest(tip: StoredTip, rng: CompactRange, reader: NodeReader) -> bytes:
    """Entry size - 1 names its index, hashes to its leaf node, is in the tree of ``rng``
    (its inclusion proof from stored nodes leads to ``rng``'s root) and chains to entry
    size - 2."""
    size = tip.size
    if size == 0:
        return ZERO_HASH
    last = size - 1
    leaf = tip.newest_leaf
    head = _LEAF_HEAD.match(leaf) if isinstance(leaf, bytes) else None
    if leaf is None or head is None:
        raise LogDamagedError(last, size, f"entry {last}'s leaf is not an audit leaf")
    if int(head[1]) != last:
        raise LogDamagedError(
            last,
            size,
            f"the log's size is {size} by its highest index, but its newest entry names "
            f"index {int(head[1])}",
        )
    wanted: Sequence[NodeID] = [NodeID(0, last)] + ([NodeID(0, last - 1)] if last else [])
    hashes = reader.read_nodes(wanted)
    if hash_leaf(leaf) != hashes[0]:
        raise LogDamagedError(
            last, size, f"entry {last}'s leaf does not hash to its stored leaf node"
        )
    proof = inclusion_proof(reader, last, size)
    if root_from_inclusion_proof(hashes[0], last, size, proof) != rng.root():
        raise LogDamagedError(
            last, size, f"entry {last} is not in the tree its stored Merkle nodes give"
        )
    prev = hashes[1] if last else ZERO_HASH
    if bytes.fromhex(head[2].decode()) != prev:
        raise LogDamagedError(
            last - 1 if last else 0, size, f"entry {last} does not chain to entry {last - 1}"
        )
    return hashes[0]
