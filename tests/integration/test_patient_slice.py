"""The thin slice: a hospital client creates a Patient and reads it back."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from healthroam.bootstrap import Platform
from healthroam.db.schema import fhir_resource_versions, fhir_resources

from helpers import Province, national_id

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "identifier": [
        {
            "system": "urn:oid:2.16.156.10011.1.3",
            "value": national_id(born="19900101", sequence=124),
        }
    ],
    "name": [
        {"use": "official", "family": "符", "given": ["海燕"]},
        {"use": "usual", "text": "FU Haiyan"},
    ],
    "gender": "female",
    "birthDate": "1990-01-01",
    "telecom": [{"system": "phone", "value": "13800000000", "use": "mobile"}],
    "address": [{"line": ["龙华区滨海大道32号"], "district": "460106", "city": "海口市"}],
    "meta": {"versionId": "99", "tag": [{"system": "urn:test", "code": "demo"}]},
}


def test_create_then_read_round_trip(
    platform: Platform, province: Province, http: TestClient
) -> None:
    client = province.client()
    headers = {"Authorization": f"Bearer {province.token(client)}"}
    created = http.post("/fhir/Patient", json=PATIENT, headers=headers)
    assert created.status_code == 201
    body = created.json()
    assert created.headers["etag"] == 'W/"1"'
    assert created.headers["location"].endswith(f"/fhir/Patient/{body['id']}/_history/1")
    assert body["meta"]["versionId"] == "1"  # the server's version, not the client's
    assert body["meta"]["tag"] == PATIENT["meta"]["tag"]

    read = http.get(f"/fhir/Patient/{body['id']}", headers=headers)
    assert read.status_code == 200
    assert read.json() == body
    for key in ("identifier", "name", "gender", "birthDate", "telecom", "address"):
        assert read.json()[key] == PATIENT[key]

    with platform.db.transaction(readonly=True) as conn:
        row = conn.execute(select(fhir_resources).where(fhir_resources.c.id == body["id"])).one()
        versions = conn.execute(
            select(fhir_resource_versions.c.version).where(
                fhir_resource_versions.c.id == body["id"]
            )
        ).all()
    assert row.institution_code == client.institution
    assert [v.version for v in versions] == [1]


def test_other_institutions_read_the_same_patient(province: Province, http: TestClient) -> None:
    created = http.post("/fhir/Patient", json=PATIENT, headers=province.headers()).json()
    # Another hospital needs a care relationship with the resident (decision 0025) ...
    elsewhere = province.headers("system/Patient.rs")
    assert http.get(f"/fhir/Patient/{created['id']}", headers=elsewhere).status_code == 403
    # ... an agency reads it as its scopes allow.
    agency = province.headers("system/Patient.rs", province.institution(kind="agency"))
    assert http.get(f"/fhir/Patient/{created['id']}", headers=agency).json() == created


def test_capability_statement_lists_what_is_supported(http: TestClient) -> None:
    statement = http.get("/fhir/metadata").json()
    assert statement["fhirVersion"] == "4.0.1"
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    patient_interactions = {i["code"] for i in resources["Patient"]["interaction"]}
    assert {"read", "vread", "create", "update", "patch", "search-type"} <= patient_interactions
    assert "delete" not in patient_interactions  # registry source records are not deleted
    assert {i["code"] for i in resources["Observation"]["interaction"]} >= {"delete", "patch"}
    names = {p["name"] for p in resources["Observation"]["searchParam"]}
    assert {"code", "subject", "date", "value-quantity", "code-value-quantity"} <= names
    assert {i["code"] for i in statement["rest"][0]["interaction"]} == {
        "transaction",
        "batch",
        "history-system",
    }
    assert {i["code"] for i in resources["AuditEvent"]["interaction"]} == {"read", "search-type"}
