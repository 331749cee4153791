"""The compact range: emitted nodes, roots, and restarts from the stored right border."""

from __future__ import annotations

import pytest

from gateway.audit.compact import CompactRange, NodeID, border_ids, range_nodes
from gateway.audit.proof import root_of
from gateway.audit.rfc6962 import EMPTY_ROOT, hash_children, hash_leaf
from tests.audit.vectors import LEAVES, ROOTS

LEAF_HASHES = [hash_leaf(i.to_bytes(4, "big")) for i in range(70)]


def test_empty_range_has_the_empty_root() -> None:
    rng = CompactRange()
    assert rng.size == 0
    assert rng.root() == EMPTY_ROOT
    assert rng.border() == []


def test_roots_match_golden_vectors() -> None:
    rng = CompactRange()
    for n, leaf in enumerate(LEAVES, 1):
        rng.append(hash_leaf(leaf))
        assert rng.size == n
        assert rng.root() == ROOTS[n]


def test_append_reports_the_leaf_then_the_subtrees_it_completes() -> None:
    rng = CompactRange()
    h = LEAF_HASHES
    assert rng.append(h[0]) == [(NodeID(0, 0), h[0])]
    n01 = hash_children(h[0], h[1])
    assert rng.append(h[1]) == [(NodeID(0, 1), h[1]), (NodeID(1, 0), n01)]
    assert rng.append(h[2]) == [(NodeID(0, 2), h[2])]
    n23 = hash_children(h[2], h[3])
    assert rng.append(h[3]) == [
        (NodeID(0, 3), h[3]),
        (NodeID(1, 1), n23),
        (NodeID(2, 0), hash_children(n01, n23)),
    ]


def complete_nodes(size: int) -> set[NodeID]:
    return {
        NodeID(level, index) for level in range(size.bit_length()) for index in range(size >> level)
    }


@pytest.mark.parametrize("size", range(71))
def test_every_complete_node_is_emitted_once_with_its_hash(size: int) -> None:
    emitted = CompactRange().extend(LEAF_HASHES[:size])
    ids = [node for node, _ in emitted]
    assert len(ids) == len(set(ids))
    assert set(ids) == complete_nodes(size)
    for node, h in emitted:
        begin, end = node.coverage()
        assert h == root_of(LEAF_HASHES[begin:end]), node


@pytest.mark.parametrize("size", range(71))
def test_restart_from_stored_border_continues_identically(size: int) -> None:
    whole = CompactRange()
    stored = dict(whole.extend(LEAF_HASHES[:size]))
    assert [node for node, _ in whole.border()] == border_ids(size)

    restarted = CompactRange.from_border(size, [stored[node] for node in border_ids(size)])
    assert restarted.size == size
    assert restarted.root() == whole.root() == root_of(LEAF_HASHES[:size])
    rest = LEAF_HASHES[size:]
    assert restarted.extend(rest) == whole.extend(rest)
    assert restarted.root() == whole.root() == root_of(LEAF_HASHES)


def test_border_of_a_known_size() -> None:
    # 13 = 8 + 4 + 1: leaves [0, 8), [8, 12), [12, 13).
    assert border_ids(13) == [NodeID(3, 0), NodeID(2, 2), NodeID(0, 12)]
    assert border_ids(0) == []


def test_range_nodes_decomposition() -> None:
    # transparency-dev/merkle compact.Decompose doc: (0b110, 0b11101) is 2, 8; 8, 4, 1.
    assert range_nodes(0b110, 0b11101) == [
        NodeID(1, 3),
        NodeID(3, 1),
        NodeID(3, 2),
        NodeID(2, 6),
        NodeID(0, 28),
    ]
    assert range_nodes(5, 5) == []
    with pytest.raises(ValueError, match="invalid range"):
        range_nodes(6, 5)


def test_node_id_navigation() -> None:
    node = NodeID(2, 5)
    assert node.coverage() == (20, 24)
    assert node.parent() == NodeID(3, 2)
    assert node.sibling() == NodeID(2, 4)
    level, index = node
    assert (level, index) == (2, 5)


def test_from_border_rejects_bad_input() -> None:
    h = LEAF_HASHES[0]
    with pytest.raises(ValueError, match="has 2 border nodes, got 1"):
        CompactRange.from_border(3, [h])
    with pytest.raises(ValueError, match="has 0 border nodes, got 1"):
        CompactRange.from_border(0, [h])
    with pytest.raises(ValueError, match="31 bytes"):
        CompactRange.from_border(1, [h[:31]])
    with pytest.raises(ValueError, match="invalid tree size"):
        CompactRange.from_border(-1, [])


def test_append_rejects_a_hash_of_the_wrong_size() -> None:
    rng = CompactRange()
    with pytest.raises(ValueError, match="33 bytes"):
        rng.append(LEAF_HASHES[0] + b"\x00")
    assert rng.size == 0
