"""A citizen's access history: every audit entry about them, with proof that none is missing.

``AccessHistory`` holds the logic of ``ConsentService.GetAccessHistory`` (the citizen app only,
basis citizen_app, purpose PATRQT, by policy). The call is itself an audited exchange about the
citizen, and its entry is written early (``Pipeline.run_recorded``), before the answer is built:
it is then the newest entry about the citizen and its back-link starts the chain. The answer
follows the back-links from it, newest first, each entry with its leaf and an inclusion proof
against one signed checkpoint that covers the call's own entry (signed on demand when the
newest does not).

Pages: ``next_page_token`` holds the checkpoint's size and the next index to follow, with an
HMAC (a gateway key) over them and the citizen's pseudonym, so a later page continues the same
chain against the same checkpoint, and a token of one citizen is refused for another's card.
Every leaf's subject is checked against the caller's card's pseudonym before it is released:
one citizen never sees another's entries. A later page is an audited call of its own (its entry
is not in the page: the checkpoint is older).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import struct
from typing import Any

from gateway.api.onecard.v1 import common_pb2, consent_pb2
from gateway.audit.log import AuditLog, Entry, Receipt
from gateway.audit.record import leaf_link
from gateway.basis import CitizenAppClaim
from gateway.cards import ResolvedCard
from gateway.context import Call
from gateway.errors import InvalidRequest, PermissionDenied, StoreUnavailable
from gateway.pipeline import Ask, Pipeline
from gateway.services import _convert

__all__ = ["AccessHistory", "PageCursor"]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
_TOKEN_CONTEXT = b"onecard history page v1\x00"
_CURSOR = struct.Struct(">QQ")
_MAC_BYTES = 16


class PageCursor:
    """Where a later page goes on: (checkpoint size, next index), bound to one citizen."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the page token key must hold at least 16 bytes")
        self._key = key

    def seal(self, size: int, next_index: int, subject: str) -> str:
        cursor = _CURSOR.pack(size, next_index)
        return base64.urlsafe_b64encode(cursor + self._mac(cursor, subject)).decode().rstrip("=")

    def open(self, token: str, subject: str) -> tuple[int, int]:
        """The (size, next index) of a token sealed for ``subject``; refused otherwise."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            raw = b""
        if len(raw) != _CURSOR.size + _MAC_BYTES:
            raise InvalidRequest(
                "page_token is malformed: pass next_page_token of the previous page as it came",
                reason="bad_page_token",
            )
        cursor, mac = raw[: _CURSOR.size], raw[_CURSOR.size :]
        if not hmac.compare_digest(mac, self._mac(cursor, subject)):
            raise PermissionDenied(
                "page_token is not a page of this card's access history; start again without "
                "a page_token",
                reason="foreign_page_token",
            )
        size, next_index = _CURSOR.unpack(cursor)
        return size, next_index

    def _mac(self, cursor: bytes, subject: str) -> bytes:
        message = _TOKEN_CONTEXT + cursor + subject.encode("ascii")
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_BYTES]


class AccessHistory:
    """``GetAccessHistory``: the citizen's chain of entries, a page at a time, with proofs."""

    def __init__(self, pipeline: Pipeline, log: AuditLog, *, page_key: bytes) -> None:
        self._pipeline = pipeline
        self._log = log
        self._cursor = PageCursor(page_key)

    async def get(
        self, call: Call, request: consent_pb2.GetAccessHistoryRequest
    ) -> consent_pb2.GetAccessHistoryResponse:
        page_size = request.page_size or DEFAULT_PAGE_SIZE
        if page_size > MAX_PAGE_SIZE:
            raise InvalidRequest(f"page_size must be 1 to {MAX_PAGE_SIZE}")
        ask = Ask(
            action="GetAccessHistory",
            card_number=request.card.card_number,
            purpose=_convert.purpose(request.purpose),
            basis=CitizenAppClaim(),
            backend="audit_log",
        )
        token = request.page_token

        async def page(
            card: ResolvedCard, subject: str, receipt: Receipt
        ) -> consent_pb2.GetAccessHistoryResponse:
            if token:
                size, start = self._cursor.open(token, subject)
                note = await self._log.checkpoint_of(size)
                if note is None or start >= size:
                    raise InvalidRequest("page_token names no signed checkpoint of this log")
            else:  # the first page starts from this call's own entry
                size, note = await self._log.signed_checkpoint(receipt.index + 1)
                start = receipt.index
            return await self._page(subject, size, note, start, page_size)

        return await self._pipeline.run_recorded(call, ask, page)

    async def _page(
        self, subject: str, size: int, note: bytes, start: int, page_size: int
    ) -> consent_pb2.GetAccessHistoryResponse:
        entries = await self._log.follow(start, page_size)
        links = [_own(entry, subject) for entry in entries]
        proofs = await self._log.inclusion_proofs([e.index for e in entries], size)
        response = consent_pb2.GetAccessHistoryResponse(
            checkpoint=note,
            events=[_event(e, p) for e, p in zip(entries, proofs, strict=True)],
        )
        back = links[-1] if links else None
        if back is not None:
            response.next_page_token = self._cursor.seal(size, back, subject)
        return response


def _own(entry: Entry, subject: str) -> int | None:
    """The entry's back-link, once its leaf is shown to be about ``subject``."""
    try:
        index, about, back = leaf_link(entry.leaf)
    except ValueError:
        about, index, back = "", -1, None
    if about != subject or index != entry.index:
        # A log whose chain leads elsewhere is damaged: release nothing of it.
        raise StoreUnavailable(
            "the access history could not be read consistently; nothing was released",
            reason="history_unreadable",
        )
    return back


def _event(entry: Entry, proof: list[bytes]) -> consent_pb2.AccessEvent:
    record: dict[str, Any] = json.loads(entry.leaf)["r"]
    event = consent_pb2.AccessEvent(
        index=entry.index,
        leaf=entry.leaf,
        inclusion_proof=proof,
        org=record["org"],
        org_type=record["org_type"],
        rpc=record["rpc"].rpartition("/")[2],
        category=record.get("category", ""),
        purpose=_purpose(record["purpose"]),
        basis=record["basis"],
        consent_id=_consent_id(record["basis"], record["basis_ref"]),
        outcome=record["outcome"],
        reason=record["reason"],
        emergency=record["emergency"],
    )
    event.time.FromDatetime(dt.datetime.strptime(record["time"], "%Y-%m-%dT%H:%M:%S.%fZ"))
    if record.get("back") is not None:
        event.previous_index = record["back"]
    return event


def _purpose(code: str) -> str:
    name = f"PURPOSE_{code}"
    known = common_pb2.Purpose.DESCRIPTOR.values_by_name
    return name if code and name in known else "PURPOSE_UNSPECIFIED"


def _consent_id(basis: str, basis_ref: str) -> str:
    return basis_ref.partition(":")[2] or basis_ref if basis == "consent" else ""
