"""Durable stores. One interface, implementations per database (SQLite here; PostgreSQL later).

Every write that a response depends on (a redeemed token, an audit entry) is durable before the
response is released; writes from concurrent requests are group-committed (one transaction and
one fsync for many records).
"""

from gateway.store.sqlite import SqliteStore

__all__ = ["SqliteStore"]
