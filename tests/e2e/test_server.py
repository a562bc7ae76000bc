"""The real server over a real socket: `python -m healthroam serve` on a free port."""

from __future__ import annotations

import subprocess
import sys

import httpx
from sqlalchemy import select

from healthroam.bootstrap import Platform
from healthroam.config import Settings
from healthroam.db.schema import audit_events

from servers import server_env


def test_hospital_creates_and_reads_a_patient_over_http(platform: Platform, server: str) -> None:
    platform.institutions.add(
        code="H001", name="海南省人民医院", kind="hospital", region="460106", level=3
    )
    client = platform.clients.add(institution_code="H001", scopes="system/Patient.cruds")
    assert client.client_secret
    with httpx.Client(base_url=server, timeout=10) as http:
        assert http.get("/healthz").json()["status"] == "ok"
        token = http.post(
            "/auth/token",
            data={"grant_type": "client_credentials"},
            auth=(client.client.client_id, client.client_secret),
        ).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        created = http.post(
            "/fhir/Patient",
            headers=headers,
            json={
                "resourceType": "Patient",
                "name": [{"family": "黎", "given": ["明"]}],
                "identifier": [
                    {"system": "urn:oid:2.16.156.10011.1.3", "value": "460106200001011234"}
                ],
                "gender": "male",
                "birthDate": "2000-01-01",
            },
        )
        assert created.status_code == 201
        patient_id = created.json()["id"]
        read = http.get(
            f"/fhir/Patient/{patient_id}?identifier=460106200001011234", headers=headers
        )
        assert read.status_code == 200
        assert read.json()["name"] == [{"family": "黎", "given": ["明"]}]
        assert http.get("/fhir/metadata").json()["fhirVersion"] == "4.0.1"
    platform.audit.seal()
    with platform.db.transaction(readonly=True) as conn:
        actions = (
            conn.execute(
                select(audit_events.c.action)
                .where(audit_events.c.patient_ref == f"Patient/{patient_id}")
                .order_by(audit_events.c.seq)
            )
            .scalars()
            .all()
        )
    assert actions == ["C", "R"]


def test_demo_load_then_serve(settings: Settings, server: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "healthroam", "demo", "load", "--people", "20"],
        env=server_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "patients added: 20" in result.stdout
    import json

    clients = json.loads((settings.data_dir / "demo-clients.json").read_text())
    with httpx.Client(base_url=server, timeout=10) as http:
        auditor = http.post(
            "/auth/token",
            data={"grant_type": "client_credentials"},
            auth=(clients["auditor"]["client_id"], clients["auditor"]["client_secret"]),
        ).json()
        events = http.get(
            "/fhir/AuditEvent?_count=5",
            headers={"Authorization": f"Bearer {auditor['access_token']}"},
        ).json()
        assert events["total"] >= 20
        assert events["entry"][0]["resource"]["resourceType"] == "AuditEvent"


def test_cli_reports_bad_input_without_traceback(settings: Settings) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "healthroam",
            "institutions",
            "add",
            "--code",
            "X1",
            "--name",
            "某诊所",
            "--kind",
            "castle",
            "--region",
            "460106",
        ],
        env=server_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "kind must be one of" in result.stderr
    assert "Traceback" not in result.stderr
