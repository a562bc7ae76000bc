"""NDJSON bulk import: fast path, Patients matched, line errors, idempotent re-sends."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from healthroam.bootstrap import Platform
from healthroam.config import Settings
from healthroam.db.schema import fhir_resources

from helpers import Province, national_id, patient
from servers import server_env

ALL = "system/*.cruds"
NDJSON = {"Content-Type": "application/fhir+ndjson"}


def _observation(oid: str, subject: str, value: float, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
        "subject": {"reference": subject},
        "valueQuantity": {"value": value, "unit": "g/L"},
        **extra,
    }


def _ndjson(*lines: Any) -> bytes:
    return "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines).encode()


def _issues(response: Any) -> tuple[str, list[dict[str, Any]]]:
    assert response.status_code == 200, response.text
    issues = response.json()["issue"]
    return issues[0]["diagnostics"], issues[1:]


def test_import_stores_indexes_and_matches_and_reports_bad_lines(
    province: Province, http: TestClient
) -> None:
    h = province.headers(ALL)
    body = _ndjson(
        patient(id="p1", sequence=124),
        _observation("o1", "Patient/p1", 120),
        "{not json",
        {"resourceType": "Observation", "id": "o2", "code": {"text": "Hb"}},  # no status
        _observation("o3", "Patient/p1", 130),
        {"resourceType": "Nonsense", "id": "x"},
        "",
    )
    summary, errors = _issues(http.post("/fhir/$import", content=body, headers=h | NDJSON))
    assert summary == "created 3, updated 0, unchanged 0, failed 3"
    assert [e["diagnostics"].split(":")[0] for e in errors] == ["line 3", "line 4", "line 6"]
    assert errors[1]["expression"] == ["Observation.status"]

    found = http.get("/fhir/Observation?subject=Patient/p1&code=http://loinc.org|718-7", headers=h)
    assert sorted(e["resource"]["id"] for e in found.json()["entry"]) == ["o1", "o3"]
    # The Patient went through the registry: the master person is there.
    golden = http.get(
        f"/fhir/Patient?identifier=urn:oid:2.16.156.10011.1.3|{national_id(sequence=124)}",
        headers=h,
    )
    assert golden.json()["total"] == 1


def test_resending_is_idempotent_and_changes_become_versions(
    province: Province, http: TestClient
) -> None:
    h = province.headers(ALL)
    lines = [patient(id="p1", sequence=124), _observation("o1", "Patient/p1", 120)]
    first, _ = _issues(http.post("/fhir/$import", content=_ndjson(*lines), headers=h | NDJSON))
    assert first == "created 2, updated 0, unchanged 0, failed 0"
    again, _ = _issues(http.post("/fhir/$import", content=_ndjson(*lines), headers=h | NDJSON))
    assert again == "created 0, updated 0, unchanged 2, failed 0"
    lines[1] = _observation("o1", "Patient/p1", 99)
    changed, _ = _issues(http.post("/fhir/$import", content=_ndjson(*lines), headers=h | NDJSON))
    assert changed == "created 0, updated 1, unchanged 1, failed 0"
    read = http.get("/fhir/Observation/o1", headers=h).json()
    assert read["meta"]["versionId"] == "2"
    assert read["valueQuantity"]["value"] == 99

    # Another hospital cannot overwrite these ids.
    other = province.headers(ALL)
    summary, errors = _issues(
        http.post("/fhir/$import", content=_ndjson(lines[1]), headers=other | NDJSON)
    )
    assert summary.endswith("failed 1")
    assert "another institution" in errors[0]["diagnostics"]
    assert errors[0]["expression"] == ["Observation.id"]
    assert http.get("/fhir/Observation/o1", headers=h).json()["meta"]["versionId"] == "2"


def test_an_agency_may_import_over_a_hospitals_ids_as_a_fhir_update_may(
    platform: Platform, province: Province, http: TestClient
) -> None:
    """The record gate decides, as on PUT: a care provider may not change another
    institution's resource (refused and audited), an agency (the health commission) may."""
    hospital = province.headers(ALL)
    lines = [patient(id="p1", sequence=124), _observation("o1", "Patient/p1", 120)]
    first, _ = _issues(
        http.post("/fhir/$import", content=_ndjson(*lines), headers=hospital | NDJSON)
    )
    assert first == "created 2, updated 0, unchanged 0, failed 0"
    corrected = _observation("o1", "Patient/p1", 121)

    other_hospital = province.institution()
    refused, errors = _issues(
        http.post(
            "/fhir/$import",
            content=_ndjson(corrected),
            headers=province.headers(ALL, other_hospital) | NDJSON,
        )
    )
    assert refused == "created 0, updated 0, unchanged 0, failed 1"
    assert "belongs to another institution" in errors[0]["diagnostics"]
    rows, _ = platform.audit.search(patient_ref="Patient/p1", limit=1000)
    refusals = [r for _, r in rows if r.institution_code == other_hospital and r.outcome == "4"]
    assert [r.subtype for r in refusals] == ["update"]

    agency = province.institution(kind="agency")
    summary, errors = _issues(
        http.post(
            "/fhir/$import",
            content=_ndjson(corrected),
            headers=province.headers(ALL, agency) | NDJSON,
        )
    )
    assert (summary, errors) == ("created 0, updated 1, unchanged 0, failed 0", [])
    stored = http.get("/fhir/Observation/o1", headers=hospital).json()
    assert (stored["meta"]["versionId"], stored["valueQuantity"]["value"]) == ("2", 121)
    with platform.db.engine.connect() as conn:
        owner = conn.execute(
            select(fhir_resources.c.institution_code).where(fhir_resources.c.id == "o1")
        ).scalar_one()
    assert owner != agency  # the writing hospital still owns its corrected resource


