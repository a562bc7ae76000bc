"""FHIR Bulk Data `$export`: kick-off, status, NDJSON files, levels, scopes (both databases)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from healthroam.bootstrap import Platform
from healthroam.db.schema import audit_events

from helpers import Province, patient

ALL = "system/*.cruds"
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


def _post(http: TestClient, h: dict[str, str], resource: dict[str, Any]) -> dict[str, Any]:
    response = http.post(f"/fhir/{resource['resourceType']}", json=resource, headers=h)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    body["_mii"] = response.headers.get("X-Master-Index-Id")
    return body


def _observation(subject: str, value: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
        "subject": {"reference": subject},
        "valueQuantity": {"value": value, "unit": "g/L"},
    }


def _export(http: TestClient, h: dict[str, str], path: str) -> str:
    kicked = http.get(path, headers=h | ASYNC)
    assert kicked.status_code == 202, kicked.text
    location = kicked.headers["Content-Location"]
    assert "/fhir/$export-status/" in location
    return location.split("/fhir", 1)[1]


def _manifest(http: TestClient, h: dict[str, str], status_path: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = http.get(f"/fhir{status_path}", headers=h)
        if status.status_code == 200:
            manifest: dict[str, Any] = status.json()
            return manifest
        assert status.status_code == 202, status.text
        assert status.headers["X-Progress"]
        time.sleep(0.05)
    raise AssertionError("the export did not finish")


def _lines(http: TestClient, h: dict[str, str], manifest: dict[str, Any]) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for output in manifest["output"]:
        response = http.get("/fhir" + output["url"].split("/fhir", 1)[1], headers=h)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/fhir+ndjson")
        rows = [json.loads(line) for line in response.text.splitlines()]
        assert len(rows) == output["count"]
        assert all(r["resourceType"] == output["type"] for r in rows)
        found.setdefault(output["type"], []).extend(rows)
    return found


def test_system_export_writes_every_readable_resource_as_ndjson(
    platform: Platform, province: Province, http: TestClient
) -> None:
    h = province.headers(ALL)
    one = _post(http, h, patient("黎阿妹", sequence=124))
    two = _post(http, h, patient("王大明", gender="male", sequence=131, born="1985-02-03"))
    for subject, value in ((one, 120), (one, 125), (two, 140)):
        _post(http, h, _observation(f"Patient/{subject['id']}", value))
    _post(http, h, {"resourceType": "Practitioner", "name": [{"text": "陈医生"}]})

    manifest = _manifest(http, h, _export(http, h, "/fhir/$export"))

    assert manifest["requiresAccessToken"] is True
    assert manifest["request"].endswith("/fhir/$export")
    # Reported a few seconds early, so that a `_since` export from it misses no late commit.
    reported = datetime.fromisoformat(manifest["transactionTime"].replace("Z", "+00:00"))
    assert reported <= datetime.now(UTC) - timedelta(seconds=5)
    files = _lines(http, h, manifest)
    assert sorted(p["id"] for p in files["Patient"]) == sorted([one["id"], two["id"]])
    assert manifest["output"][0]["type"] == "Patient"  # first, so references resolve
    assert sorted(o["valueQuantity"]["value"] for o in files["Observation"]) == [120, 125, 140]
    assert len(files["Practitioner"]) == 1
    assert all(r["meta"]["versionId"] == "1" for rows in files.values() for r in rows)

    # Every person whose data left in the export is audited, once per job.
    platform.audit.seal()
    with platform.db.transaction(readonly=True) as conn:
        exported = (
            conn.execute(
                select(audit_events.c.patient_ref).where(
                    audit_events.c.subtype == "export", audit_events.c.patient_ref.is_not(None)
                )
            )
            .scalars()
            .all()
        )
    assert sorted(exported) == sorted([f"Patient/{one['id']}", f"Patient/{two['id']}"])


def test_type_since_and_file_splitting(
    platform: Platform, province: Province, http: TestClient
) -> None:
    platform.bulk_export.file_max_resources = 2
    h = province.headers(ALL)
    person = _post(http, h, patient(sequence=124))
    _post(http, h, _observation(f"Patient/{person['id']}", 1))
    time.sleep(0.01)
    since = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    time.sleep(0.01)
    for value in (2, 3, 4):
        _post(http, h, _observation(f"Patient/{person['id']}", value))

    manifest = _manifest(
        http, h, _export(http, h, f"/fhir/$export?_type=Observation&_since={since}")
    )
    assert [o["type"] for o in manifest["output"]] == ["Observation", "Observation"]
    assert [o["count"] for o in manifest["output"]] == [2, 1]
    values = sorted(o["valueQuantity"]["value"] for o in _lines(http, h, manifest)["Observation"])
    assert values == [2, 3, 4]


def test_exports_only_what_the_scopes_allow(province: Province, http: TestClient) -> None:
    hospital = province.institution()
    writer = province.headers(ALL, hospital)
    person = _post(http, writer, patient(sequence=124))
    _post(http, writer, _observation(f"Patient/{person['id']}", 1))
    reader = province.headers("system/Observation.rs", hospital)

    manifest = _manifest(http, reader, _export(http, reader, "/fhir/$export"))
    assert [o["type"] for o in manifest["output"]] == ["Observation"]

    refused = http.get("/fhir/$export?_type=Patient", headers=reader | ASYNC)
    assert refused.status_code == 403
    assert refused.json()["issue"][0]["expression"] == ["_type"]


def test_patient_and_group_levels_follow_compartments_and_golden_members(
    province: Province, http: TestClient
) -> None:
    a = province.headers(ALL, province.institution("HA"))
    b = province.headers(ALL, province.institution("HB"))
    commission = province.headers(ALL, province.institution("WJW", kind="agency"))
    at_a = _post(http, a, patient("黎阿妹", sequence=124))
    at_b = _post(http, b, patient("黎阿妹", sequence=124))
    assert at_a["_mii"] == at_b["_mii"]  # the same resident, registered at two hospitals
    other = _post(http, a, patient("王大明", gender="male", sequence=131, born="1985-02-03"))
    for subject in (at_a, other):
        _post(http, a, _observation(f"Patient/{subject['id']}", 100))
    _post(http, b, _observation(f"Patient/{at_b['id']}", 100))
    _post(http, a, {"resourceType": "Practitioner", "name": [{"text": "陈医生"}]})

    everyone = _lines(
        http,
        commission,
        _manifest(http, commission, _export(http, commission, "/fhir/Patient/$export")),
    )
    assert "Practitioner" not in everyone
    assert len(everyone["Patient"]) == 3
    assert len(everyone["Observation"]) == 3

    group = _post(
        http,
        commission,
        {
            "resourceType": "Group",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": f"Patient/{at_a['_mii']}"}}],
        },
    )
    path = f"/fhir/Group/{group['id']}/$export"
    members = _lines(http, commission, _manifest(http, commission, _export(http, commission, path)))
    assert sorted(p["id"] for p in members["Patient"]) == sorted([at_a["id"], at_b["id"]])
    assert {o["subject"]["reference"] for o in members["Observation"]} == {
        f"Patient/{at_a['id']}",
        f"Patient/{at_b['id']}",
    }
    missing = http.get("/fhir/Group/nope/$export", headers=commission | ASYNC)
    assert missing.status_code == 404

    # A hospital exports only what it wrote itself, whatever its scopes.
    own = _lines(http, b, _manifest(http, b, _export(http, b, "/fhir/Patient/$export")))
    assert [p["id"] for p in own["Patient"]] == [at_b["id"]]
    assert [o["subject"]["reference"] for o in own["Observation"]] == [f"Patient/{at_b['id']}"]


def test_kick_off_errors_other_clients_and_cancel(province: Province, http: TestClient) -> None:
    h = province.headers(ALL)
    no_prefer = http.get("/fhir/$export", headers=h)
    assert no_prefer.status_code == 400
    assert no_prefer.json()["issue"][0]["expression"] == ["Prefer"]
    for query, where in (
        ("_outputFormat=text/csv", "_outputFormat"),
        ("_type=Nonsense", "_type"),
        ("_since=yesterday", "_since"),
        ("_typeFilter=Observation%3Fcode%3D1", "_typeFilter"),
    ):
        bad = http.get(f"/fhir/$export?{query}", headers=h | ASYNC)
        assert bad.status_code == 400, query
        assert bad.json()["issue"][0]["expression"] == [where]
    lenient = http.get(
        "/fhir/$export?_typeFilter=x",
        headers=h | ASYNC | {"Prefer": "respond-async, handling=lenient"},
    )
    assert lenient.status_code == 202
    assert http.get("/fhir/$export", headers=ASYNC).status_code == 401

    status_path = _export(http, h, "/fhir/$export")
    stranger = province.headers(ALL)
    assert http.get(f"/fhir{status_path}", headers=stranger).status_code == 404
    manifest = _manifest(http, h, status_path)
    for output in manifest["output"]:
        path = output["url"].split("/fhir", 1)[1]
        assert http.get(f"/fhir{path}", headers=stranger).status_code == 404
    assert (
        http.get(f"/fhir{status_path.replace('status', 'file')}/x.ndjson", headers=h).status_code
        == 404
    )

    assert http.delete(f"/fhir{status_path}", headers=h).status_code == 202
    assert http.get(f"/fhir{status_path}", headers=h).status_code == 404
