"""Synthetic health records for the synthetic population, as FHIR R4 transaction Bundles.

For each person of ``adapters.social_insurance.seed.Population`` this module builds, from a
random generator seeded by the person's number (deterministic: no clock), what several
hospitals recorded over several years:

- lab panels: a ``DiagnosticReport`` (category LAB, a LOINC panel code) with its LOINC-coded
  ``Observation`` results (``LAB_PANELS``);
- imaging studies: ``ImagingStudy`` with one series (CT, MR, DX or US);
- discharge summaries: ``DocumentReference`` (LOINC 18842-5) with a short plain-text letter.

Every record names its performing hospital (``HOSPITALS``, by display) and carries a business
identifier that hospital assigned (``identifier``: the same record has the same identifier on
every server that holds a copy, which is how a list de-duplicates across sources). Each person's
records are one ``transaction`` Bundle whose entries refer to each other by ``urn:uuid`` full
URLs, the way a FHIR client seeds any conformant server (the reference server loads the same
Bundle; the interop tests POST it to ``sekmet-fhir``).

The documented employee ``110101199003074477`` has enough lab reports to page (``RICH_PERSON``).
Values and texts are synthetic: any match with a real person is chance.
"""

from __future__ import annotations

import base64
import datetime as dt
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from adapters.social_insurance.seed import Person

IDENTIFIER_SYSTEM = "urn:oid:2.16.156.10011.1.3"  # resident ID card number (Chinese health IT)
LAB_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0074"
LOINC = "http://loinc.org"
DICOM_MODALITY = "http://dicom.nema.org/resources/ontology/DCM"
RICH_PERSON = "110101199003074477"
RICH_LAB_REPORTS = 45
FIRST_YEAR, LAST_YEAR = 2019, 2024
_NAMESPACE = uuid.UUID("6f1c7c5e-3d0b-4b55-9a51-2f0e3c1d4a11")


@dataclass(frozen=True, slots=True)
class Hospital:
    """A performing hospital: its code (in record identifiers) and display name."""

    code: str
    name: str

    @property
    def record_system(self) -> str:
        """The identifier system of the records this hospital assigns."""
        return f"urn:onecard:hospital:{self.code}:record"


HOSPITALS: tuple[Hospital, ...] = (
    Hospital("h110101", "Dongcheng First Hospital"),
    Hospital("h110108", "Haidian Central Hospital"),
    Hospital("h310115", "Pudong Medical Centre"),
    Hospital("h440305", "Nanshan People's Hospital"),
)


@dataclass(frozen=True, slots=True)
class Analyte:
    """One LOINC-coded result of a panel: code, display (the LOINC short name or long common
    name), unit, normal low and high."""

    code: str
    display: str
    unit: str
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class LabPanel:
    code: str
    display: str
    analytes: tuple[Analyte, ...]


