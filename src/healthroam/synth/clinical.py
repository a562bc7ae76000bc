"""Clinical histories for the synthetic province: FHIR R4 visits at its hospitals.

Each hospital record of the synthetic province (:mod:`healthroam.synth.sources`, with its own
medical record number and its own recording errors) becomes a Patient of that hospital with a
few visits after the day the person registered there. A visit is an Encounter (outpatient,
emergency or inpatient) with its diagnoses (Condition, ICD-10 with Chinese names), vital signs
and laboratory results (Observation, LOINC and UCUM) grouped by panel (DiagnosticReport) and
prescriptions (MedicationRequest, ATC codes). Children and older people also get their
vaccinations (Immunization, CVX codes).

A person's long-term illnesses are drawn once per person (from the seed and the person), so
the same person has the same hypertension at every hospital; the visits themselves are drawn
per hospital record. Everything is deterministic for a seed (and chunk size).

Resources carry ids made from the hospital code and MRN (``H46010501-12345678-v2-o3``), so
NDJSON files can be imported as they are and every reference resolves inside its hospital's
file. :func:`transaction_bundle` turns one patient's resources into a transaction Bundle with
``urn:uuid:`` references instead.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from healthroam.errors import InvalidInput
from healthroam.registry.normalize import normalize_national_id
from healthroam.synth.places import Institution, institutions
from healthroam.synth.population import DEFAULT_AS_OF, DEFAULT_CHUNK_SIZE, PopulationGenerator
from healthroam.synth.sources import ID_TYPE_RESIDENT, SourceDeriver

Resource = dict[str, Any]
Format = Literal["ndjson", "bundles"]
FORMATS: tuple[Format, ...] = ("ndjson", "bundles")

ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ATC = "http://www.whocc.no/atc"
CVX = "http://hl7.org/fhir/sid/cvx"
NATIONAL_ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"  # 居民身份证号 (as the registry expects)
PASSPORT_SYSTEM = "urn:healthroam:passport"
MRN_SYSTEM = "urn:healthroam:mrn:"  # + hospital code
INSTITUTION_SYSTEM = "urn:healthroam:institution"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
CHINA = timedelta(hours=8)
EARLIEST_VISIT = date(2015, 1, 1)

# --- code tables ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Diagnosis:
    code: str  # ICD-10 (WHO)
    display: str  # Chinese name
    labs: tuple[str, ...]  # lab panels usually ordered (keys of PANELS)
    drugs: tuple[str, ...]  # usual drugs (keys of DRUGS)
    department: str


# Long-term illnesses: (diagnosis, minimum age, prevalence by age band <45, 45-59, 60+).
CHRONIC: tuple[tuple[Diagnosis, int, tuple[float, float, float]], ...] = (
    (Diagnosis("I10", "原发性高血压", ("lipid", "cmp"), ("amlodipine", "valsartan", "nifedipine"),
               "心血管内科"), 30, (0.10, 0.30, 0.50)),
    (Diagnosis("E11.9", "2型糖尿病", ("hba1c", "cmp"), ("metformin", "acarbose", "glargine"),
               "内分泌科"), 30, (0.04, 0.12, 0.20)),
    (Diagnosis("E78.5", "高脂血症", ("lipid",), ("atorvastatin", "rosuvastatin"), "心血管内科"),
     30, (0.08, 0.18, 0.25)),
    (Diagnosis("I25.1", "动脉粥样硬化性心脏病", ("lipid", "cmp"), ("aspirin", "atorvastatin",
               "metoprolol"), "心血管内科"), 45, (0.0, 0.04, 0.12)),
    (Diagnosis("J44.9", "慢性阻塞性肺疾病", ("cbc",), ("tiotropium", "salbutamol"), "呼吸内科"),
     45, (0.0, 0.05, 0.12)),
    (Diagnosis("N18.9", "慢性肾脏病", ("cmp", "cbc"), ("valsartan",), "肾内科"),
     40, (0.01, 0.05, 0.10)),
    (Diagnosis("B18.1", "慢性乙型病毒性肝炎", ("liver",), ("entecavir",), "感染科"),
     18, (0.06, 0.06, 0.05)),
    (Diagnosis("K76.0", "脂肪肝", ("liver", "lipid"), (), "消化内科"), 25, (0.12, 0.18, 0.15)),
    (Diagnosis("E03.9", "甲状腺功能减退症", ("cmp",), ("levothyroxine",), "内分泌科"),
     25, (0.02, 0.03, 0.04)),
    (Diagnosis("M17.9", "膝关节骨关节病", (), ("celecoxib",), "骨科"), 50, (0.0, 0.08, 0.20)),
)  # fmt: skip

# Short illnesses: (diagnosis, encounter class, weight for children, adults, older people).
ACUTE: tuple[tuple[Diagnosis, str, tuple[float, float, float]], ...] = (
    (Diagnosis("J06.9", "急性上呼吸道感染", ("cbc",), ("ibuprofen", "paracetamol"), "呼吸内科"),
     "AMB", (30, 14, 6)),
    (Diagnosis("J02.9", "急性咽炎", ("cbc",), ("amoxicillin",), "耳鼻咽喉科"), "AMB", (12, 8, 3)),
    (Diagnosis("A09.9", "急性胃肠炎", ("cbc",), ("montmorillonite",), "消化内科"),
     "AMB", (10, 6, 4)),
    (Diagnosis("K29.7", "慢性胃炎", (), ("omeprazole",), "消化内科"), "AMB", (0, 10, 8)),
    (Diagnosis("M54.5", "腰痛", (), ("ibuprofen",), "骨科"), "AMB", (0, 8, 6)),
    (Diagnosis("R50.9", "发热", ("cbc", "crp"), ("paracetamol",), "急诊科"), "EMER", (10, 3, 2)),
    (Diagnosis("A90", "登革热", ("cbc", "liver"), ("paracetamol",), "感染科"), "EMER", (1, 1, 1)),
    (Diagnosis("S52.5", "桡骨下端骨折", (), ("ibuprofen",), "骨科"), "EMER", (2, 2, 2)),
    (Diagnosis("J18.9", "肺炎", ("cbc", "crp"), ("ceftriaxone",), "呼吸内科"), "IMP", (5, 2, 5)),
    (Diagnosis("K35.8", "急性阑尾炎", ("cbc", "crp"), ("ceftriaxone",), "普外科"),
     "IMP", (1, 1, 0.5)),
    (Diagnosis("K80.2", "胆囊结石", ("liver",), (), "肝胆外科"), "IMP", (0, 1, 1.5)),
    (Diagnosis("I63.9", "脑梗死", ("lipid", "cmp", "cbc"), ("aspirin", "atorvastatin",
               "clopidogrel"), "神经内科"), "IMP", (0, 0.3, 3)),
    (Diagnosis("H25.9", "老年性白内障", (), (), "眼科"), "IMP", (0, 0, 2)),
    (Diagnosis("D64.9", "贫血", ("cbc",), ("ferrous_sulfate",), "血液科"), "AMB", (2, 3, 3)),
    (Diagnosis("Z00.0", "健康查体", ("cbc", "lipid", "cmp"), (), "体检中心"), "AMB", (3, 6, 6)),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Test:
    loinc: str
    display: str  # LOINC long common name (shortened)
    chinese: str
    unit: str  # UCUM
    low: float
    high: float
    decimals: int


TESTS: dict[str, Test] = {
    t.loinc: t
    for t in (
        Test("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "白细胞计数",
             "10*9/L", 3.5, 9.5, 1),
        Test("789-8", "Erythrocytes [#/volume] in Blood by Automated count", "红细胞计数",
             "10*12/L", 3.8, 5.8, 2),
        Test("718-7", "Hemoglobin [Mass/volume] in Blood", "血红蛋白", "g/L", 115, 175, 0),
        Test("4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count", "红细胞压积",
             "%", 35, 50, 1),
        Test("777-3", "Platelets [#/volume] in Blood by Automated count", "血小板计数",
             "10*9/L", 125, 350, 0),
        Test("14647-2", "Cholesterol [Moles/volume] in Serum or Plasma", "总胆固醇",
             "mmol/L", 2.8, 5.2, 2),
        Test("14927-8", "Triglyceride [Moles/volume] in Serum or Plasma", "甘油三酯",
             "mmol/L", 0.45, 1.7, 2),
        Test("14646-4", "Cholesterol in HDL [Moles/volume] in Serum or Plasma",
             "高密度脂蛋白胆固醇", "mmol/L", 1.0, 2.0, 2),
        Test("22748-8", "Cholesterol in LDL [Moles/volume] in Serum or Plasma",
             "低密度脂蛋白胆固醇", "mmol/L", 1.5, 3.4, 2),
        Test("14749-6", "Glucose [Moles/volume] in Serum or Plasma", "葡萄糖", "mmol/L",
             3.9, 6.1, 1),
        Test("14682-9", "Creatinine [Moles/volume] in Serum or Plasma", "肌酐", "umol/L",
             57, 111, 0),
        Test("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
             "丙氨酸氨基转移酶", "U/L", 9, 50, 0),
        Test("1920-8", "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or "
             "Plasma", "天门冬氨酸氨基转移酶", "U/L", 15, 40, 0),
        Test("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "糖化血红蛋白", "%",
             4.0, 6.0, 1),
        Test("1988-5", "C reactive protein [Mass/volume] in Serum or Plasma", "C反应蛋白",
             "mg/L", 0, 10, 1),
    )
}  # fmt: skip

# Lab panels: key -> (LOINC panel code, display, Chinese name, member tests).
PANELS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "cbc": ("58410-2", "CBC panel - Blood by Automated count", "血常规",
            ("6690-2", "789-8", "718-7", "4544-3", "777-3")),
    "lipid": ("57698-3", "Lipid panel with direct LDL - Serum or Plasma", "血脂四项",
              ("14647-2", "14927-8", "14646-4", "22748-8")),
    "cmp": ("24323-8", "Comprehensive metabolic 2000 panel - Serum or Plasma", "生化全项",
            ("14749-6", "14682-9", "1742-6", "1920-8")),
    "liver": ("24325-3", "Hepatic function panel - Serum or Plasma", "肝功能",
              ("1742-6", "1920-8")),
    "hba1c": ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "糖化血红蛋白",
              ("4548-4",)),
    "crp": ("1988-5", "C reactive protein [Mass/volume] in Serum or Plasma", "C反应蛋白",
            ("1988-5",)),
}  # fmt: skip

# Drugs (ATC): key -> (ATC code, Chinese name, dose, dose unit, times a day, route).
DRUGS: dict[str, tuple[str, str, float, str, int, str]] = {
    "amlodipine": ("C08CA01", "苯磺酸氨氯地平片", 5, "mg", 1, "口服"),
    "nifedipine": ("C08CA05", "硝苯地平控释片", 30, "mg", 1, "口服"),
    "valsartan": ("C09CA03", "缬沙坦胶囊", 80, "mg", 1, "口服"),
    "metoprolol": ("C07AB02", "酒石酸美托洛尔片", 25, "mg", 2, "口服"),
    "metformin": ("A10BA02", "盐酸二甲双胍片", 500, "mg", 3, "口服"),
    "acarbose": ("A10BF01", "阿卡波糖片", 50, "mg", 3, "口服"),
    "glargine": ("A10AE04", "甘精胰岛素注射液", 10, "[iU]", 1, "皮下注射"),
    "atorvastatin": ("C10AA05", "阿托伐他汀钙片", 20, "mg", 1, "口服"),
    "rosuvastatin": ("C10AA07", "瑞舒伐他汀钙片", 10, "mg", 1, "口服"),
    "aspirin": ("B01AC06", "阿司匹林肠溶片", 100, "mg", 1, "口服"),
    "clopidogrel": ("B01AC04", "硫酸氢氯吡格雷片", 75, "mg", 1, "口服"),
    "tiotropium": ("R03BB04", "噻托溴铵粉吸入剂", 18, "ug", 1, "吸入"),
    "salbutamol": ("R03AC02", "硫酸沙丁胺醇吸入气雾剂", 100, "ug", 2, "吸入"),
    "entecavir": ("J05AF10", "恩替卡韦片", 0.5, "mg", 1, "口服"),
    "levothyroxine": ("H03AA01", "左甲状腺素钠片", 50, "ug", 1, "口服"),
    "celecoxib": ("M01AH01", "塞来昔布胶囊", 200, "mg", 1, "口服"),
    "ibuprofen": ("M01AE01", "布洛芬缓释胶囊", 300, "mg", 2, "口服"),
    "paracetamol": ("N02BE01", "对乙酰氨基酚片", 500, "mg", 3, "口服"),
    "amoxicillin": ("J01CA04", "阿莫西林胶囊", 500, "mg", 3, "口服"),
    "ceftriaxone": ("J01DD04", "注射用头孢曲松钠", 2, "g", 1, "静脉滴注"),
    "omeprazole": ("A02BC01", "奥美拉唑肠溶胶囊", 20, "mg", 1, "口服"),
    "montmorillonite": ("A07BC05", "蒙脱石散", 3, "g", 3, "口服"),
    "ferrous_sulfate": ("B03AA07", "硫酸亚铁片", 300, "mg", 3, "口服"),
}

# Vaccines (CVX): (CVX code, Chinese name, age in months at the dose; None = adult schedule).
CHILD_VACCINES: tuple[tuple[str, str, int], ...] = (
    ("08", "乙型肝炎疫苗", 0), ("19", "卡介苗", 0), ("08", "乙型肝炎疫苗", 1),
    ("10", "脊髓灰质炎灭活疫苗", 2), ("10", "脊髓灰质炎灭活疫苗", 3),
    ("20", "百白破疫苗", 3), ("20", "百白破疫苗", 4), ("20", "百白破疫苗", 5),
    ("08", "乙型肝炎疫苗", 6), ("03", "麻腮风疫苗", 8), ("134", "乙脑灭活疫苗", 8),
    ("32", "A群流脑多糖疫苗", 9), ("83", "甲型肝炎灭活疫苗", 18), ("20", "百白破疫苗", 18),
    ("03", "麻腮风疫苗", 18), ("134", "乙脑灭活疫苗", 24), ("10", "脊髓灰质炎灭活疫苗", 48),
    ("113", "白破疫苗", 72),
)  # fmt: skip
INFLUENZA = ("141", "流感疫苗")
PNEUMOCOCCAL = ("33", "23价肺炎球菌多糖疫苗")
COVID = ("213", "新冠病毒疫苗")
RABIES = ("18", "人用狂犬病疫苗")

_CLASS_NAMES = {"AMB": "ambulatory", "EMER": "emergency", "IMP": "inpatient encounter"}
_ENCOUNTER_TYPE = {"AMB": "门诊", "EMER": "急诊", "IMP": "住院"}


# --- the people ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HospitalPatient:
    """One hospital's record of a person (as that hospital recorded it, errors included)."""

    person_id: str  # the true person (ground truth)
    hospital: Institution
    mrn: str
    name: str
    sex: int  # 1 male, 2 female
    birth_date: date
    death_date: date | None
    id_type: str | None
    id_number: str | None
    phone: str | None
    address: str | None
    registered_on: date

    @property
    def patient_id(self) -> str:
        return f"{self.hospital.code}-{self.mrn}"


