"""Fakes of the request path's ports, for unit tests of one stage at a time."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

from gateway.audit.log import Entry, Receipt, Redemption, SearchQuery, TokenSpend
from gateway.audit.record import AuditRecord
from gateway.consents import Consent, Justification
from gateway.errors import CardNotFound, StoreUnavailable
from gateway.ports import CardHolder, CardStatus


class FakeRegistry:
    """A card registry holding ``holders`` by card number; counts the lookups."""

    def __init__(self, holders: dict[str, CardHolder] | None = None) -> None:
        self.holders = holders or {}
        self.lookups = 0

    async def resolve(self, id_number: str, *, timeout: float) -> CardHolder:
        self.lookups += 1
        holder = self.holders.get(id_number)
        if holder is None:
            raise CardNotFound("the card registry does not know this card")
        return holder


def holder(n: int, status: CardStatus = CardStatus.NORMAL) -> CardHolder:
    return CardHolder(f"psn-{n:04d}", status, "张三", "110105")


class FakeLedger:
    """Redeemed token ids in memory."""

    def __init__(self) -> None:
        self.redeemed: set[bytes] = set()

    async def token_redeemed(self, token_id: bytes) -> bool:
        return token_id in self.redeemed


class FakeAuditLog:
    """An ``AuditLog`` in memory: keeps records, redeems tokens, can be made to fail."""

    origin = "test.local/log"

    def __init__(self, ledger: FakeLedger | None = None) -> None:
        self.records: list[AuditRecord] = []
        self.ledger = ledger or FakeLedger()
        self.failing = False

    async def append(self, record: AuditRecord, redemption: Redemption | None = None) -> Receipt:
        if self.failing:
            raise StoreUnavailable("the gateway could not record this request durably; retry")
        refusal = ""
        if redemption is not None and isinstance(redemption.spend, TokenSpend):
            if redemption.spend.token_id in self.ledger.redeemed:
                refusal = "token_replayed"
            self.ledger.redeemed.add(redemption.spend.token_id)
        if refusal and redemption is not None:
            record = dataclasses.replace(redemption.instead, reason=refusal)
        self.records.append(record)
        index = len(self.records) - 1
        now = dt.datetime.now(dt.UTC)
        return Receipt(index, bytes(32), self.origin, now, bool(refusal), refusal)

    async def latest_checkpoint(self) -> bytes | None:
        return None

    async def checkpoints(self) -> Sequence[tuple[int, bytes]]:
        return []

    async def inclusion_proof(self, index: int, size: int) -> tuple[bytes, list[bytes]]:
        raise NotImplementedError

    async def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        raise NotImplementedError

    async def entries(self, start: int, end: int) -> list[Entry]:
        return []

    async def search(self, query: SearchQuery) -> list[Entry]:
        return []

    async def size(self) -> int:
        return len(self.records)

    async def follow(self, index: int, limit: int) -> list[Entry]:
        raise NotImplementedError

    async def inclusion_proofs(self, indexes: Sequence[int], size: int) -> list[list[bytes]]:
        raise NotImplementedError

    async def checkpoint_of(self, size: int) -> bytes | None:
        return None

    async def signed_checkpoint(self, covering: int) -> tuple[int, bytes]:
        raise NotImplementedError


class FakeConsents:
    """An in-memory ``ConsentStore``; uses are taken by ``take``, as the log's batch would."""

    def __init__(self) -> None:
        self.consents: dict[str, Consent] = {}
        self.kept: dict[tuple[str, str], tuple[Justification, str]] = {}

    async def add(self, consent: Consent) -> None:
        self.consents[consent.consent_id] = consent

    async def get(self, consent_id: str) -> Consent | None:
        return self.consents.get(consent_id)

    async def of_subject(self, subject: str) -> list[Consent]:
        mine = [c for c in self.consents.values() if c.subject == subject]
        return sorted(mine, key=lambda c: c.granted_at, reverse=True)

    async def revoke(self, consent_id: str, subject: str, at: dt.datetime) -> Consent | None:
        consent = self.consents.get(consent_id)
        if consent is None or consent.subject != subject:
            return None
        if consent.revoked_at is None:
            consent = dataclasses.replace(consent, revoked_at=at)
            self.consents[consent_id] = consent
        return consent

    async def keep_justification(self, about: Justification, text: str) -> None:
        self.kept.setdefault((about.request_id, about.digest), (about, text))

    async def justifications(
        self, since: dt.datetime, until: dt.datetime
    ) -> dict[tuple[str, str], str]:
        return {key: text for key, (about, text) in self.kept.items() if since <= about.at < until}
