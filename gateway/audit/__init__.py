"""The audit log's primitives: RFC 6962 hashing, compact ranges, Merkle proofs, signed notes
and checkpoints.

Everything here is pure (bytes in, bytes out) except ``signer``, the only module that touches
private key material. Storage and gRPC live elsewhere.
"""
