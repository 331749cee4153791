"""The card stage: resolve the holder of a validated card number and check the card's status.

Validation (format, check character: ``gateway.cardno``) happens before any back end is asked.
A card whose status is not normal is refused with FAILED_PRECONDITION naming the status, never
with data.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import CardNotUsable
from gateway.ports import CardHolder, CardRegistry, CardStatus

_STATUS_WORDS = {
    CardStatus.TEMPORARILY_REPORTED_LOST: "temporarily reported lost",
    CardStatus.REPORTED_LOST: "reported lost",
    CardStatus.LOCKED: "locked",
    CardStatus.CANCELLED: "cancelled",
}


@dataclass(frozen=True, slots=True)
class ResolvedCard:
    """A validated card number and its holder, whose card is in normal status."""

    card_number: str
    holder: CardHolder


class CardStage:
    """Validates and resolves cards through the card registry."""

    def __init__(self, registry: CardRegistry, *, timeout: float) -> None:
        self._registry = registry
        self._timeout = timeout

    async def holder(self, card_number: str) -> CardHolder:
        """The card's holder, whatever the card's status (a regulator's search by citizen)."""
        return await self._registry.resolve(card_number, timeout=self._timeout)

    async def resolve(self, card_number: str) -> ResolvedCard:
        """Resolve a normalized card number; raise CardNotFound, CardNotUsable (or back-end errors).

        Call it only once the caller has shown a basis for this card: the answer reveals
        whether the card exists and its status.
        """
        return usable(card_number, await self.holder(card_number))


def usable(card_number: str, holder: CardHolder) -> ResolvedCard:
    """The card of ``holder`` if it is in normal status; else ``CardNotUsable`` naming it.

    Apart from ``CardStage.resolve`` so that the pipeline can name the holder in the audit entry
    of a refusal for the card's status (an attempt on their lost card is in their history).
    """
    if holder.card_status is not CardStatus.NORMAL:
        words = _STATUS_WORDS[holder.card_status]
        raise CardNotUsable(
            f"card is {words}; the citizen should contact the card issuer",
            reason=f"card_{holder.card_status.value}",
        )
    return ResolvedCard(card_number, holder)


def mask_name(name: str) -> str:
    """Keep the first character (the family name, usually) and mask the rest: 张三 -> 张*."""
    if not name:
        return ""
    return name[0] + "*" * max(len(name) - 1, 1)
