"""The hospital simulator against the real server and a real gateway (real HL7 mapping): half
the hospitals send HL7 v2 over MLLP, half FHIR transaction Bundles and health-card check-ins
over HTTP; every kind of traffic arrives in the record store, the card uses are logged and the
check-ins make care relationships."""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from healthroam.bootstrap import Platform
from healthroam.cli import app as cli_app
from healthroam.config import Settings, get_settings
from healthroam.exchange.hl7.gateway import GatewayConfig, running_gateway
from healthroam.exchange.hl7.handlers import platform_dispatcher
from healthroam.exchange.hl7.service import GatewayService
from healthroam.exchange.recognition.model import CHINA_TIME
from healthroam.exchange.simulator import (
    CallTally,
    SimulatorConfig,
    Summary,
    hospitals,
    setup_senders,
    simulate,
)
from healthroam.exchange.simulator_api import (
    BUNDLE,
    CARD,
    CARD_AGENCY,
    CHECK_IN,
    SUMMARY,
    ApiOptions,
    api_hospitals,
    load_credentials,
    setup_api_clients,
)

from servers import bearer_token


def _total(http: httpx.Client, headers: dict[str, str], path: str, **params: str) -> int:
    found = http.get(path, params={**params, "_count": "0"}, headers=headers)
    assert found.status_code == 200, found.text
    total: int = found.json()["total"]
    return total


