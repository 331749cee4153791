"""RFC 6962 (section 2.1) Merkle tree hashing: leaf and interior node hashes.

This module owns the domain-separation prefixes and nothing else; trees, proofs and
checkpoints build on these two functions.
"""

from __future__ import annotations

import hashlib

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "LEAF_PREFIX",
    "NODE_PREFIX",
    "hash_children",
    "hash_leaf",
]

LEAF_PREFIX = 0x00
"""Prefix byte of a leaf hash: MTH({d(0)}) = SHA-256(0x00 || d(0))."""

NODE_PREFIX = 0x01
"""Prefix byte of an interior node hash: SHA-256(0x01 || left || right)."""

HASH_SIZE = 32
"""Size in bytes of every hash in the tree (SHA-256)."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The root hash of the empty tree: MTH({}) = SHA-256()."""

_sha256 = hashlib.sha256
_LEAF = bytes([LEAF_PREFIX])
_NODE = bytes([NODE_PREFIX])


def hash_leaf(data: bytes) -> bytes:
    """Return the RFC 6962 hash of a leaf holding ``data``."""
    return _sha256(_LEAF + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """Return the RFC 6962 hash of an interior node with the given child hashes."""
    return _sha256(_NODE + left + right).digest()
