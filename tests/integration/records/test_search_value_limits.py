"""Searches with many ORed values: up to the limit they are answered on both backends (SQLite
refused about 600 in one parameter with "Expression tree is too large" and the server answered
500); past it the request is refused with an OperationOutcome naming the parameter."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from healthroam.records.search import MAX_VALUES

from helpers import Province, make_patient, post_created

LOINC = "http://loinc.org"


@pytest.fixture
def h(province: Province) -> dict[str, str]:
    return province.headers("system/*.cruds")


def _obs(subject: str, code: str, value: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": subject},
        "effectiveDateTime": "2024-03-01",
        "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": "/min"},
    }


def _ids(r: Any) -> set[str]:
    assert r.status_code == 200, r.text
    return {e["resource"]["id"] for e in r.json().get("entry", [])}


@pytest.mark.parametrize(
    ("name", "many", "hit"),
    [
        ("code", lambda n: f"{LOINC}|x{n}", f"{LOINC}|718-7"),  # token, system and code
        ("code", lambda n: f"x{n}", "718-7"),  # token, code only
        ("code:not", lambda n: f"x{n}", "8867-4"),  # a negated OR
        ("value-quantity", lambda n: f"{9000 + n}", "72"),  # quantity
        ("date", lambda n: f"{1900 + n % 100}-01-{1 + n % 28:02d}", "2024-03-01"),  # date
    ],
)
def test_a_thousand_values_are_answered(
    http: TestClient, h: dict[str, str], name: str, many: Any, hit: str
) -> None:
    pid = make_patient(http, h)
    kept = post_created(http, h, _obs(f"Patient/{pid}", "718-7", 72))["id"]
    other = post_created(http, h, _obs(f"Patient/{pid}", "8867-4", 80))["id"]
    values = ",".join([*(many(n) for n in range(MAX_VALUES - 2)), hit])
    r = http.post(
        "/fhir/Observation/_search",
        data={name: values, "subject": f"Patient/{pid}", "_count": "50"},
        headers=h,
    )
    found = _ids(r)
    assert kept in found
    if name != "date":  # both are on that date
        assert other not in found


def test_a_thousand_subjects_and_ids(http: TestClient, h: dict[str, str]) -> None:
    pid = make_patient(http, h)
    oid = post_created(http, h, _obs(f"Patient/{pid}", "718-7", 72))["id"]
    subjects = ",".join([*(f"Patient/p{n}" for n in range(MAX_VALUES - 1)), f"Patient/{pid}"])
    assert _ids(http.post("/fhir/Observation/_search", data={"subject": subjects}, headers=h)) == {
        oid
    }
    ids = ",".join([*(f"id{n}" for n in range(MAX_VALUES - 1)), oid])
    assert _ids(http.post("/fhir/Observation/_search", data={"_id": ids}, headers=h)) == {oid}


@pytest.mark.parametrize(
    "data",
    [
        {"code": ",".join(f"x{n}" for n in range(MAX_VALUES + 1))},
        {"code": ",".join(f"x{n}" for n in range(600)), "subject": ",".join(["Patient/a"] * 401)},
    ],
)
def test_past_the_limit_the_search_is_refused_naming_the_parameter(
    http: TestClient, h: dict[str, str], data: dict[str, str]
) -> None:
    r = http.post("/fhir/Observation/_search", data=data, headers=h)
    assert r.status_code == 400, r.text
    issue = r.json()["issue"][0]
    assert issue["severity"] == "error"
    assert f"at most {MAX_VALUES:,} values" in issue["diagnostics"]
    assert issue["expression"] == [list(data)[-1]]
