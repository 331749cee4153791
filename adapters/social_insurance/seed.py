"""The synthetic population of the reference social insurance back end.

This module owns the citizens the reference server knows: a deterministic population (seeded
``random.Random``, a fixed reference date, no clock) of people with valid 18-character resident
ID numbers (real district codes, birth dates 1930-2010, GB 11643 check character), synthetic
Chinese names, a social security card in one of the five card statuses, and one or more
insurance schemes. Names and numbers are synthetic: any match with a real person is chance.

Two people are fixed because the documentation uses them, both with normal cards and active
insurance: ``11010519491231002X`` (retired, employee basic medical insurance) and
``110101199003074477`` (employed, employee basic and maternity insurance).

Lookup for tests and the demo::

    population = Population.default()
    population.by_id_number("110101199003074477")          # Person | None
    population.first(card_status=CardStatus.REPORTED_LOST)   # raises LookupError if none
    population.first(card_status=CardStatus.NORMAL, insutype="310", employed=True)

``psn_type`` values are illustrative codes for employed, retired and resident members; they
are not claimed to be the national code table.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal

from gateway.cardno import check_character
from gateway.ports import CardStatus, InsuranceScheme, InsuranceStatus

DEFAULT_SIZE = 300
DEFAULT_SEED = 1101
REFERENCE_DATE = dt.date(2025, 1, 1)
FIXED_ID_NUMBERS = ("11010519491231002X", "110101199003074477")

PSN_TYPE_EMPLOYED = "1101"
PSN_TYPE_RETIRED = "1102"
PSN_TYPE_RESIDENT = "1501"

_DISTRICTS = (
    "110101", "110102", "110105", "110108",  # Beijing: Dongcheng, Xicheng, Chaoyang, Haidian
    "310101", "310104", "310115",  # Shanghai: Huangpu, Xuhui, Pudong
    "440303", "440304", "440305",  # Shenzhen: Luohu, Futian, Nanshan
    "330106", "510107",  # Hangzhou Xihu, Chengdu Wuhou
)  # fmt: skip
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹"
_GIVEN_MALE = "伟强磊军洋勇杰涛明超刚平辉鹏华飞鑫波斌宇浩凯健俊帆"
_GIVEN_FEMALE = "芳娜敏静丽艳娟霞秀英慧玲婷雪琳晶燕红梅兰萍颖倩洁"
_EMPLOYERS = (
    "星河信息技术有限公司", "东方精密机械有限公司", "长城建设工程有限公司", "明德教育咨询有限公司",
    "和顺物流有限公司", "青松食品有限公司", "远航软件有限公司", "华康医疗器械有限公司",
)  # fmt: skip
_CITY_NAMES = {"11": "北京", "31": "上海", "44": "深圳", "33": "杭州", "51": "成都"}
_NON_NORMAL_EACH = 6
_RETIREMENT_AGE = 60


@dataclass(frozen=True, slots=True)
class Person:
    """One synthetic citizen as the card issuer and the insurance platform know them."""

    id_number: str
    psn_no: str
    name: str
    gender: str  # "1" male, "2" female (from the ID number's 17th digit)
    birth_date: dt.date
    card_status: CardStatus
    card_sn: str
    issuing_district: str
    psn_type: str
    civil_servant: bool
    schemes: tuple[InsuranceScheme, ...]

    @property
    def age(self) -> int:
        """Age in whole years on the population's reference date."""
        return _age(self.birth_date)

    @property
    def employed(self) -> bool:
        return any(s.employer_name for s in self.schemes)

    def scheme(self, insutype: str) -> InsuranceScheme | None:
        return next((s for s in self.schemes if s.insutype == insutype), None)


