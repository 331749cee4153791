"""RFC 6962 hashing against the golden vectors of transparency-dev/merkle."""

from __future__ import annotations

import hashlib

from gateway.audit.rfc6962 import (
    EMPTY_ROOT,
    LEAF_PREFIX,
    NODE_PREFIX,
    hash_children,
    hash_leaf,
)

# Source: transparency-dev/merkle rfc6962/rfc6962_test.go, TestRFC6962Hasher.
EMPTY_TREE = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
EMPTY_LEAF = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
LEAF_L123456 = "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
NODE_N123_N456 = "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"


def test_prefixes_are_the_rfc_ones() -> None:
    assert (LEAF_PREFIX, NODE_PREFIX) == (0x00, 0x01)


def test_empty_root() -> None:
    assert EMPTY_ROOT.hex() == EMPTY_TREE


def test_empty_leaf_differs_from_empty_root() -> None:
    assert hash_leaf(b"").hex() == EMPTY_LEAF
    assert hash_leaf(b"") != EMPTY_ROOT


def test_leaf() -> None:
    assert hash_leaf(b"L123456").hex() == LEAF_L123456


def test_node() -> None:
    assert hash_children(b"N123", b"N456").hex() == NODE_N123_N456


def test_node_is_not_a_leaf_of_the_concatenation() -> None:
    # transparency-dev/merkle TestRFC6962HasherCollisions: second-preimage resistance.
    h1, h2 = hash_leaf(b"Hello"), hash_leaf(b"World")
    assert h1 != h2
    assert hash_children(h1, h2) != hash_leaf(h1 + h2)
    assert hash_children(h1, h2) != hash_children(h2, h1)
    assert hash_children(h1, h2) == hashlib.sha256(b"\x01" + h1 + h2).digest()