def test_hl7_and_fhir_hospitals_with_card_check_ins(
    platform: Platform,
    settings: Settings,
    server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    every = hospitals(4)
    on_fhir = api_hospitals(every, 0.5)
    on_hl7 = [h for h in every if h not in on_fhir]
    assert len(on_fhir) == 2
    assert len(on_hl7) == 2
    clients_file = tmp_path / "simulator-clients.json"
    assert setup_senders(platform, 4) == 4
    assert setup_api_clients(platform, on_fhir, clients_file) == 3  # two HIS, the card office
    assert setup_api_clients(platform, on_fhir, clients_file) == 0  # idempotent
    assert clients_file.stat().st_mode & 0o077 == 0  # secrets: owner only
    credentials = load_credentials(clients_file)

    def enough(summary: Summary) -> None:
        """Stop once every kind of traffic flowed (the first messages are slow: the mapping,
        the FHIR definitions and the card keys load on first use)."""
        calls = summary.calls
        if (
            summary.sent >= 24
            and calls.get(BUNDLE, CallTally()).ok >= 6
            and calls.get(SUMMARY, CallTally()).ok >= 2
        ):
            stop.set()

    stop = threading.Event()
    dispatcher = platform_dispatcher(platform.records, platform.registry, platform.recognition)
    service = GatewayService(platform.db, dispatcher)
    with running_gateway(service, GatewayConfig(port=0)) as gateway:
        assert gateway.port is not None
        summary = simulate(
            SimulatorConfig(
                port=gateway.port,
                count=4,
                rate=40,
                seconds=180,  # at most; normally stopped by enough()
                people=60,
                api=ApiOptions(server, credentials, fhir_share=0.5, check_in_share=1.0),
            ),
            stop=stop,
            on_message=enough,
        )
    assert stop.is_set(), summary

    # HL7 hospitals: every message acknowledged AA by the real mapping.
    assert summary.codes == {"AA": summary.sent}
    # FHIR hospitals: Bundles, first cards, check-ins and summaries, none refused.
    for kind in (BUNDLE, CARD, CHECK_IN, SUMMARY):
        tally = summary.calls[kind]
        assert tally.sent >= 1, kind
        assert tally.errors == 0, (kind, tally.statuses, tally.first_error)
        assert tally.percentile(0.95) > 0
    bundles = summary.calls[BUNDLE].ok

    # What arrived, read back by an agency through the real server.
    reader = platform.clients.add(
        institution_code=CARD_AGENCY, scopes="system/*.rs system/CardUsage.r"
    )
    assert reader.client_secret is not None
    headers = bearer_token(server, reader.client.client_id, reader.client_secret)
    with httpx.Client(base_url=server, timeout=30) as http:
        for hospital in every:
            mrn = f"urn:healthroam:mrn:{hospital.code}|"
            patients = http.post(
                "/fhir/Patient/_search", data={"identifier": mrn, "_count": "0"}, headers=headers
            )
            assert patients.status_code == 200, patients.text
            assert patients.json()["total"] >= 1, hospital.code
            chained = {"subject:Patient.identifier": mrn}
            assert _total(http, headers, "/fhir/Observation", **chained) >= 1, hospital.code
            assert _total(http, headers, "/fhir/ServiceRequest", **chained) >= 1, hospital.code
            assert _total(http, headers, "/fhir/DiagnosticReport", **chained) >= 1, hospital.code
        # Each FHIR visit is one Encounter with the simulator's visit identifier, plus one
        # Encounter per check-in.
        visits = sum(
            _total(
                http,
                headers,
                "/fhir/Encounter",
                identifier=f"urn:healthroam:simulator:visit:{h.code}|",
            )
            for h in on_fhir
        )
        assert visits == bundles
        check_ins = _total(http, headers, "/fhir/Encounter", identifier="urn:healthroam:check-in|")
        assert check_ins == summary.calls[CHECK_IN].ok

        # The card uses are logged (用卡监控) at the FHIR hospitals, step 01 registration.
        today = datetime.now(CHINA_TIME).date().isoformat()
        usage = http.get("/cards/usage", params={"date": today}, headers=headers)
        assert usage.status_code == 200, usage.text
        rows: list[dict[str, Any]] = usage.json()["rows"]
        accepted = {r["institution"]: r["accepted"] for r in rows if r["step"] == "01"}
        assert sum(accepted.values()) == check_ins
        assert set(accepted) <= {h.code for h in on_fhir}
        assert not any(r["refused"] for r in rows)

        # Each check-in made a care relationship, found from the audited check-in.
        his = {credentials[h.code].client_id: h.code for h in on_fhir}
        checked = [
            r
            for client_id in his
            for _, r in platform.audit.search(client_id=client_id, limit=1000)[0]
            if r.subtype == "check-in"
        ]
        assert len(checked) == check_ins
        record = checked[0]
        assert record.patient_ref is not None
        mii = record.patient_ref.removeprefix("Patient/")
        found = http.get(f"/care/patients/{mii}/relationships", headers=headers)
        assert found.status_code == 200, found.text
        reasons = {(r["institution"], r["reason"]) for r in found.json()["relationships"]}
        assert (record.institution_code, "check-in") in reasons

    # The command: --setup adds the missing hospital's client, reuses the rest; the report
    # has a row per kind.
    for name, value in (
        ("HEALTHROAM_DATABASE_URL", settings.database_url),
        ("HEALTHROAM_DATA_DIR", str(settings.data_dir)),
        ("HEALTHROAM_TOKEN_SIGNING_KEY_FILE", str(settings.signing_key_path)),
    ):
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        missing = CliRunner().invoke(
            cli_app,
            ["simulate", "hospitals", "--api", server, "--clients-file", str(tmp_path / "none")],
        )
        assert missing.exit_code != 0
        assert "run with --setup first" in missing.output
        ran = CliRunner().invoke(
            cli_app,
            [
                "simulate",
                "hospitals",
                "--setup",
                "--count",
                "2",
                "--seconds",
                "4",
                "--rate",
                "4",
                "--api",
                server,
                "--fhir-share",
                "1",
                "--check-in-share",
                "0",
                "--clients-file",
                str(clients_file),
            ],
        )
    finally:
        get_settings.cache_clear()
    assert ran.exit_code == 0, ran.output
    assert "API clients created: 1" in ran.output
    bundle_row = next(line for line in ran.output.splitlines() if "FHIR Bundle" in line)
    assert bundle_row.split("│")[4].strip() == "0"  # no errors
