"""A resident's record at hospital HA and an issued electronic health card, set up through the
real API, for the cross-institution care tests (tests/integration/care)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from fastapi.testclient import TestClient

from healthroam.bootstrap import Platform

from helpers import Province, patient

WRITER = "system/*.cruds"
TERMINAL = "system/Card.r system/Encounter.c system/Patient.r"
CLINICIAN = "system/*.rs"
CLERK = "system/Card.cruds system/Patient.r"
OFFICER = "system/AccessException.us"
GLASS = "unconscious on arrival, need allergies"


@dataclass
class World:
    mii: str
    patient_id: str  # the source Patient at hospital A
    a: dict[str, str]  # hospital A (level 3) wrote the record
    card_id: str
    clerk: dict[str, str]
    codes: set[str] = field(default_factory=set)  # dynamic codes handed out so far


def _coded(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _record(pid: str) -> list[dict[str, Any]]:
    subject = {"reference": f"Patient/{pid}"}
    snomed, loinc = "http://snomed.info/sct", "http://loinc.org"
    return [
        {
            "resourceType": "Condition",
            "subject": subject,
            "code": _coded(snomed, "44054006", "2型糖尿病"),
            "clinicalStatus": _coded(
                "http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active"
            ),
            "onsetDateTime": "2024-03-01",
        },
        {
            "resourceType": "AllergyIntolerance",
            "patient": subject,
            "code": _coded(snomed, "91936005", "青霉素过敏"),
            "criticality": "high",
            "recordedDate": "2023-05-01",
        },
        {
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "order",
            "subject": subject,
            "medicationCodeableConcept": _coded("urn:oid:2.16.156", "MET", "二甲双胍 0.5g"),
            "authoredOn": "2026-10-01",
        },
        {
            "resourceType": "Observation",
            "status": "final",
            "subject": subject,
            "code": _coded(loinc, "4548-4", "糖化血红蛋白"),
            "effectiveDateTime": "2026-11-20",
            "valueQuantity": {"value": 7.1, "unit": "%"},
        },
        {
            "resourceType": "Immunization",
            "status": "completed",
            "patient": subject,
            "vaccineCode": _coded("urn:oid:2.16.156.vaccine", "HepB", "乙肝疫苗"),
            "occurrenceDateTime": "2020-01-05",
        },
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "subject": subject,
            "description": "出院小结",
            "date": "2026-11-21T10:00:00+08:00",
            "content": [{"attachment": {"contentType": "text/plain", "data": "5Ye66Zmi"}}],
        },
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "IMP",
                "display": "inpatient encounter",
            },
            "subject": subject,
            "period": {"start": "2026-11-15", "end": "2026-11-21"},
        },
    ]


def refusing_consent(patient_id: str) -> dict[str, Any]:
    """The resident's privacy Consent refusing to share their record (recorded against
    ``Patient/<patient_id>``)."""
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "dateTime": "2026-11-01T00:00:00Z",
        "provision": {"type": "deny"},
    }


def _world(platform: Platform, province: Province, http: TestClient) -> World:
    platform.keys.init()
    a = province.headers(WRITER, institution=province.institution("HA"))
    created = http.post("/fhir/Patient", json=patient("林晓梅", sequence=321), headers=a)
    assert created.status_code == 201, created.text
    pid, mii = created.json()["id"], created.headers["x-master-index-id"]
    for resource in _record(pid):
        response = http.post(f"/fhir/{resource['resourceType']}", json=resource, headers=a)
        assert response.status_code == 201, response.text
    clerk = province.headers(CLERK, institution=province.institution("HNWJW", kind="agency"))
    applied = http.post("/cards", json={"masterIndexId": mii, "kind": "electronic"}, headers=clerk)
    assert applied.status_code == 201, applied.text
    card_id = applied.json()["id"]
    assert http.post(f"/cards/{card_id}/$issue", headers=clerk).status_code == 200
    activated = http.post(f"/cards/{card_id}/$activate", json={"reason": "bound"}, headers=clerk)
    assert activated.json()["status"] == "active"
    return World(mii, pid, a, card_id, clerk)


def _dynamic_code(http: TestClient, world: World) -> str:
    """A code not handed out before: a dynamic code carries its time to the second, so two
    asked for within one second are the same code (and the second use is a replay)."""
    while True:
        response = http.post(f"/cards/{world.card_id}/$dynamic-code", headers=world.clerk)
        assert response.status_code == 200, response.text
        text: str = response.json()["text"]
        if text not in world.codes:
            world.codes.add(text)
            return text
        time.sleep(0.1)
