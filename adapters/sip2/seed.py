"""The reference library network: three libraries and their patrons, from the synthetic citizens.

Patrons are the citizens of ``adapters.social_insurance.seed.Population`` (the same card
numbers), drawn deterministically (seeded ``random.Random``, no clock). Three readers are fixed
because tests and the demo use them:

- ``110101199003074477`` (李明): in good standing at ``bj-dongcheng``; at ``bj-xicheng``, two
  fine items, 12.50 CNY outstanding and renewals blocked;
- ``11010519491231002X`` (张秀英): blocked at ``bj-dongcheng`` (charge and renewal privileges
  denied, too many items overdue: 4 overdue; three fine items, 36.80 CNY);
- a citizen with a normal card registered at no library (``unregistered``).

``bj-xicheng`` knows readers by a library barcode (``XC`` and eight digits), not the card number,
and says so through its mapping (``Network.barcodes``). ``bj-haidian-uni`` speaks cp850, the
traditional SIP2 encoding: its system holds no Chinese names, so its answers carry none.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from adapters.social_insurance.seed import Population
from gateway.ports import CardStatus, PatronBlock

EMPLOYEE, RETIREE = "110101199003074477", "11010519491231002X"
_DRAW_SHARE = 0.4


@dataclass(frozen=True, slots=True)
class ReferenceLibrary:
    """One library of the reference network and how its system is reached."""

    network_id: str
    name: str
    org_id: str
    institution_id: str
    encoding: str
    login_user: str
    password: str = field(repr=False)
    location: str
    uses_barcodes: bool = False


@dataclass(frozen=True, slots=True)
class PatronRecord:
    """A reader as one library's system keeps them."""

    card_number: str
    patron_id: str  # what the library calls them: the card number or its barcode
    name: str
    blocks: frozenset[PatronBlock] = frozenset()
    holds: int = 0
    overdue: int = 0
    charged: int = 0
    fine_items: int = 0
    fee_amount: Decimal = Decimal("0.00")


LIBRARIES: tuple[ReferenceLibrary, ...] = (
    ReferenceLibrary(
        "bj-dongcheng", "东城区第一图书馆", "lib-bj-001", "DCLIB", "utf-8",
        "onecard", "dc-sip-secret", "ONECARD",
    ),
    ReferenceLibrary(
        "bj-xicheng", "西城区图书馆", "lib-bj-002", "XCLIB", "utf-8",
        "onecard", "xc-sip-secret", "ONECARD", uses_barcodes=True,
    ),
    ReferenceLibrary(
        "bj-haidian-uni", "Haidian University Library", "lib-bj-003", "HDUNI", "cp850",
        "onecard", "hd-sip-secret", "ONECARD",
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Network:
    """Each library's patrons by the identifier it knows them by."""

    libraries: tuple[ReferenceLibrary, ...]
    patrons: Mapping[str, Mapping[str, PatronRecord]]  # network id -> patron id -> record
    unregistered: str  # a card number with a normal card, a patron nowhere

    @classmethod
    def default(cls) -> Network:
        return _default_network()

    def library(self, network_id: str) -> ReferenceLibrary:
        return next(lib for lib in self.libraries if lib.network_id == network_id)

    def barcodes(self, network_id: str) -> dict[str, str]:
        """The card number -> barcode mapping a barcode library hands the gateway."""
        return {r.card_number: r.patron_id for r in self.patrons[network_id].values()}

    def record(self, network_id: str, card_number: str) -> PatronRecord | None:
        return next(
            (r for r in self.patrons[network_id].values() if r.card_number == card_number), None
        )


@functools.cache
def _default_network() -> Network:
    return generate(Population.default())


def generate(population: Population, seed: int = 2300) -> Network:
    """The network's patrons drawn from ``population`` (deterministic for a seed)."""
    rng = random.Random(seed)  # noqa: S311 (synthetic data, not secrets)
    normal = [p for p in population if p.card_status is CardStatus.NORMAL]
    fixed = {EMPLOYEE, RETIREE}
    unregistered = next(p.id_number for p in normal if p.id_number not in fixed)
    patrons: dict[str, dict[str, PatronRecord]] = {}
    for number, library in enumerate(LIBRARIES):
        records: list[PatronRecord] = []
        for person in normal:
            if person.id_number in fixed | {unregistered} or rng.random() > _DRAW_SHARE:
                continue
            records.append(_drawn(rng, person.id_number, person.name, library))
        records += _fixed(library, population)
        barcodes = iter(range(10_000_000 + number, 99_999_999, 7919))
        if library.uses_barcodes:
            records = [_with_barcode(r, f"XC{next(barcodes):08d}") for r in records]
        patrons[library.network_id] = {r.patron_id: r for r in records}
    return Network(LIBRARIES, patrons, unregistered)


def _fixed(library: ReferenceLibrary, population: Population) -> list[PatronRecord]:
    employee, retiree = population.by_id_number(EMPLOYEE), population.by_id_number(RETIREE)
    if employee is None or retiree is None:
        return []
    if library.network_id == "bj-dongcheng":
        blocked = frozenset(
            {
                PatronBlock.CHARGE_PRIVILEGES_DENIED,
                PatronBlock.RENEWAL_PRIVILEGES_DENIED,
                PatronBlock.TOO_MANY_ITEMS_OVERDUE,
            }
        )
        return [
            PatronRecord(EMPLOYEE, EMPLOYEE, employee.name, holds=1, charged=2),
            PatronRecord(
                RETIREE,
                RETIREE,
                retiree.name,
                blocked,
                overdue=4,
                charged=6,
                fine_items=3,
                fee_amount=Decimal("36.80"),
            ),
        ]
    if library.network_id == "bj-xicheng":
        fined = PatronRecord(
            EMPLOYEE,
            EMPLOYEE,
            employee.name,
            frozenset({PatronBlock.RENEWAL_PRIVILEGES_DENIED}),
            charged=1,
            fine_items=2,
            fee_amount=Decimal("12.50"),
        )
        return [fined]
    return []


def _drawn(rng: random.Random, card: str, name: str, library: ReferenceLibrary) -> PatronRecord:
    overdue = rng.choice((0, 0, 0, 0, 1, 2, 5))
    fine_items = rng.choice((0, 0, 0, 1, 3))
    fee = Decimal(rng.randrange(50, 8000)) / 100 if fine_items else Decimal("0.00")
    blocks = set()
    if overdue >= 5:
        blocks |= {PatronBlock.TOO_MANY_ITEMS_OVERDUE, PatronBlock.CHARGE_PRIVILEGES_DENIED}
    if fee > 50:
        blocks |= {PatronBlock.EXCESSIVE_OUTSTANDING_FINES}
    if rng.random() < 0.03:
        blocks |= {PatronBlock.CARD_REPORTED_LOST}
    return PatronRecord(
        card_number=card,
        patron_id=card,
        name=name if library.encoding == "utf-8" else "",
        blocks=frozenset(blocks),
        holds=rng.choice((0, 0, 1, 2)),
        overdue=overdue,
        charged=overdue + rng.choice((0, 1, 2, 4)),
        fine_items=fine_items,
        fee_amount=fee,
    )


def _with_barcode(record: PatronRecord, barcode: str) -> PatronRecord:
    return dataclasses.replace(record, patron_id=barcode)