def organization(hospital: Institution) -> Resource:
    """The hospital as an Organization (referenced by its Encounters and reports)."""
    return {
        "resourceType": "Organization",
        "id": f"org-{hospital.code}",
        "identifier": [{"system": INSTITUTION_SYSTEM, "value": hospital.code}],
        "active": True,
        "type": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/organization-type",
                        "code": "prov",
                        "display": "Healthcare Provider",
                    }
                ]
            }
        ],
        "name": hospital.name,
        "address": [{"district": hospital.region_code, "state": "海南省", "country": "CN"}],
    }


@dataclass(slots=True)
class _Visit:
    start: datetime
    cls: str
    diagnoses: list[Diagnosis]
    chronic: list[Diagnosis]  # which of them are long-term (follow-up)


def _instant(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display is not None:
        coding["display"] = display
    return coding


def _quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


class ClinicalGenerator:
    """Makes the clinical history of each hospital record; deterministic for a seed."""

    def __init__(self, seed: int, *, as_of: date = DEFAULT_AS_OF) -> None:
        self.seed = seed
        self.as_of = as_of
        self.hospitals = institutions()

    # -- who is registered where ---------------------------------------------------------------

    def patients(
        self, people: int, *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> Iterator[list[HospitalPatient]]:
        """The hospital records of ``people`` true people, one list per population chunk."""
        generator = PopulationGenerator(self.seed, as_of=self.as_of)
        deriver = SourceDeriver(generator)
        by_code = {h.code: h for h in self.hospitals}
        for index, start in enumerate(range(0, people, chunk_size)):
            chunk = generator.chunk(index, start, min(chunk_size, people - start))
            deaths = chunk.death_date
            death_of = {
                pid: (None if str(d) == "NaT" else date.fromisoformat(str(d)))
                for pid, d in zip(chunk.person_id.to_pylist(), deaths, strict=True)
            }
            found: list[HospitalPatient] = []
            for batch in deriver.derive(index, chunk):
                if not batch.source.startswith("hospital-"):
                    continue
                records = batch.records.to_pylist()
                person_ids = batch.links.column("person_id").to_pylist()
                for row, person_id in zip(records, person_ids, strict=True):
                    found.append(
                        HospitalPatient(
                            person_id=person_id,
                            hospital=by_code[row["hospital_code"]],
                            mrn=row["mrn"],
                            name=row["name"],
                            sex=int(row["sex"]),
                            birth_date=row["birth_date"],
                            death_date=death_of[person_id],
                            id_type=row["id_type"],
                            id_number=row["id_number"],
                            phone=row["phone"],
                            address=row["address"],
                            registered_on=row["registered_on"],
                        )
                    )
            found.sort(key=lambda p: (p.person_id, p.hospital.code, p.mrn))
            yield found

    # -- one hospital record's history ---------------------------------------------------------

    def chronic_conditions(self, person_id: str, birth_date: date) -> list[Diagnosis]:
        """The long-term illnesses of a true person (the same at every hospital)."""
        rng = random.Random(f"{self.seed}|{person_id}|chronic")  # noqa: S311 (synthetic data)
        age = (self.as_of - birth_date).days / 365.25
        band = 0 if age < 45 else 1 if age < 60 else 2
        return [d for d, minimum, share in CHRONIC if age >= minimum and rng.random() < share[band]]

    def history(self, patient: HospitalPatient, *, visits: int | None = None) -> list[Resource]:
        """The Patient and every resource of its visits and vaccinations at its hospital."""
        rng = random.Random(f"{self.seed}|{patient.hospital.code}|{patient.mrn}")  # noqa: S311
        builder = _Builder(self, patient, rng)
        builder.patient()
        for number, visit in enumerate(builder.plan(visits), start=1):
            builder.visit(number, visit)
        builder.immunizations()
        return builder.resources


class _Builder:
    def __init__(self, gen: ClinicalGenerator, p: HospitalPatient, rng: random.Random) -> None:
        self.gen, self.p, self.rng = gen, p, rng
        self.pid = p.patient_id
        self.subject = {"reference": f"Patient/{self.pid}"}
        self.provider = {"reference": f"Organization/org-{p.hospital.code}"}
        self.resources: list[Resource] = []
        self.age_at_end = (self._end() - p.birth_date).days / 365.25
        self.chronic = gen.chronic_conditions(p.person_id, p.birth_date)
        self._condition_of: dict[str, str] = {}  # chronic ICD-10 code -> Condition id

    def _end(self) -> date:
        return min(self.p.death_date or self.gen.as_of, self.gen.as_of)

    def _age(self, on: date) -> float:
        return (on - self.p.birth_date).days / 365.25

    # -- Patient -------------------------------------------------------------------------------

    def patient(self) -> None:
        p = self.p
        identifiers: list[dict[str, Any]] = [
            {
                "use": "usual",
                "type": {"coding": [_coding(V2_0203, "MR", "Medical record number")]},
                "system": MRN_SYSTEM + p.hospital.code,
                "value": p.mrn,
            }
        ]
        if p.id_number:
            if p.id_type == ID_TYPE_RESIDENT:
                if _valid_id(p.id_number):  # the registry refuses numbers it cannot parse
                    identifiers.append(
                        {"use": "official", "system": NATIONAL_ID_SYSTEM, "value": p.id_number}
                    )
            else:
                identifiers.append(
                    {
                        "type": {"coding": [_coding(V2_0203, "PPN", "Passport number")]},
                        "system": PASSPORT_SYSTEM,
                        "value": p.id_number,
                    }
                )
        patient: Resource = {
            "resourceType": "Patient",
            "id": self.pid,
            "identifier": identifiers,
            "active": True,
            "name": [{"use": "official", "text": p.name}],
            "gender": "male" if p.sex == 1 else "female",
            "birthDate": p.birth_date.isoformat(),
            "managingOrganization": dict(self.provider),
        }
        if p.phone:
            patient["telecom"] = [{"system": "phone", "value": p.phone, "use": "mobile"}]
        if p.address:
            patient["address"] = [{"use": "home", "text": p.address}]
        if p.death_date is not None:
            patient["deceasedDateTime"] = p.death_date.isoformat()
        self.resources.append(patient)

    # -- what happens when ---------------------------------------------------------------------

    def plan(self, visits: int | None) -> list[_Visit]:
        rng, p = self.rng, self.p
        first = max(p.registered_on, EARLIEST_VISIT, p.birth_date)
        last = self._end()
        span = (last - first).days
        if span < 0:
            return []
        if visits is None:
            base = 1 + (self.age_at_end >= 60) + (self.age_at_end < 6)
            visits = base + int(rng.expovariate(1.0) * (1 + len(self.chronic)))
            visits = min(visits, 12)
        band = 0 if self.age_at_end < 14 else 1 if self.age_at_end < 60 else 2
        acute = [(d, cls) for d, cls, _ in ACUTE]
        weights = [w[band] for _, _, w in ACUTE]
        days = sorted(rng.randrange(span + 1) for _ in range(visits))
        plan: list[_Visit] = []
        for day in days:
            on = first + timedelta(days=day)
            hour = rng.choice((8, 8, 9, 9, 10, 10, 11, 14, 15, 16))
            start = datetime(on.year, on.month, on.day, hour, rng.randrange(60), tzinfo=UTC)
            start -= CHINA  # clinic hours are Beijing time; store instants in UTC
            active = [d for d in self.chronic if self._age(on) >= 25 or d.code == "B18.1"]
            if active and rng.random() < 0.6:
                chosen = rng.sample(active, min(len(active), rng.choice((1, 1, 2))))
                plan.append(_Visit(start, "AMB", list(chosen), list(chosen)))
                continue
            diagnosis, cls = rng.choices(acute, weights)[0]
            if cls == "IMP" and self.p.hospital.level == 1:
                cls = "AMB"  # township clinics treat and refer; they do not admit
            extra = [d for d in active if rng.random() < 0.5] if cls == "IMP" else []
            plan.append(_Visit(start, cls, [diagnosis, *extra], extra))
        return plan

    # -- one visit -----------------------------------------------------------------------------

    def visit(self, number: int, visit: _Visit) -> None:
        rng, p = self.rng, self.p
        prefix = f"{self.pid}-v{number}"
        encounter_ref = {"reference": f"Encounter/{prefix}"}
        start = visit.start
        if visit.cls == "IMP":
            end = start + timedelta(days=rng.randint(3, 12), hours=rng.randint(-3, 5))
        elif visit.cls == "EMER":
            end = start + timedelta(minutes=rng.randint(40, 300))
        else:
            end = start + timedelta(minutes=rng.randint(8, 40))
        condition_refs = [self._condition(prefix, i, d, visit, encounter_ref)
                          for i, d in enumerate(visit.diagnoses)]  # fmt: skip
        department = visit.diagnoses[0].department
        encounter: Resource = {
            "resourceType": "Encounter",
            "id": prefix,
            "identifier": [
                {
                    "system": f"urn:healthroam:visit:{p.hospital.code}",
                    "value": f"{p.mrn}-{number:03d}",
                }
            ],
            "status": "finished",
            "class": _coding(ACT_CODE, visit.cls, _CLASS_NAMES[visit.cls]),
            "type": [{"text": f"{_ENCOUNTER_TYPE[visit.cls]} {department}"}],
            "subject": dict(self.subject),
            "period": {"start": _instant(start), "end": _instant(end)},
            "diagnosis": [
                {"condition": {"reference": ref}, "rank": rank}
                for rank, ref in enumerate(condition_refs, start=1)
            ],
            "serviceProvider": dict(self.provider),
        }
        if visit.cls == "IMP":
            encounter["hospitalization"] = {
                "dischargeDisposition": {
                    "coding": [
                        _coding(
                            "http://terminology.hl7.org/CodeSystem/discharge-disposition",
                            "home",
                            "Home",
                        )
                    ]
                }
            }
        self.resources.append(encounter)
        self._vitals(prefix, start, encounter_ref, visit)
        panels: list[str] = []
        for d in visit.diagnoses:
            for panel in d.labs:
                if panel not in panels and (visit.cls != "AMB" or rng.random() < 0.7):
                    panels.append(panel)
        drawn = start + timedelta(minutes=rng.randint(10, 60))
        for k, panel in enumerate(panels, start=1):
            self._report(f"{prefix}-r{k}", panel, drawn, encounter_ref, visit)
        drugs: list[str] = []
        for d in visit.diagnoses:
            if d.drugs and rng.random() < 0.85:
                drugs.extend(
                    x for x in rng.sample(d.drugs, 1 + (len(d.drugs) > 2)) if x not in drugs
                )
        for k, drug in enumerate(drugs, start=1):
            self._prescription(f"{prefix}-m{k}", drug, start, end, encounter_ref, visit)

    def _condition(
        self, prefix: str, index: int, d: Diagnosis, visit: _Visit, encounter: dict[str, str]
    ) -> str:
        chronic = d in visit.chronic
        if chronic and d.code in self._condition_of:
            return f"Condition/{self._condition_of[d.code]}"
        cid = f"{prefix}-c{index + 1}"
        recorded = visit.start.date()
        condition: Resource = {
            "resourceType": "Condition",
            "id": cid,
            "clinicalStatus": {
                "coding": [_coding(CONDITION_CLINICAL, "active" if chronic else "resolved")]
            },
            "verificationStatus": {"coding": [_coding(CONDITION_VERIFICATION, "confirmed")]},
            "category": [
                {
                    "coding": [
                        _coding(CONDITION_CATEGORY, "problem-list-item", "Problem List Item")
                        if chronic
                        else _coding(
                            CONDITION_CATEGORY, "encounter-diagnosis", "Encounter Diagnosis"
                        )
                    ]
                }
            ],
            "code": {"coding": [_coding(ICD10, d.code, d.display)], "text": d.display},
            "subject": dict(self.subject),
            "encounter": dict(encounter),
            "onsetDateTime": (
                (recorded - timedelta(days=self.rng.randint(30, 2000))).isoformat()
                if chronic
                else (recorded - timedelta(days=self.rng.randint(0, 4))).isoformat()
            ),
            "recordedDate": _instant(visit.start),
        }
        if not chronic:
            condition["abatementDateTime"] = (recorded + timedelta(days=14)).isoformat()
        else:
            self._condition_of[d.code] = cid
        self.resources.append(condition)
        return f"Condition/{cid}"

    def _observation(
        self,
        oid: str,
        code: str,
        display: str,
        text: str,
        category: str,
        when: datetime,
        encounter: dict[str, str],
    ) -> Resource:
        return {
            "resourceType": "Observation",
            "id": oid,
            "status": "final",
            "category": [{"coding": [_coding(OBSERVATION_CATEGORY, category)]}],
            "code": {"coding": [_coding(LOINC, code, display)], "text": text},
            "subject": dict(self.subject),
            "encounter": dict(encounter),
            "effectiveDateTime": _instant(when),
        }

    def _vitals(self, prefix: str, start: datetime, encounter: dict[str, str], v: _Visit) -> None:
        rng = self.rng
        age = self._age(start.date())
        codes = {d.code for d in v.diagnoses}
        when = start + timedelta(minutes=2)
        out: list[Resource] = []
        if age >= 14:
            hypertensive = "I10" in codes or "I10" in {d.code for d in self.chronic}
            systolic = round(rng.gauss(148 if hypertensive else 118 + age * 0.2, 12))
            diastolic = round(min(systolic - 25, rng.gauss(90 if hypertensive else 76, 8)))
            bp = self._observation(
                f"{prefix}-bp", "85354-9", "Blood pressure panel with all children optional",
                "血压", "vital-signs", when, encounter,
            )  # fmt: skip
            bp["component"] = [
                {
                    "code": {"coding": [_coding(LOINC, "8480-6", "Systolic blood pressure")],
                             "text": "收缩压"},
                    "valueQuantity": _quantity(systolic, "mm[Hg]"),
                },
                {
                    "code": {"coding": [_coding(LOINC, "8462-4", "Diastolic blood pressure")],
                             "text": "舒张压"},
                    "valueQuantity": _quantity(diastolic, "mm[Hg]"),
                },
            ]  # fmt: skip
            out.append(bp)
        heart = self._observation(
            f"{prefix}-hr", "8867-4", "Heart rate", "心率", "vital-signs", when, encounter
        )
        heart["valueQuantity"] = _quantity(round(rng.gauss(110 if age < 6 else 76, 9)), "/min")
        out.append(heart)
        fever = bool(codes & {"R50.9", "A90", "J18.9", "J06.9", "J02.9"})
        temperature = self._observation(
            f"{prefix}-t", "8310-5", "Body temperature", "体温", "vital-signs", when, encounter
        )
        celsius = rng.uniform(37.8, 39.6) if fever else rng.gauss(36.6, 0.25)
        temperature["valueQuantity"] = _quantity(round(celsius, 1), "Cel")
        out.append(temperature)
        if v.cls != "EMER":
            weight = self._observation(
                f"{prefix}-w", "29463-7", "Body weight", "体重", "vital-signs", when, encounter
            )
            weight["valueQuantity"] = _quantity(round(_weight(age, self.p.sex, rng), 1), "kg")
            out.append(weight)
        self.resources.extend(out)

    def _report(
        self, rid: str, panel: str, drawn: datetime, encounter: dict[str, str], v: _Visit
    ) -> None:
        rng = self.rng
        code, display, chinese, members = PANELS[panel]
        codes = {d.code for d in v.diagnoses} | {d.code for d in self.chronic}
        results = []
        for k, loinc in enumerate(members, start=1):
            test = TESTS[loinc]
            value = round(_lab_value(test, codes, self.p.sex, rng), test.decimals)
            if test.decimals == 0:
                value = int(value)
            observation = self._observation(
                f"{rid}-o{k}", loinc, test.display, test.chinese, "laboratory", drawn, encounter
            )
            observation["valueQuantity"] = _quantity(value, test.unit)
            flag = "H" if value > test.high else "L" if value < test.low else "N"
            observation["interpretation"] = [{"coding": [_coding(INTERPRETATION, flag)]}]
            observation["referenceRange"] = [
                {"low": _quantity(test.low, test.unit), "high": _quantity(test.high, test.unit)}
            ]
            self.resources.append(observation)
            results.append({"reference": f"Observation/{rid}-o{k}"})
        issued = drawn + timedelta(minutes=rng.randint(40, 240))
        self.resources.append(
            {
                "resourceType": "DiagnosticReport",
                "id": rid,
                "status": "final",
                "category": [{"coding": [_coding(V2_0074, "LAB", "Laboratory")]}],
                "code": {"coding": [_coding(LOINC, code, display)], "text": chinese},
                "subject": dict(self.subject),
                "encounter": dict(encounter),
                "effectiveDateTime": _instant(drawn),
                "issued": _instant(issued),
                "performer": [dict(self.provider)],
                "result": results,
            }
        )

    def _prescription(
        self,
        mid: str,
        drug: str,
        start: datetime,
        end: datetime,
        encounter: dict[str, str],
        v: _Visit,
    ) -> None:
        atc, chinese, dose, unit, per_day, route = DRUGS[drug]
        long_term = any(drug in d.drugs for d in v.chronic)
        days = 30 if long_term else self.rng.randint(3, 7)
        recent = (self.gen.as_of - start.date()).days < 90
        self.resources.append(
            {
                "resourceType": "MedicationRequest",
                "id": mid,
                "status": "active" if long_term and recent else "completed",
                "intent": "order",
                "medicationCodeableConcept": {
                    "coding": [_coding(ATC, atc)],
                    "text": chinese,
                },
                "subject": dict(self.subject),
                "encounter": dict(encounter),
                "authoredOn": _instant(end if v.cls == "IMP" else start),
                "dosageInstruction": [
                    {
                        "text": f"{route} {_number(dose)}{unit} 每日{per_day}次",
                        "timing": {
                            "repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}
                        },
                        "route": {"text": route},
                        "doseAndRate": [{"doseQuantity": _quantity(dose, unit)}],
                    }
                ],
                "dispenseRequest": {
                    "expectedSupplyDuration": {
                        "value": days,
                        "unit": "d",
                        "system": UCUM,
                        "code": "d",
                    }
                },
            }
        )

    # -- vaccinations --------------------------------------------------------------------------

    def immunizations(self) -> None:
        rng, p = self.rng, self.p
        first = max(p.registered_on, EARLIEST_VISIT)
        last = self._end()
        doses: list[tuple[date, tuple[str, str]]] = []
        if p.hospital.kind in ("township", "maternal_child") or p.hospital.level == 1:
            for cvx, name, months in CHILD_VACCINES:
                on = _add_months(p.birth_date, months) + timedelta(days=rng.randint(0, 20))
                if first <= on <= last:
                    doses.append((on, (cvx, name)))
        age = self.age_at_end
        if age >= 60:
            for year in range(max(first.year, 2018), last.year + 1):
                if rng.random() < 0.35:
                    doses.append(
                        (date(year, 10, 1) + timedelta(days=rng.randint(0, 60)), INFLUENZA)
                    )
            if rng.random() < 0.2:
                doses.append((first + timedelta(days=rng.randint(0, 60)), PNEUMOCOCCAL))
        if age >= 3 and first <= date(2021, 3, 1) and rng.random() < 0.3:
            base = date(2021, 3, 1) + timedelta(days=rng.randint(0, 200))
            doses.extend([(base, COVID), (base + timedelta(days=rng.randint(21, 56)), COVID)])
        if rng.random() < 0.03:
            base = first + timedelta(days=rng.randint(0, 400))
            doses.extend((base + timedelta(days=d), RABIES) for d in (0, 3, 7, 14, 28))
        doses = sorted(d for d in doses if first <= d[0] <= last)
        for k, (on, (cvx, name)) in enumerate(doses, start=1):
            moment = datetime(on.year, on.month, on.day, 1 + rng.randrange(8), tzinfo=UTC)
            self.resources.append(
                {
                    "resourceType": "Immunization",
                    "id": f"{self.pid}-i{k}",
                    "status": "completed",
                    "vaccineCode": {"coding": [_coding(CVX, cvx)], "text": name},
                    "patient": dict(self.subject),
                    "occurrenceDateTime": _instant(moment),
                    "primarySource": True,
                    "lotNumber": f"{2015 + (on.year % 10)}{rng.randrange(10**6):06d}",
                    "performer": [{"actor": dict(self.provider)}],
                }
            )


# --- values ---------------------------------------------------------------------------------


def _valid_id(number: str) -> bool:
    try:
        normalize_national_id(number)
    except InvalidInput:
        return False
    return True


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def _add_months(start: date, months: int) -> date:
    month = start.month - 1 + months
    year = start.year + month // 12
    return date(year, month % 12 + 1, min(start.day, 28))


def _weight(age: float, sex: int, rng: random.Random) -> float:
    if age < 1:
        return max(2.5, rng.gauss(3.3 + age * 6.5, 0.8))
    if age < 14:
        return max(8.0, rng.gauss(8 + age * 2.8, 3))
    return max(35.0, rng.gauss(68 if sex == 1 else 57, 9))


# (diagnosis -> (LOINC -> (mean, sd))) where an illness moves a result.
_SHIFTS: dict[str, dict[str, tuple[float, float]]] = {
    "E11.9": {"14749-6": (8.8, 2.0), "4548-4": (7.6, 1.1), "14927-8": (2.1, 0.8)},
    "E78.5": {"14647-2": (6.2, 0.7), "22748-8": (4.1, 0.6), "14927-8": (2.3, 0.8)},
    "N18.9": {"14682-9": (180, 60), "718-7": (108, 12)},
    "B18.1": {"1742-6": (68, 30), "1920-8": (52, 20)},
    "K76.0": {"1742-6": (58, 20), "14927-8": (2.2, 0.7)},
    "A90": {"777-3": (70, 30), "6690-2": (3.0, 0.8), "1742-6": (75, 30)},
    "J18.9": {"6690-2": (13.5, 3.0), "1988-5": (60, 30)},
    "K35.8": {"6690-2": (14.5, 3.0), "1988-5": (70, 30)},
    "R50.9": {"6690-2": (11, 3.0), "1988-5": (25, 15)},
    "D64.9": {"718-7": (95, 10), "4544-3": (30, 3)},
}


def _lab_value(test: Test, codes: set[str], sex: int, rng: random.Random) -> float:
    for code in codes:
        shift = _SHIFTS.get(code, {}).get(test.loinc)
        if shift is not None:
            return max(0.0, rng.gauss(*shift))
    middle = (test.low + test.high) / 2
    if test.loinc == "718-7":
        middle = 145 if sex == 1 else 130
    if test.loinc == "1988-5":
        return max(0.1, rng.lognormvariate(0.5, 0.8))
    return max(0.0, rng.gauss(middle, (test.high - test.low) / 5))


# --- Bundles ------------------------------------------------------------------------------------

_NAMESPACE = uuid.UUID("4f1c3c5e-6a43-4c47-9d2b-6f0a35a1e0d1")


def _rewrite(value: Any, urls: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "reference" and isinstance(item, str) and item in urls:
                out[key] = urls[item]
            else:
                out[key] = _rewrite(item, urls)
        return out
    if isinstance(value, list):
        return [_rewrite(item, urls) for item in value]
    return value


def transaction_bundle(
    resources: list[Resource], *, hospital: Institution | None = None
) -> Resource:
    """A transaction Bundle of a history: new resources get ``urn:uuid:`` fullUrls (the
    server assigns ids); the Patient is a conditional create on its MRN, so re-sending the
    Bundle does not make a second Patient. With ``hospital``, the hospital's Organization is
    written (``PUT``) too."""
    keys = [f"{r['resourceType']}/{r['id']}" for r in resources]
    urls = {key: f"urn:uuid:{uuid.uuid5(_NAMESPACE, key)}" for key in keys}
    entries: list[dict[str, Any]] = []
    if hospital is not None:
        org = organization(hospital)
        entries.append(
            {
                "fullUrl": f"Organization/{org['id']}",
                "resource": org,
                "request": {"method": "PUT", "url": f"Organization/{org['id']}"},
            }
        )
    for resource in resources:
        key = f"{resource['resourceType']}/{resource['id']}"
        body = _rewrite({k: v for k, v in resource.items() if k != "id"}, urls)
        request: dict[str, Any] = {"method": "POST", "url": resource["resourceType"]}
        if resource["resourceType"] == "Patient":
            mrn = next(i for i in resource["identifier"] if i["system"].startswith(MRN_SYSTEM))
            request["ifNoneExist"] = f"identifier={mrn['system']}|{mrn['value']}"
        entries.append({"fullUrl": urls[key], "resource": body, "request": request})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


# --- files ----------------------------------------------------------------------------------


@dataclass(slots=True)
class ClinicalSummary:
    out_dir: str
    format: str
    seed: int
    people: int
    patients: int = 0
    resources: dict[str, int] = field(default_factory=dict)  # per resource type
    per_hospital: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.resources.values())


def _dumps(resource: Resource) -> str:
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":"))


