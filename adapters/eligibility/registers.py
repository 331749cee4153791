"""The reference eligibility server's registers, drawn from the synthetic population.

Three questions, three sources, all about the same people (``seed.Population``: same ID
numbers, same names):

- ``senior``: the birth date in the population; 60 or older on the day asked (the age of the
  elderly in the Law on the Protection of the Rights and Interests of the Elderly).
- ``disabled``: a synthetic disability register: about one person in fifteen, with a 20-digit
  certificate number, a category and a grade, the details a transit operator must never see.
- ``student``: a synthetic student register: most people aged 6 to 24, with a school and the
  dates their registration is valid from and until; about one registration in five has expired.

Registers are deterministic for a seed and a day (``today``): the validity dates are drawn
relative to it, so the data stays meaningful whenever it is built. A person matches only with
the name the population holds (the Cal-ITP server matches ``sub`` and ``name`` together). The
two documented people (``seed.FIXED_ID_NUMBERS``) are in neither register: the retiree is a
senior, the employee qualifies for nothing.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from adapters.social_insurance.seed import FIXED_ID_NUMBERS, Person, Population
from gateway.ports import Concession

SENIOR_AGE = 60
STUDENT_AGES = range(6, 25)
DEFAULT_SEED = 15

_CATEGORIES = ("visual", "hearing", "speech", "physical", "intellectual", "mental")
_SCHOOLS = (
    "第一实验小学", "育才中学", "第二中学", "城市职业技术学院", "理工大学", "师范大学",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class DisabilityRecord:
    """One entry of the disability register (the 残疾人证)."""

    id_number: str
    certificate_no: str
    category: str
    grade: int  # 1 (most severe) to 4


@dataclass(frozen=True, slots=True)
class StudentRecord:
    """One entry of the student register, valid from ``valid_from`` to ``valid_until``."""

    id_number: str
    school: str
    valid_from: dt.date
    valid_until: dt.date

    def valid_on(self, day: dt.date) -> bool:
        return self.valid_from <= day <= self.valid_until


@dataclass(frozen=True, slots=True)
class Registers:
    """The population and the two registers the reference server decides from."""

    population: Population
    disabled: Mapping[str, DisabilityRecord]
    students: Mapping[str, StudentRecord]

    @classmethod
    def build(cls, population: Population, today: dt.date, seed: int = DEFAULT_SEED) -> Registers:
        rng = random.Random(seed)  # noqa: S311 (synthetic data, not secrets)
        disabled: dict[str, DisabilityRecord] = {}
        students: dict[str, StudentRecord] = {}
        for person in population:
            if rng.random() < 1 / 15 and person.id_number not in FIXED_ID_NUMBERS:
                disabled[person.id_number] = _disability(rng, person)
            if age_on(person.birth_date, today) in STUDENT_AGES and rng.random() < 0.7:
                students[person.id_number] = _student(rng, person, today)
        return cls(population, disabled, students)

    def qualifies(
        self, id_number: str, name: str, types: Iterable[str], today: dt.date
    ) -> list[str]:
        """The asked ``types`` the person qualifies for today ([] for an unknown person)."""
        person = self.population.by_id_number(id_number)
        if person is None or person.name != name:
            return []
        return [t for t in dict.fromkeys(types) if self._qualifies(person, t, today)]

    def _qualifies(self, person: Person, kind: str, today: dt.date) -> bool:
        if kind == Concession.SENIOR.value:
            return age_on(person.birth_date, today) >= SENIOR_AGE
        if kind == Concession.DISABLED.value:
            return person.id_number in self.disabled
        if kind == Concession.STUDENT.value:
            record = self.students.get(person.id_number)
            return record is not None and record.valid_on(today)
        return False


def age_on(birth: dt.date, day: dt.date) -> int:
    """Age in whole years on ``day``."""
    return day.year - birth.year - int((day.month, day.day) < (birth.month, birth.day))


def _disability(rng: random.Random, person: Person) -> DisabilityRecord:
    category = rng.randrange(len(_CATEGORIES))
    grade = rng.randint(1, 4)
    return DisabilityRecord(
        id_number=person.id_number,
        certificate_no=f"{person.id_number}{category + 1}{grade}",
        category=_CATEGORIES[category],
        grade=grade,
    )


def _student(rng: random.Random, person: Person, today: dt.date) -> StudentRecord:
    if rng.random() < 0.2:  # expired
        valid_until = today - dt.timedelta(days=rng.randint(1, 400))
    else:
        valid_until = today + dt.timedelta(days=rng.randint(30, 1000))
    valid_from = dt.date(min(valid_until.year, today.year) - rng.randint(1, 4), 9, 1)
    return StudentRecord(
        id_number=person.id_number,
        school=person.issuing_district[:2] + "市" + rng.choice(_SCHOOLS),
        valid_from=valid_from,
        valid_until=valid_until,
    )