@dataclass(frozen=True, slots=True)
class Population:
    """An immutable, indexed set of people."""

    people: tuple[Person, ...]
    _by_id_number: dict[str, Person] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id_number", {p.id_number: p for p in self.people})

    @classmethod
    def generate(cls, size: int = DEFAULT_SIZE, seed: int = DEFAULT_SEED) -> Population:
        """Build ``size`` people (the two fixed ones included) from ``seed``."""
        return cls(_Generator(seed).people(size))

    @classmethod
    def default(cls) -> Population:
        """The population the reference server serves unless told otherwise (built once)."""
        return _default_population()

    def __len__(self) -> int:
        return len(self.people)

    def __iter__(self) -> Iterator[Person]:
        return iter(self.people)

    def by_id_number(self, id_number: str) -> Person | None:
        return self._by_id_number.get(id_number.upper())

    def first(
        self,
        *,
        card_status: CardStatus | None = None,
        insutype: str | None = None,
        insurance_status: InsuranceStatus | None = None,
        employed: bool | None = None,
        where: Callable[[Person], bool] | None = None,
    ) -> Person:
        """The first person matching every given criterion; ``LookupError`` if there is none.

        ``insutype`` and ``insurance_status`` match one scheme together when both are given.
        """
        for person in self.people:
            if card_status is not None and person.card_status is not card_status:
                continue
            if not _has_scheme(person, insutype, insurance_status):
                continue
            if employed is not None and person.employed != employed:
                continue
            if where is not None and not where(person):
                continue
            return person
        raise LookupError("no person in the population matches these criteria")


@functools.cache
def _default_population() -> Population:
    return Population.generate()


def _has_scheme(person: Person, insutype: str | None, status: InsuranceStatus | None) -> bool:
    if insutype is None and status is None:
        return True
    return any(
        (insutype is None or s.insutype == insutype) and (status is None or s.status is status)
        for s in person.schemes
    )