LAB_PANELS: tuple[LabPanel, ...] = (
    LabPanel(
        "58410-2",
        "CBC panel - Blood by Automated count",
        (
            Analyte("6690-2", "WBC # Bld Auto", "10*3/uL", 4, 10),
            Analyte("789-8", "RBC # Bld Auto", "10*6/uL", 4, 5.5),
            Analyte("718-7", "Hgb Bld-mCnc", "g/dL", 12, 17),
            Analyte("777-3", "Platelet # Bld Auto", "10*3/uL", 150, 400),
        ),
    ),
    LabPanel(
        "51990-0",
        "Basic metabolic panel - Blood",
        (
            Analyte("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 70, 110),
            Analyte("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.6, 1.2),
            Analyte("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 135, 145),
            Analyte("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.5, 5.1),
        ),
    ),
    LabPanel(
        "57698-3",
        "Lipid panel with direct LDL - Serum or Plasma",
        (
            Analyte("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 120, 200),
            Analyte("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", "mg/dL", 50, 150),
            Analyte("2085-9", "HDL Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 40, 80),
        ),
    ),
)  # fmt: skip

_IMAGING = (
    ("CT", "CT chest without contrast"),
    ("MR", "MRI brain"),
    ("DX", "Chest X-ray, 2 views"),
    ("US", "Ultrasound abdomen"),
)
_DISCHARGE = ("18842-5", "Discharge summary")
_REASONS = ("community-acquired pneumonia", "appendectomy", "atrial fibrillation", "cholecystitis")


def patient_resource(person: Person) -> dict[str, Any]:
    """The person as a FHIR Patient: the resident ID number as identifier; no name (the
    exchange needs none, and a server that is not ours should not get more than it needs)."""
    return {
        "resourceType": "Patient",
        "identifier": [{"system": IDENTIFIER_SYSTEM, "value": person.id_number}],
        "gender": "male" if person.gender == "1" else "female",
        "birthDate": person.birth_date.isoformat(),
    }


def transaction(person: Person, hospitals: Iterable[str] | None = None) -> dict[str, Any]:
    """The person's Patient and records (of ``hospitals`` by code; all by default) as a
    ``transaction`` Bundle with ``urn:uuid`` references."""
    keep = frozenset(hospitals) if hospitals is not None else None
    rng = random.Random(f"fhir:{person.id_number}")  # noqa: S311 (synthetic data)
    patient_url = _urn(person.id_number, "Patient")
    entries = [_entry(patient_url, patient_resource(person))]
    for full_url, resource in _records(person, rng, patient_url):
        hospital = resource["identifier"][0]["system"].split(":")[3]
        if keep is None or hospital in keep:
            entries.append(_entry(full_url, resource))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _entry(full_url: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {
        "fullUrl": full_url,
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }


def _urn(*parts: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, '/'.join(parts))}"


def _records(
    person: Person, rng: random.Random, patient: str
) -> Iterable[tuple[str, dict[str, Any]]]:
    labs = RICH_LAB_REPORTS if person.id_number == RICH_PERSON else rng.randint(2, 9)
    for n in range(labs):
        yield from _lab_report(person, rng, patient, n)
    imaging = 5 if person.id_number == RICH_PERSON else rng.randint(0, 3)
    for n in range(imaging):
        yield _imaging_study(person, rng, patient, n)
    documents = 3 if person.id_number == RICH_PERSON else rng.randint(0, 2)
    for n in range(documents):
        yield _discharge_summary(person, rng, patient, n)


def _when(rng: random.Random) -> dt.datetime:
    day = dt.date(FIRST_YEAR, 1, 1) + dt.timedelta(
        days=rng.randrange((dt.date(LAST_YEAR, 12, 31) - dt.date(FIRST_YEAR, 1, 1)).days)
    )
    return dt.datetime.combine(day, dt.time(rng.randint(7, 18), rng.choice((0, 15, 30, 45))))


def _stamp(moment: dt.datetime) -> str:
    return moment.isoformat() + "+08:00"


def _identifier(hospital: Hospital, person: Person, kind: str, n: int) -> list[dict[str, str]]:
    return [{"system": hospital.record_system, "value": f"{kind}-{person.psn_no}-{n}"}]


def _lab_report(
    person: Person, rng: random.Random, patient: str, n: int
) -> Iterable[tuple[str, dict[str, Any]]]:
    hospital, panel, moment = rng.choice(HOSPITALS), rng.choice(LAB_PANELS), _when(rng)
    performer = [{"display": hospital.name}]
    lab = [{"coding": [{"system": LAB_CATEGORY_SYSTEM, "code": "LAB", "display": "Laboratory"}]}]
    results = []
    for i, analyte in enumerate(panel.analytes):
        url = _urn(person.id_number, "Observation", str(n), str(i))
        spread = analyte.high - analyte.low
        value = round(rng.uniform(analyte.low - spread / 4, analyte.high + spread / 4), 2)
        observation: dict[str, Any] = {
            "resourceType": "Observation",
            "identifier": _identifier(hospital, person, f"obs{i}", n),
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "laboratory",
                        }
                    ]
                }
            ],
            "code": {"coding": [{"system": LOINC, "code": analyte.code}], "text": analyte.display},
            "subject": {"reference": patient},
            "effectiveDateTime": _stamp(moment),
            "performer": performer,
            "valueQuantity": {
                "value": value,
                "unit": analyte.unit,
                "system": "http://unitsofmeasure.org",
                "code": analyte.unit,
            },
            "referenceRange": [
                {
                    "low": {"value": analyte.low, "unit": analyte.unit},
                    "high": {"value": analyte.high, "unit": analyte.unit},
                }
            ],
        }
        results.append({"reference": url})
        yield url, observation
    report = {
        "resourceType": "DiagnosticReport",
        "identifier": _identifier(hospital, person, "lab", n),
        "status": "final",
        "category": lab,
        "code": {"coding": [{"system": LOINC, "code": panel.code}], "text": panel.display},
        "subject": {"reference": patient},
        "effectiveDateTime": _stamp(moment),
        "issued": _stamp(moment + dt.timedelta(hours=3)),
        "performer": performer,
        "result": results,
    }
    yield _urn(person.id_number, "DiagnosticReport", str(n)), report


def _imaging_study(
    person: Person, rng: random.Random, patient: str, n: int
) -> tuple[str, dict[str, Any]]:
    hospital, (modality, title), moment = rng.choice(HOSPITALS), rng.choice(_IMAGING), _when(rng)
    uid = f"2.25.{uuid.uuid5(_NAMESPACE, f'{person.id_number}/study/{n}').int}"
    study = {
        "resourceType": "ImagingStudy",
        "identifier": _identifier(hospital, person, "img", n),
        "status": "available",
        "subject": {"reference": patient},
        "started": _stamp(moment),
        "description": title,
        "referrer": {"display": hospital.name},
        "numberOfSeries": 1,
        "numberOfInstances": rng.randint(1, 200),
        "series": [
            {
                "uid": f"{uid}.1",
                "modality": {"system": DICOM_MODALITY, "code": modality},
                "description": title,
                "performer": [{"actor": {"display": hospital.name}}],
            }
        ],
    }
    return _urn(person.id_number, "ImagingStudy", str(n)), study


def _discharge_summary(
    person: Person, rng: random.Random, patient: str, n: int
) -> tuple[str, dict[str, Any]]:
    hospital, moment = rng.choice(HOSPITALS), _when(rng)
    reason = rng.choice(_REASONS)
    text = (
        f"Discharge summary ({hospital.name}, {moment.date().isoformat()}).\n"
        f"Admitted for {reason}; treated and discharged in stable condition.\n"
        "Follow-up with the general practitioner in two weeks.\n"
    )
    document = {
        "resourceType": "DocumentReference",
        "identifier": _identifier(hospital, person, "doc", n),
        "status": "current",
        "type": {
            "coding": [{"system": LOINC, "code": _DISCHARGE[0], "display": _DISCHARGE[1]}],
            "text": _DISCHARGE[1],
        },
        "subject": {"reference": patient},
        "date": _stamp(moment),
        "author": [{"display": hospital.name}],
        "description": f"Discharge summary: {reason}",
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain; charset=utf-8",
                    "data": base64.b64encode(text.encode()).decode(),
                    "title": "Discharge summary",
                }
            }
        ],
    }
    return _urn(person.id_number, "DocumentReference", str(n)), document
