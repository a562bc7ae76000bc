"""The real server over a real socket: `python -m healthroam serve` on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from healthroam.bootstrap import Platform
from healthroam.config import Settings
from healthroam.db.schema import audit_events


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHROAM_")}
    env.update(
        HEALTHROAM_DATABASE_URL=settings.database_url,
        HEALTHROAM_DATA_DIR=str(settings.data_dir),
        HEALTHROAM_TOKEN_SIGNING_KEY_FILE=str(settings.signing_key_path),
        **extra,
    )
    return env


@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "healthroam", "serve", "--port", str(port)],
        env=_env(settings, HEALTHROAM_PUBLIC_BASE_URL=base),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    else:
        process.kill()
        raise AssertionError((tmp_path / "server.log").read_text())
    yield base
    process.terminate()
    process.wait(timeout=10)
    log.close()
    server_log = (tmp_path / "server.log").read_text()
    # Personal data never reaches the application log.
    assert "460106" not in server_log
    assert "黎" not in server_log


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
        env=_env(settings),
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
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "kind must be one of" in result.stderr
    assert "Traceback" not in result.stderr