class _Generator:
    """Deterministic generation: every draw comes from one seeded ``random.Random``."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)  # noqa: S311 (synthetic data, not secrets)
        self._taken: set[str] = set(FIXED_ID_NUMBERS)

    def people(self, size: int) -> tuple[Person, ...]:
        if size < len(FIXED_ID_NUMBERS) + 4 * _NON_NORMAL_EACH:
            raise ValueError("population too small to hold every card status")
        fixed = (self._fixed_retiree(), self._fixed_employee())
        statuses = self._card_statuses(size - len(fixed))
        drawn = [self._person(index, status) for index, status in enumerate(statuses, 3)]
        return (*fixed, *drawn)

    def _card_statuses(self, count: int) -> list[CardStatus]:
        others = [s for s in CardStatus if s is not CardStatus.NORMAL]
        statuses: list[CardStatus] = [s for s in others for _ in range(_NON_NORMAL_EACH)]
        statuses += [CardStatus.NORMAL] * (count - len(statuses))
        self._rng.shuffle(statuses)
        return statuses

    # -- the two documented people -------------------------------------------------------------

    def _fixed_retiree(self) -> Person:
        district, birth = "110105", dt.date(1949, 12, 31)
        scheme = _scheme("310", InsuranceStatus.ACTIVE, dt.date(1993, 1, 1), district)
        scheme = replace(scheme, balance=Decimal("12840.36"))
        return self._assemble(
            index=1,
            id_number=FIXED_ID_NUMBERS[0],
            name="张秀英",
            birth=birth,
            district=district,
            card_status=CardStatus.NORMAL,
            psn_type=PSN_TYPE_RETIRED,
            civil_servant=False,
            schemes=(scheme,),
        )

    def _fixed_employee(self) -> Person:
        district, birth = "110101", dt.date(1990, 3, 7)
        start = dt.date(2012, 7, 1)
        employer = "北京" + _EMPLOYERS[0]
        basic = replace(
            _scheme("310", InsuranceStatus.ACTIVE, start, district),
            employer_name=employer,
            balance=Decimal("3256.80"),
        )
        maternity = replace(
            _scheme("510", InsuranceStatus.ACTIVE, start, district), employer_name=employer
        )
        return self._assemble(
            index=2,
            id_number=FIXED_ID_NUMBERS[1],
            name="李明",
            birth=birth,
            district=district,
            card_status=CardStatus.NORMAL,
            psn_type=PSN_TYPE_EMPLOYED,
            civil_servant=False,
            schemes=(basic, maternity),
        )

    # -- drawn people --------------------------------------------------------------------------

    def _person(self, index: int, card_status: CardStatus) -> Person:
        rng = self._rng
        district = rng.choice(_DISTRICTS)
        birth = dt.date(1930, 1, 1) + dt.timedelta(days=rng.randrange(29_585))  # to 2010-12-31
        id_number = self._id_number(district, birth)
        male = int(id_number[16]) % 2 == 1
        name = rng.choice(_SURNAMES) + "".join(
            rng.choice(_GIVEN_MALE if male else _GIVEN_FEMALE) for _ in range(rng.choice((1, 2)))
        )
        age = _age(birth)
        if age >= 18 and rng.random() < 0.6:
            psn_type = PSN_TYPE_RETIRED if age >= _RETIREMENT_AGE else PSN_TYPE_EMPLOYED
            civil_servant = psn_type == PSN_TYPE_EMPLOYED and rng.random() < 0.12
            schemes = self._employee_schemes(district, birth, psn_type, civil_servant)
        else:
            psn_type, civil_servant = PSN_TYPE_RESIDENT, False
            schemes = self._resident_schemes(district, birth)
        return self._assemble(
            index=index,
            id_number=id_number,
            name=name,
            birth=birth,
            district=district,
            card_status=card_status,
            psn_type=psn_type,
            civil_servant=civil_servant,
            schemes=schemes,
        )

    def _id_number(self, district: str, birth: dt.date) -> str:
        while True:
            first17 = f"{district}{birth:%Y%m%d}{self._rng.randrange(1000):03d}"
            candidate = first17 + check_character(first17)
            if candidate not in self._taken:
                self._taken.add(candidate)
                return candidate

    def _employee_schemes(
        self, district: str, birth: dt.date, psn_type: str, civil_servant: bool
    ) -> tuple[InsuranceScheme, ...]:
        rng = self._rng
        start = _first_day(max(birth.year + 22, 1993) + rng.randrange(6))
        start = min(start, dt.date(2024, 1, 1))
        status = _draw_status(rng)
        retired = psn_type == PSN_TYPE_RETIRED
        employer = None if retired else _CITY_NAMES[district[:2]] + rng.choice(_EMPLOYERS)
        balance = Decimal(rng.randrange(0, 3_000_000)) / 100
        basic = replace(
            _scheme("310", status, start, district), employer_name=employer, balance=balance
        )
        schemes = [basic]
        if not retired:
            schemes.append(replace(_scheme("510", status, start, district), employer_name=employer))
        if civil_servant:
            schemes.append(replace(_scheme("320", status, start, district), employer_name=employer))
        if rng.random() < 0.3:
            schemes.append(replace(_scheme("330", status, start, district), employer_name=employer))
        if start.year > 2009 and rng.random() < 0.3:  # a resident member before the first job
            earlier = _scheme("390", InsuranceStatus.TERMINATED, _first_day(2008), district)
            schemes.append(replace(earlier, pause_date=start - dt.timedelta(days=1)))
        return tuple(schemes)

    def _resident_schemes(self, district: str, birth: dt.date) -> tuple[InsuranceScheme, ...]:
        start = max(_first_day(birth.year + 1), _first_day(2008))
        return (_scheme("390", _draw_status(self._rng), start, district),)

    def _assemble(
        self,
        *,
        index: int,
        id_number: str,
        name: str,
        birth: dt.date,
        district: str,
        card_status: CardStatus,
        psn_type: str,
        civil_servant: bool,
        schemes: tuple[InsuranceScheme, ...],
    ) -> Person:
        return Person(
            id_number=id_number,
            psn_no=f"{_city(district)}{index:014d}",
            name=name,
            gender="1" if int(id_number[16]) % 2 == 1 else "2",
            birth_date=birth,
            card_status=card_status,
            card_sn=f"{_city(district)}D156000005{self._rng.getrandbits(64):016X}",
            issuing_district=_city(district),
            psn_type=psn_type,
            civil_servant=civil_servant,
            schemes=schemes,
        )


def _draw_status(rng: random.Random) -> InsuranceStatus:
    roll = rng.random()
    if roll < 0.85:
        return InsuranceStatus.ACTIVE
    return InsuranceStatus.SUSPENDED if roll < 0.95 else InsuranceStatus.TERMINATED


def _scheme(
    insutype: str, status: InsuranceStatus, start: dt.date, district: str
) -> InsuranceScheme:
    pause = None if status is InsuranceStatus.ACTIVE else dt.date(2024, 7, 1)
    return InsuranceScheme(
        insutype=insutype,
        status=status,
        start_date=start,
        pause_date=pause,
        insured_district=_city(district),
        employer_name=None,
        balance=None,
    )


def _city(district: str) -> str:
    """The city-level administrative division (insurance and card issuing district)."""
    return district[:4] + "00"


def _first_day(year: int) -> dt.date:
    return dt.date(year, 1, 1)


def _age(birth: dt.date) -> int:
    before = (REFERENCE_DATE.month, REFERENCE_DATE.day) < (birth.month, birth.day)
    return REFERENCE_DATE.year - birth.year - int(before)