def test_import_refusals(province: Province, http: TestClient) -> None:
    h = province.headers(ALL)
    body = _ndjson(_observation("o1", "Patient/p1", 1))
    wrong_type = http.post("/fhir/$import", content=body, headers=h)
    assert wrong_type.status_code == 400
    assert wrong_type.json()["issue"][0]["expression"] == ["Content-Type"]
    reader = province.headers("system/Observation.rs")
    assert http.post("/fhir/$import", content=body, headers=reader | NDJSON).status_code == 403
    only_patients = province.headers("system/Patient.c")
    summary, errors = _issues(
        http.post("/fhir/$import", content=body, headers=only_patients | NDJSON)
    )
    assert summary.endswith("failed 1")
    assert "Observation" in errors[0]["diagnostics"]


def test_cli_import(platform: Platform, settings: Settings, tmp_path: Path) -> None:
    platform.institutions.add(
        code="H001", name="海南省人民医院", kind="hospital", region="460106", level=3
    )
    file = tmp_path / "history.ndjson"
    file.write_bytes(
        _ndjson(
            patient(id="p1", sequence=124),
            _observation("o1", "Patient/p1", 1),
            _observation("o2", "Patient/p1", 2),
            {"resourceType": "Observation", "id": "bad"},
        )
    )
    command = [sys.executable, "-m", "healthroam", "records", "import", str(file)]
    result = subprocess.run(
        [*command, "--institution", "H001", "--operator", "ops1", "-q"],
        env=server_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "created: 3  updated: 0  unchanged: 0  failed: 1" in result.stdout
    assert "history.ndjson line 4:" in result.stderr
    with platform.db.transaction(readonly=True) as conn:
        owners = conn.execute(
            select(fhir_resources.c.institution_code, func.count()).group_by(
                fhir_resources.c.institution_code
            )
        ).all()
    assert owners == [("H001", 3)]
    unknown = subprocess.run(
        [*command, "--institution", "NOPE", "--operator", "ops1", "-q"],
        env=server_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert unknown.returncode == 2
    assert "no institution NOPE" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_a_large_import_leaves_fresh_planner_statistics_and_searches_use_them(
    platform: Platform, province: Province, http: TestClient
) -> None:
    h = province.headers(ALL)
    body = _ndjson(
        *(
            _observation(
                f"o{n}", f"Patient/p{n % 7}", n, effectiveDateTime=f"2024-03-{n % 28 + 1:02d}"
            )
            for n in range(300)
        )
    )
    summary, _ = _issues(http.post("/fhir/$import", content=body, headers=h | NDJSON))
    assert summary == "created 300, updated 0, unchanged 0, failed 0"
    found = http.get("/fhir/Observation?date=ge2024-03-01&date=lt2024-03-02", headers=h)
    assert found.json()["total"] == len([n for n in range(300) if n % 28 == 0])
    if platform.db.dialect == "postgresql":
        with platform.db.transaction(readonly=True) as conn:
            analyzed = conn.execute(
                text(
                    "SELECT relname FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL "
                    "AND relname IN ('fhir_resources', 'fhir_idx_date', 'fhir_idx_token')"
                )
            ).scalars()
            assert sorted(analyzed) == ["fhir_idx_date", "fhir_idx_token", "fhir_resources"]
