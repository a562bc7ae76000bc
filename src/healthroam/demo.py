"""Demo data for `scripts/up`: the synthetic province's institutions, clients and patients.

Idempotent: running it again keeps what exists (institutions, the demo clients in
``<data_dir>/demo-clients.json``, patients already loaded). The same file holds the demo
clinician's sign-in for the clinician page and a demo resident's card code to scan there.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from healthroam.bootstrap import Platform
from healthroam.cards.model import CardAction
from healthroam.db.schema import fhir_resources
from healthroam.errors import Conflict, InvalidInput, NotFound
from healthroam.registry.idnumber import check_character
from healthroam.registry.names import split_chinese_name
from healthroam.security.model import InstitutionKind, Principal
from healthroam.security.scopes import ScopeSet
from healthroam.synth import places
from healthroam.synth.population import PersonChunk, generate_population

NATIONAL_ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"
PASSPORT_SYSTEM = "urn:healthroam:passport"
AGENCIES = (
    ("HNWJW", "海南省卫生健康委员会"),
    ("HNGXT", "海南省工业和信息化厅"),
    ("HNYBJ", "海南省医疗保障局"),
)
SECOND_HOSPITAL = "second"  # DEMO_CLIENTS institution placeholder: the check-in hospital
DEMO_CLIENTS = {
    # name: (institution, scopes); None is the first hospital
    "hospital": (None, "system/Patient.cruds system/Observation.cruds system/Card.crus"),
    "auditor": ("HNWJW", "system/AuditEvent.rs"),
    "steward": ("HNWJW", "system/MasterPerson.cruds"),
    # cross-institution care (docs/cross-institution-care.md): a terminal and a clinician at a
    # second hospital, where the demo resident was checked in, and a privacy officer.
    "terminal": (SECOND_HOSPITAL, "system/Card.r system/Encounter.c system/Patient.r"),
    "clinician": (SECOND_HOSPITAL, "system/*.rs"),
    "privacy": ("HNWJW", "system/AccessException.rus"),
}


@dataclass(frozen=True, slots=True)
class DemoSummary:
    institutions_added: int
    clients_file: Path
    patients_added: int


def _add_institutions(platform: Platform) -> tuple[int, str, str]:
    added = 0
    hospitals = places.institutions()
    for hospital in hospitals:
        township = hospital.kind == "township"
        try:
            platform.institutions.add(
                code=hospital.code,
                name=hospital.name,
                kind=(
                    InstitutionKind.TOWNSHIP_HEALTH_CENTRE if township else InstitutionKind.HOSPITAL
                ).value,
                region=hospital.region_code,
                level=None if township else hospital.level,
            )
            added += 1
        except Conflict:
            pass
    for code, name in AGENCIES:
        try:
            platform.institutions.add(code=code, name=name, kind="agency", region="460000")
            added += 1
        except Conflict:
            pass
    second = next((h.code for h in hospitals[1:] if h.kind != "township"), hospitals[-1].code)
    return added, hospitals[0].code, second


def _ensure_clients(platform: Platform, first_hospital: str, second_hospital: str) -> Path:
    path = platform.settings.data_dir / "demo-clients.json"
    known = {c.client_id for c in platform.clients.list()}
    saved: dict[str, Any] = {}
    if path.exists():
        saved = json.loads(path.read_text())
        if all(
            isinstance(saved.get(label), dict) and saved[label].get("client_id") in known
            for label in DEMO_CLIENTS
        ):
            return path
    # Keep the clinician_page and resident entries: their accounts and records still exist.
    clients: dict[str, Any] = {k: v for k, v in saved.items() if k not in DEMO_CLIENTS}
    for label, (institution, scopes) in DEMO_CLIENTS.items():
        code = second_hospital if institution == SECOND_HOSPITAL else institution
        created = platform.clients.add(
            institution_code=code or first_hospital, scopes=scopes, name=f"demo {label}"
        )
        clients[label] = {
            "client_id": created.client.client_id,
            "client_secret": created.client_secret,
            "institution": created.client.institution_code,
            "scope": str(created.client.scopes),
        }
    _write_private(path, clients)
    return path


DEMO_CLINICIAN = ("demo.doctor", "演示医生")
DEMO_RESIDENT_ID = "460106198503150000"[:17]  # completed with its check character below


def _write_private(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, ensure_ascii=False)


def _ensure_clinician(platform: Platform, path: Path, hospital: str) -> None:
    """A clinician of the first hospital for the clinician page (a new password each time
    the file lacks one)."""
    saved: dict[str, Any] = json.loads(path.read_text())
    username, display_name = DEMO_CLINICIAN
    entry = saved.get("clinician_page")
    try:
        platform.clinicians.get(username)
        exists = True
    except NotFound:
        exists = False
    if exists and isinstance(entry, dict) and entry.get("password"):
        return
    password = secrets.token_urlsafe(12)
    if exists:
        platform.clinicians.set_password(username, password)
    else:
        platform.clinicians.add(
            username=username,
            display_name=display_name,
            institution_code=hospital,
            password=password,
        )
    saved["clinician_page"] = {
        "url": platform.settings.public_base_url.rstrip("/") + "/clinician/",
        "username": username,
        "password": password,
        "institution": hospital,
    }
    _write_private(path, saved)


def _coded(system: str, code: str, text: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}], "text": text}


def _ensure_resident(platform: Platform, path: Path, hospitals: tuple[str, str]) -> None:
    """One resident with records at two hospitals and an active card whose static QR code
    the demo clinician can type (or scan) into the clinician page."""
    saved: dict[str, Any] = json.loads(path.read_text())
    if isinstance(saved.get("resident"), dict):
        return
    id_number = DEMO_RESIDENT_ID + check_character(DEMO_RESIDENT_ID)
    patient_ids: list[str] = []
    master_index_id = ""
    for hospital in hospitals:
        his = Principal(
            client_id="demo-loader",
            institution_code=hospital,
            scopes=ScopeSet.parse("system/*.cruds system/Card.cruds"),
            purpose_of_use="HOPERAT",
            end_user="healthroam-demo",
        )
        created = platform.records.create(
            his,
            "Patient",
            {
                "resourceType": "Patient",
                "name": [{"use": "official", "text": "陈海", "family": "陈", "given": ["海"]}],
                "identifier": [{"system": NATIONAL_ID_SYSTEM, "value": id_number}],
                "gender": "male",
                "birthDate": "1985-03-15",
            },
        )
        assert created.registration is not None
        master_index_id = created.registration.master_index_id
        patient_ids.append(created.stored.id)
    first, second = (
        Principal(
            client_id="demo-loader",
            institution_code=h,
            scopes=ScopeSet.parse("system/*.cruds system/Card.cruds"),
            purpose_of_use="HOPERAT",
            end_user="healthroam-demo",
        )
        for h in hospitals
    )
    p1, p2 = (f"Patient/{pid}" for pid in patient_ids)
    snomed, loinc = "http://snomed.info/sct", "http://loinc.org"
    for who, resource in (
        (
            first,
            {
                "resourceType": "AllergyIntolerance",
                "patient": {"reference": p1},
                "code": _coded(snomed, "764146007", "青霉素"),
                "criticality": "high",
                "recordedDate": "2019-06-02",
            },
        ),
        (
            second,
            {
                "resourceType": "Condition",
                "subject": {"reference": p2},
                "code": _coded(snomed, "44054006", "2型糖尿病"),
                "onsetDateTime": "2021-09-10",
            },
        ),
        (
            second,
            {
                "resourceType": "MedicationStatement",
                "status": "active",
                "subject": {"reference": p2},
                "medicationCodeableConcept": {"text": "二甲双胍缓释片 0.5g"},
                "effectiveDateTime": "2021-09-10",
                "dosage": [{"text": "每日两次，每次1片"}],
            },
        ),
        (
            second,
            {
                "resourceType": "Observation",
                "status": "final",
                "subject": {"reference": p2},
                "code": _coded(loinc, "4548-4", "糖化血红蛋白"),
                "effectiveDateTime": "2026-10-28T09:15:00+08:00",
                "valueQuantity": {
                    "value": 7.1,
                    "unit": "%",
                    "system": "http://unitsofmeasure.org",
                    "code": "%",
                },
            },
        ),
        (
            first,
            {
                "resourceType": "Immunization",
                "status": "completed",
                "patient": {"reference": p1},
                "vaccineCode": {"text": "乙型肝炎疫苗"},
                "occurrenceDateTime": "2020-04-01",
            },
        ),
    ):
        platform.records.create(who, str(resource["resourceType"]), resource)
    card = platform.cards.apply(first, master_index_id=master_index_id, kind="electronic")
    platform.cards.act(first, card.id, CardAction.ISSUE)
    card = platform.cards.act(first, card.id, CardAction.ACTIVATE)
    saved["resident"] = {
        "master_index_id": master_index_id,
        "card_id": card.id,
        "static_code": card.static_code,
    }
    _write_private(path, saved)


def _iso(value: Any) -> str | None:
    text = str(value)
    return None if text in ("NaT", "None") else text


def patient_resources(chunk: PersonChunk) -> Iterator[dict[str, Any]]:
    """FHIR Patients for a chunk of the true population (as a hospital would register them)."""
    columns = {
        name: getattr(chunk, name).to_pylist()
        for name in ("name", "id_number", "passport", "address", "phone")
    }
    for i in range(len(chunk)):
        full_name = columns["name"][i]
        patient: dict[str, Any] = {"resourceType": "Patient", "active": True}
        try:
            split = split_chinese_name(full_name)
            human: dict[str, Any] = {"use": "official", "text": full_name}
            if split.surname:
                human["family"] = split.surname
            if split.given:
                human["given"] = [split.given]
        except InvalidInput:  # a Latin name of a foreign resident
            parts = full_name.split()
            human = {
                "use": "official",
                "text": full_name,
                "family": parts[-1],
                "given": parts[:-1] or [parts[-1]],
            }
        patient["name"] = [human]
        if columns["id_number"][i]:
            patient["identifier"] = [
                {"system": NATIONAL_ID_SYSTEM, "value": columns["id_number"][i]}
            ]
        elif columns["passport"][i]:
            patient["identifier"] = [{"system": PASSPORT_SYSTEM, "value": columns["passport"][i]}]
        patient["gender"] = {1: "male", 2: "female"}.get(int(chunk.sex[i]), "unknown")
        birth = _iso(chunk.birth_date[i])
        if birth:
            patient["birthDate"] = birth
        death = _iso(chunk.death_date[i])
        if death:
            patient["deceasedDateTime"] = death
        if columns["phone"][i]:
            patient["telecom"] = [
                {"system": "phone", "value": columns["phone"][i], "use": "mobile"}
            ]
        if columns["address"][i]:
            patient["address"] = [{"use": "home", "text": columns["address"][i]}]
        yield patient


def load_demo(
    platform: Platform,
    *,
    people: int = 200,
    seed: int = 2026,
    progress: Callable[[int], None] | None = None,
) -> DemoSummary:
    added, first_hospital, second_hospital = _add_institutions(platform)
    clients_file = _ensure_clients(platform, first_hospital, second_hospital)
    platform.keys.init()  # card keys (root, issuing, trust list, EHC, QR): idempotent
    _ensure_clinician(platform, clients_file, first_hospital)
    with platform.db.transaction(readonly=True) as conn:
        existing = conn.execute(
            select(func.count())
            .select_from(fhir_resources)
            .where(fhir_resources.c.resource_type == "Patient")
        ).scalar_one()
    loaded = 0
    if existing == 0 and people > 0:
        loader = Principal(
            client_id="demo-loader",
            institution_code=first_hospital,
            scopes=ScopeSet.parse("system/Patient.c"),
            purpose_of_use="HOPERAT",
            end_user="healthroam-demo",
        )
        first_resident: str | None = None
        for chunk in generate_population(people, seed, as_of=date(2026, 11, 1)):
            for patient in patient_resources(chunk):
                created = platform.records.create(loader, "Patient", patient)
                if first_resident is None and created.registration and _has_national_id(patient):
                    first_resident = created.stored.id
                    _record_and_check_in(
                        platform,
                        first_hospital,
                        second_hospital,
                        created.stored.id,
                        created.registration.master_index_id,
                    )
                loaded += 1
                if progress:
                    progress(1)
    _ensure_resident(platform, clients_file, (first_hospital, second_hospital))
    return DemoSummary(added, clients_file, loaded)


def _has_national_id(patient: dict[str, Any]) -> bool:
    return any(i.get("system") == NATIONAL_ID_SYSTEM for i in patient.get("identifier", []))


def _record_and_check_in(
    platform: Platform, first: str, second: str, patient_id: str, master_index_id: str
) -> None:
    """One demo resident with a record at the first hospital, a card, and a card check-in at
    the second: its clinician (demo client "clinician") then sees the first's record."""
    writer = Principal(
        client_id="demo-loader",
        institution_code=first,
        scopes=ScopeSet.parse("system/*.c"),
        end_user="healthroam-demo",
    )
    subject = {"reference": f"Patient/{patient_id}"}
    snomed = "http://snomed.info/sct"
    for resource in (
        {
            "resourceType": "Condition",
            "subject": subject,
            "code": {"coding": [{"system": snomed, "code": "38341003"}], "text": "高血压"},
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                        "code": "active",
                    }
                ]
            },
            "onsetDateTime": "2021-04-02",
        },
        {
            "resourceType": "AllergyIntolerance",
            "patient": subject,
            "code": {"coding": [{"system": snomed, "code": "91936005"}], "text": "青霉素过敏"},
            "criticality": "high",
        },
        {
            "resourceType": "Observation",
            "status": "final",
            "subject": subject,
            "code": {
                "coding": [{"system": "http://loinc.org", "code": "4548-4"}],
                "text": "糖化血红蛋白",
            },
            "effectiveDateTime": "2026-10-20",
            "valueQuantity": {"value": 6.8, "unit": "%"},
        },
    ):
        platform.records.create(writer, str(resource["resourceType"]), resource)
    clerk = Principal(
        client_id="demo-loader",
        institution_code=AGENCIES[0][0],
        scopes=ScopeSet.parse("system/Card.cruds"),
        end_user="healthroam-demo",
    )
    card = platform.cards.apply(clerk, master_index_id=master_index_id, kind="electronic")
    platform.cards.act(clerk, card.id, CardAction.ISSUE)
    platform.cards.act(clerk, card.id, CardAction.ACTIVATE, "demo")
    terminal = Principal(
        client_id="demo-loader",
        institution_code=second,
        scopes=ScopeSet.parse("system/Card.r system/Encounter.c"),
        end_user="healthroam-demo",
    )
    platform.care.check_in(
        terminal,
        text=platform.cards.dynamic_code(clerk, card.id),
        terminal="DEMO-REG-1",
        purpose="outpatient",
    )
