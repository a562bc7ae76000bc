"""The read path served from stored JSON text: meta, totals, date windows, audit per patient."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from healthroam.bootstrap import Platform

from helpers import Province, make_patient, post_created

ALL = "system/*.cruds"


def obs(subject: str, value: float = 72, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": subject},
        "effectiveDateTime": "2024-03-01",
        "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": "/min"},
        **extra,
    }


@pytest.fixture
def h(province: Province) -> dict[str, str]:
    return province.headers(ALL)


def test_read_and_search_serve_the_stored_document_with_its_meta(
    http: TestClient, h: dict[str, str]
) -> None:
    pid = make_patient(http, h)
    tagged = obs(
        f"Patient/{pid}",
        meta={"tag": [{"system": "urn:t", "code": "x"}], "profile": ["urn:p"]},
        note=[{"text": '引号 " and \\ 斜杠'}],
    )
    created = post_created(http, h, tagged)
    read = http.get(f"/fhir/Observation/{created['id']}", headers=h)
    assert read.status_code == 200
    body = json.loads(read.content)
    assert body == created
    assert body["meta"]["tag"] == [{"system": "urn:t", "code": "x"}]
    assert body["meta"]["profile"] == ["urn:p"]
    assert body["meta"]["versionId"] == "1"
    assert body["note"] == [{"text": '引号 " and \\ 斜杠'}]
    assert read.headers["content-type"].startswith("application/fhir+json")
    found = http.get(f"/fhir/Observation?subject=Patient/{pid}", headers=h).json()
    assert [e["resource"] for e in found["entry"]] == [created]
    subset = http.get(f"/fhir/Observation?subject=Patient/{pid}&_elements=status", headers=h).json()
    resource = subset["entry"][0]["resource"]
    assert set(resource) == {"resourceType", "id", "meta", "status"}
    assert {"system": "urn:t", "code": "x"} in resource["meta"]["tag"]
    assert any(t["code"] == "SUBSETTED" for t in resource["meta"]["tag"])


def test_total_only_when_the_page_holds_everything_or_when_asked(
    http: TestClient, h: dict[str, str]
) -> None:
    pid = make_patient(http, h)
    for n in range(3):
        post_created(http, h, obs(f"Patient/{pid}", value=60 + n))
    first = http.get("/fhir/Observation?_count=2", headers=h).json()
    assert "total" not in first
    assert len(first["entry"]) == 2
    assert any(link["relation"] == "next" for link in first["link"])
    counted = http.get("/fhir/Observation?_count=2&_total=accurate", headers=h).json()
    assert counted["total"] == 3
    whole = http.get("/fhir/Observation?_count=10", headers=h).json()
    assert whole["total"] == 3


def encounter(subject: str, start: str, end: str) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": subject},
        "period": {"start": start, "end": end},
    }


def test_date_window_from_two_bounds(http: TestClient, h: dict[str, str]) -> None:
    pid = make_patient(http, h)
    inside = post_created(
        http, h, encounter(f"Patient/{pid}", "2024-03-05T09:00:00Z", "2024-03-05T10:00:00Z")
    )
    across = post_created(
        http, h, encounter(f"Patient/{pid}", "2024-02-28T09:00:00Z", "2024-03-02T10:00:00Z")
    )
    before = post_created(
        http, h, encounter(f"Patient/{pid}", "2024-02-01T09:00:00Z", "2024-02-02T10:00:00Z")
    )
    after = post_created(
        http, h, encounter(f"Patient/{pid}", "2024-03-08T09:00:00Z", "2024-03-08T10:00:00Z")
    )
    found = http.get("/fhir/Encounter?date=ge2024-03-01&date=lt2024-03-08", headers=h).json()
    got = {e["resource"]["id"] for e in found["entry"]}
    assert got == {inside["id"], across["id"]}
    assert before["id"] not in got
    assert after["id"] not in got
    one_bound = http.get("/fhir/Encounter?date=ge2024-03-06", headers=h).json()
    assert {e["resource"]["id"] for e in one_bound["entry"]} == {after["id"]}


def test_search_audits_one_entry_per_patient_returned(
    platform: Platform, http: TestClient, h: dict[str, str]
) -> None:
    first, second = make_patient(http, h, seq=124), make_patient(http, h, seq=125)
    post_created(http, h, obs(f"Patient/{first}"))
    post_created(http, h, obs(f"Patient/{second}"))
    assert http.get("/fhir/Observation?code=8867-4", headers=h).status_code == 200
    platform.audit.seal()
    rows, _ = platform.audit.search(limit=50)
    searched = {
        r.patient_ref for _, r in rows if r.subtype == "search-type" and r.query == "code=8867-4"
    }
    assert searched == {f"Patient/{first}", f"Patient/{second}"}
