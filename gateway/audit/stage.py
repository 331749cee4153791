"""The audit stage: every exchange, allowed or refused, becomes one durable log entry.

The interceptor calls ``record`` once per onecard RPC, after the service answered or refused and
before anything is released. If the entry cannot be made durable, the caller gets UNAVAILABLE and
no data (fail closed). An exchange that releases data uses up what it spends (a card-present
token, or one use of a consent) in the same transaction as its entry; if that fails there (the
token redeemed first by another exchange, the consent revoked or out of uses meanwhile), the
entry records this one as refused, with that reason, and nothing is released.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Sequence

import structlog
from google.protobuf.message import Message

from gateway.audit.log import AuditLog, Receipt, Redemption
from gateway.audit.record import AuditRecord, rfc3339
from gateway.errors import StoreUnavailable
from gateway.findings import Findings

_log = structlog.get_logger(__name__)
# The findings that are record fields, by name: a new field found by the pipeline goes into
# ``Findings`` and ``AuditRecord`` alike, and needs no line here.
_RECORDED = tuple(
    f.name for f in dataclasses.fields(Findings) if f.name in AuditRecord.__dataclass_fields__
)


class AuditStage:
    """Turns finished calls into audit records and appends them."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log

    async def record(
        self,
        *,
        received_at: dt.datetime,
        request_id: str,
        rpc: str,
        org: str,
        org_type: str,
        cert_sha256: str,
        findings: Findings,
        outcome: str,
        reason: str,
        released: Message | Sequence[Message] | None,
        latency_us: int,
    ) -> Receipt:
        entry = AuditRecord(
            time=rfc3339(received_at),
            request_id=request_id,
            org=org,
            org_type=org_type,
            cert_sha256=cert_sha256,
            rpc=rpc,
            outcome=outcome,
            reason=reason,
            released_sha256=released_digest(released),
            latency_us=latency_us,
            **{name: getattr(findings, name) for name in _RECORDED},
        )
        redemption = None
        if findings.spend is not None and outcome == "OK":
            instead = dataclasses.replace(
                entry, outcome="PERMISSION_DENIED", reason="spend_refused", released_sha256=""
            )
            redemption = Redemption(findings.spend, instead)
        try:
            return await self.log.append(entry, redemption)
        except StoreUnavailable:
            raise
        except Exception as exc:
            _log.error("audit_append_failed", error_type=type(exc).__name__)
            raise StoreUnavailable(
                "the exchange could not be written to the audit log; nothing was released"
            ) from None


def released_digest(released: Message | Sequence[Message] | None) -> str:
    """Hex SHA-256 of what the call released, before its receipt was attached ("" if nothing).

    A unary response is hashed as its deterministic serialisation; a stream as the sequence of
    its messages framed the way gRPC frames them (0x00, 4-byte big-endian length, bytes).
    """
    if released is None:
        return ""
    if isinstance(released, Message):
        return hashlib.sha256(released.SerializeToString(deterministic=True)).hexdigest()
    digest = hashlib.sha256()
    for message in released:
        data = message.SerializeToString(deterministic=True)
        digest.update(b"\x00" + len(data).to_bytes(4, "big") + data)
    return digest.hexdigest()


def attach_receipt(response: Message, receipt: Receipt) -> None:
    """Fill the response's ``receipt`` field, if it has one."""
    if "receipt" not in response.DESCRIPTOR.fields_by_name:
        return
    field = response.receipt  # type: ignore[attr-defined]
    field.leaf_index = receipt.index
    field.leaf_hash = receipt.leaf_hash
    field.log_origin = receipt.origin
    field.appended_at.FromDatetime(receipt.appended_at)
