"""$everything on a stored Patient and on the golden Patient across institutions."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from healthroam.bootstrap import Platform

from helpers import Province, patient


def _observation(patient_id: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "valueQuantity": {
            "value": 5.4,
            "unit": "mmol/L",
            "system": "http://unitsofmeasure.org",
            "code": "mmol/L",
        },
    }


def _setup(province: Province, http: TestClient) -> tuple[dict[str, str], str, str, str]:
    """Two hospitals register the same person; the first has them in an active encounter
    (a care relationship, so it sees the second's data: docs/cross-institution-care.md)."""
    scope = "system/Patient.cruds system/Observation.cruds system/Encounter.cruds"
    h1 = province.headers(scope, institution=province.institution("H901"))
    h2 = province.headers(scope)
    p1 = http.post("/fhir/Patient", json=patient("陈海", gender="male", sequence=171), headers=h1)
    p2 = http.post("/fhir/Patient", json=patient("陈海", gender="male", sequence=171), headers=h2)
    assert p1.headers["x-master-index-id"] == p2.headers["x-master-index-id"]
    id1, id2 = p1.json()["id"], p2.json()["id"]
    for headers, pid, code in ((h1, id1, "2345-7"), (h2, id2, "2093-3"), (h2, id2, "4548-4")):
        assert (
            http.post(
                "/fhir/Observation", json=_observation(pid, code), headers=headers
            ).status_code
            == 201
        )
    encounter = {
        "resourceType": "Encounter",
        "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{id1}"},
    }
    assert http.post("/fhir/Encounter", json=encounter, headers=h1).status_code == 201
    return h1, p1.headers["x-master-index-id"], id1, id2


def test_stored_patient_everything(province: Province, http: TestClient) -> None:
    h1, _, id1, _ = _setup(province, http)
    bundle = http.get(f"/fhir/Patient/{id1}/$everything", headers=h1).json()
    types = sorted(e["resource"]["resourceType"] for e in bundle["entry"])
    assert types == ["Encounter", "Observation", "Patient"]
    only = http.get(f"/fhir/Patient/{id1}/$everything?_type=Observation", headers=h1).json()
    assert [e["resource"]["resourceType"] for e in only["entry"]] == ["Observation"]


def test_golden_everything_spans_institutions_and_pages(
    platform: Platform, province: Province, http: TestClient
) -> None:
    h1, mii, id1, id2 = _setup(province, http)
    bundle = http.get(f"/fhir/Patient/{mii}/$everything", headers=h1).json()
    assert bundle["total"] == 6
    subjects = {e["resource"].get("subject", {}).get("reference") for e in bundle["entry"]}
    assert {f"Patient/{id1}", f"Patient/{id2}"} <= subjects
    page = http.get(f"/fhir/Patient/{mii}/$everything?_count=4", headers=h1).json()
    assert len(page["entry"]) == 4
    nxt = next(link["url"] for link in page["link"] if link["relation"] == "next")
    rest = http.get(nxt, headers=h1).json()
    seen = {e["fullUrl"] for e in page["entry"]} | {e["fullUrl"] for e in rest["entry"]}
    assert len(seen) == 6
    # Without Observation read scope, observations are left out.
    narrow = province.headers("system/Patient.r system/Encounter.r", institution="H901")
    limited = http.get(f"/fhir/Patient/{mii}/$everything", headers=narrow).json()
    assert {e["resource"]["resourceType"] for e in limited["entry"]} == {"Patient", "Encounter"}
    # The read is audited for the person and each source Patient.
    events = platform.audit.search(patient_ref=f"Patient/{mii}")[0]
    assert any(record.subtype == "everything" for _, record in events)


def test_golden_everything_follows_a_split(province: Province, http: TestClient) -> None:
    h1, mii, _, id2 = _setup(province, http)
    province.institution("HNWJW", kind="agency")
    steward = {
        **province.headers("system/MasterPerson.cruds", institution="HNWJW"),
        "X-End-User": "steward-1",
    }
    person = http.get(f"/registry/persons/{mii}", headers=steward).json()
    second = next(s["id"] for s in person["source_records"] if s["fhir_patient_id"] == id2)
    split = http.post(
        f"/registry/persons/{mii}/$split",
        headers=steward,
        json={"sourceRecords": [second], "reason": "two people"},
    )
    assert split.status_code == 200, split.text
    assert http.get(f"/fhir/Patient/{mii}/$everything", headers=h1).json()["total"] == 3
    new_person = split.json()["new_person"]
    # The first hospital's care relationship was with the person it saw, not the split-off one.
    assert http.get(f"/fhir/Patient/{new_person}/$everything", headers=h1).status_code == 403
    glass = {**h1, "X-Break-Glass-Reason": "checking the record after a split"}
    assert http.get(f"/fhir/Patient/{new_person}/$everything", headers=glass).json()["total"] == 3
