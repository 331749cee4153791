"""What the gateway needs from a store, whatever the database: the ports a store implements.

A ``Store`` holds the gateway's durable state: the audit log (``StoredLog``: the ``AuditLog``
port plus what only its owner calls) and the token ledger (``token_redeemed``; tokens are
redeemed by the log, in the transaction of the entry that uses them up) and the consents
(``consents``; a consent's uses are likewise taken by the log, with the entry).
``LogSnapshot`` is the
read-only view ``onecard audit export`` and the demo read a log through, without a running
gateway. ``gateway.store.open_store`` picks the implementation by ``Settings.store``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from gateway.audit.log import AuditLog
from gateway.audit.signer import Signer
from gateway.consents import ConsentStore

__all__ = ["REDEEMED_KEPT_S", "LogSnapshot", "SignerFor", "Store", "StoredLog"]

REDEEMED_KEPT_S = 600
"""How long a redeemed token's row outlives the token's expiry before it is pruned: longer than
an exchange that verified the token before its expiry can take to redeem it (``request_budget_s``,
at most 120 s) plus the clock skew between hosts, so a copy of the token is always refused."""

SignerFor = Callable[[list[tuple[str, str]]], Signer]
"""Given the log's recorded (origin, verifier key)s, oldest first, the signer to open it with."""


class StoredLog(AuditLog, Protocol):
    """The audit log as its owner (bootstrap) sees it."""

    verifier_keys: list[str]
    """Every key that has signed the log's checkpoints, oldest first (the published set)."""

    async def checkpoint_now(self) -> None:
        """Sign a checkpoint of the current size now (on shutdown)."""
        ...


class Store(Protocol):
    """The gateway's durable state, opened (identity bound, log self-checked)."""

    @property
    def audit_log(self) -> StoredLog:
        """The signed audit log."""
        ...

    @property
    def consents(self) -> ConsentStore:
        """The citizens' standing consents (uses are taken by the log, with the entry)."""
        ...

    async def token_redeemed(self, token_id: bytes) -> bool:
        """Whether an exchange has already redeemed this token (the ``TokenLedger`` port)."""
        ...

    async def close(self) -> None:
        """Finish queued writes and close (the log's final checkpoint is the caller's)."""
        ...


class LogSnapshot(Protocol):
    """One consistent, read-only view of a stored log."""

    def checkpoints(self) -> list[tuple[int, bytes]]:
        """Every signed checkpoint as (size, note), oldest first."""
        ...

    def size(self) -> int:
        """How many entries are stored."""
        ...

    def leaves(self, start: int, end: int) -> list[bytes]:
        """The leaves of entries start <= index < end, in order."""
        ...
