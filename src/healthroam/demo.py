"""Demo data for `scripts/up`: the synthetic province's institutions, clients and patients.

Idempotent: running it again keeps what exists (institutions, the demo clients in
``<data_dir>/demo-clients.json``, patients already loaded).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from healthroam.bootstrap import Platform
from healthroam.cards.model import CardAction
from healthroam.db.schema import fhir_resources
from healthroam.errors import Conflict, InvalidInput
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
    if path.exists():
        saved = json.loads(path.read_text())
        if set(saved) == set(DEMO_CLIENTS) and all(
            entry["client_id"] in known for entry in saved.values()
        ):
            return path
    clients: dict[str, Any] = {}
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(clients, handle, indent=2)
    return path


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