def write_clinical(
    out_dir: Path | str,
    people: int,
    fmt: Format = "ndjson",
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    as_of: date = DEFAULT_AS_OF,
) -> ClinicalSummary:
    """Write the clinical histories of ``people`` true people, one file per hospital:
    ``OUT/ndjson/CODE.ndjson`` (one resource a line, the Organization first) or
    ``OUT/bundles/CODE.ndjson`` (one transaction Bundle a line, one per patient), and
    ``OUT/manifest.json``. ``progress`` gets the number of people done after each chunk."""
    if people < 1:
        raise InvalidInput("people must be at least 1", expression="people")
    if fmt not in FORMATS:
        raise InvalidInput("format must be ndjson or bundles", expression="format")
    if chunk_size < 1:
        raise InvalidInput("chunk size must be at least 1", expression="chunk_size")
    out = Path(out_dir)
    folder = out / fmt
    folder.mkdir(parents=True, exist_ok=True)
    generator = ClinicalGenerator(seed, as_of=as_of)
    summary = ClinicalSummary(str(out), fmt, seed, people)
    files = {
        h.code: (folder / f"{h.code}.ndjson").open("w", encoding="utf-8")
        for h in generator.hospitals
    }
    started: set[str] = set()
    try:
        if fmt == "ndjson":
            for h in generator.hospitals:
                files[h.code].write(_dumps(organization(h)) + "\n")
                _count(summary, h.code, "Organization", 1)
        for number, chunk in enumerate(generator.patients(people, chunk_size=chunk_size)):
            before = number * chunk_size
            size = min(chunk_size, people - before)
            for k, patient in enumerate(chunk):
                if progress is not None and k % 500 == 0:
                    progress(before + size * k // max(1, len(chunk)))
                code = patient.hospital.code
                resources = generator.history(patient)
                summary.patients += 1
                for resource in resources:
                    _count(summary, code, resource["resourceType"], 1)
                if fmt == "ndjson":
                    files[code].write("".join(_dumps(r) + "\n" for r in resources))
                else:
                    first = code not in started
                    started.add(code)
                    if first:
                        _count(summary, code, "Organization", 1)
                    bundle = transaction_bundle(
                        resources, hospital=patient.hospital if first else None
                    )
                    files[code].write(_dumps(bundle) + "\n")
            if progress is not None:
                progress(before + size)
    finally:
        for handle in files.values():
            handle.close()
    manifest = {
        "seed": seed,
        "people": people,
        "as_of": as_of.isoformat(),
        "chunk_size": chunk_size,
        "format": fmt,
        "patients": summary.patients,
        "resources": dict(sorted(summary.resources.items())),
        "per_hospital": summary.per_hospital,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n")
    return summary


def _count(summary: ClinicalSummary, code: str, resource_type: str, n: int) -> None:
    summary.resources[resource_type] = summary.resources.get(resource_type, 0) + n
    summary.per_hospital[code] = summary.per_hospital.get(code, 0) + n
