"""The audit trail: every read and write of a Patient is recorded, hash-chained, verifiable."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import delete, insert, select, update
from typer.testing import CliRunner

from healthroam.bootstrap import Platform
from healthroam.cli import app as cli_app
from healthroam.config import Settings
from healthroam.db.schema import audit_events, audit_head

from helpers import Province, national_id


def _patient_events(platform: Platform, patient_id: str | None = None) -> list[dict[str, object]]:
    platform.audit.seal()
    condition = (
        audit_events.c.patient_ref == f"Patient/{patient_id}"
        if patient_id
        else audit_events.c.resource_type == "Patient"
    )
    with platform.db.transaction(readonly=True) as conn:
        rows = (
            conn.execute(select(audit_events).where(condition).order_by(audit_events.c.seq))
            .mappings()
            .all()
        )
    return [dict(r) for r in rows]


def _create_and_read(province: Province, http: TestClient, **headers: str) -> str:
    client = province.client()
    auth = {"Authorization": f"Bearer {province.token(client)}", **headers}
    created = http.post(
        "/fhir/Patient",
        headers=auth,
        json={
            "resourceType": "Patient",
            "name": [{"family": "黎", "given": ["阿妹"]}],
            "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": national_id()}],
            "gender": "female",
            "birthDate": "1990-01-01",
        },
    )
    assert created.status_code == 201
    patient_id: str = created.json()["id"]
    assert http.get(f"/fhir/Patient/{patient_id}", headers=auth).status_code == 200
    return patient_id


def test_create_and_read_are_audited_with_who_what_when_why(
    platform: Platform, province: Province, http: TestClient
) -> None:
    patient_id = _create_and_read(
        province, http, **{"X-Purpose-Of-Use": "ETREAT", "X-End-User": "doctor-0042"}
    )
    events = _patient_events(platform, patient_id)
    assert [e["action"] for e in events] == ["C", "R"]
    for event in events:
        assert event["patient_ref"] == f"Patient/{patient_id}"
        assert event["institution_code"]
        assert event["client_id"]
        assert event["end_user"] == "doctor-0042"
        assert event["purpose_of_use"] == "ETREAT"
        assert event["outcome"] == "0"
        assert event["recorded_at"] is not None


def test_unknown_purpose_of_use_is_refused(province: Province, http: TestClient) -> None:
    response = http.get(
        "/fhir/Patient/x", headers={**province.headers(), "X-Purpose-Of-Use": "CURIOSITY"}
    )
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["X-Purpose-Of-Use"]


def test_failed_read_is_audited_as_failure(
    platform: Platform, province: Province, http: TestClient
) -> None:
    assert http.get("/fhir/Patient/missing", headers=province.headers()).status_code == 404
    events = _patient_events(platform)
    assert [(e["action"], e["outcome"], e["resource_id"]) for e in events] == [
        ("R", "4", "missing")
    ]


def _verify(settings: Settings, monkeypatch: object) -> tuple[int, str]:
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setenv("HEALTHROAM_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("HEALTHROAM_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("HEALTHROAM_TOKEN_SIGNING_KEY_FILE", str(settings.signing_key_path))
    from healthroam.config import get_settings

    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli_app, ["audit", "verify"])
    finally:
        get_settings.cache_clear()
    return result.exit_code, result.output


def test_audit_verify_passes_on_an_untouched_trail(
    platform: Platform,
    settings: Settings,
    province: Province,
    http: TestClient,
    monkeypatch: object,
) -> None:
    _create_and_read(province, http)
    code, output = _verify(settings, monkeypatch)
    assert code == 0, output
    assert "intact" in output


def test_audit_verify_catches_an_edited_row(
    platform: Platform,
    settings: Settings,
    province: Province,
    http: TestClient,
    monkeypatch: object,
) -> None:
    _create_and_read(province, http)
    target = _patient_events(platform)[1]["seq"]
    with platform.db.transaction() as conn:
        conn.execute(
            update(audit_events).where(audit_events.c.seq == target).values(purpose_of_use="HPAYMT")
        )
    code, output = _verify(settings, monkeypatch)
    assert code == 1
    assert f"entry {target}: content does not match its hash" in output


def test_audit_verify_catches_a_deleted_row(
    platform: Platform,
    settings: Settings,
    province: Province,
    http: TestClient,
    monkeypatch: object,
) -> None:
    _create_and_read(province, http)
    target = _patient_events(platform)[0]["seq"]
    with platform.db.transaction() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.seq == target))
    code, output = _verify(settings, monkeypatch)
    assert code == 1
    assert "sequence gap" in output


def test_audit_verify_catches_deleted_newest_rows(
    platform: Platform,
    settings: Settings,
    province: Province,
    http: TestClient,
    monkeypatch: object,
) -> None:
    _create_and_read(province, http)
    platform.audit.seal()
    with platform.db.transaction() as conn:
        last = conn.execute(select(audit_head.c.seq)).scalar_one()
        conn.execute(delete(audit_events).where(audit_events.c.seq == last))
    code, output = _verify(settings, monkeypatch)
    assert code == 1
    assert "chain head does not match" in output


def test_audit_verify_catches_an_inserted_row(
    platform: Platform,
    settings: Settings,
    province: Province,
    http: TestClient,
    monkeypatch: object,
) -> None:
    _create_and_read(province, http)
    first = _patient_events(platform)[0]
    forged = {**first, "seq": int(str(first["seq"])) + 1000, "client_id": "intruder"}
    with platform.db.transaction() as conn:
        conn.execute(insert(audit_events).values(**forged))
    code, output = _verify(settings, monkeypatch)
    assert code == 1
    assert "broken" in output.lower() or "gap" in output


def test_auditor_reads_audit_events_in_balp_shape(
    platform: Platform, province: Province, http: TestClient
) -> None:
    patient_id = _create_and_read(province, http, **{"X-End-User": "nurse-7"})
    auditor = province.headers("system/AuditEvent.rs")
    bundle = http.get(f"/fhir/AuditEvent?patient=Patient/{patient_id}", headers=auditor).json()
    assert bundle["resourceType"] == "Bundle"
    assert bundle["total"] == 2
    read_event = next(e["resource"] for e in bundle["entry"] if e["resource"]["action"] == "R")
    assert read_event["meta"]["profile"] == [
        "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientRead"
    ]
    assert read_event["subtype"][0]["code"] == "read"
    assert read_event["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"
    entity_refs = {e["what"].get("reference") for e in read_event["entity"]}
    assert f"Patient/{patient_id}" in entity_refs
    agent_roles = {a["type"]["coding"][0]["code"] for a in read_event["agent"]}
    assert {"110153", "110152", "IRCP"} <= agent_roles
    one = http.get(f"/fhir/AuditEvent/{read_event['id']}", headers=auditor)
    assert one.status_code == 200
    assert one.json()["id"] == read_event["id"]
    # A hospital client without the auditor scope cannot read the trail.
    assert http.get("/fhir/AuditEvent", headers=province.headers()).status_code == 403


def test_audit_search_pages(platform: Platform, province: Province, http: TestClient) -> None:
    for _ in range(3):
        _create_and_read(province, http)
    auditor = province.headers("system/AuditEvent.rs")
    page = http.get("/fhir/AuditEvent?_count=2", headers=auditor).json()
    assert len(page["entry"]) == 2
    assert page["total"] >= 6
    next_url = next(link["url"] for link in page["link"] if link["relation"] == "next")
    second = http.get(next_url, headers=auditor).json()
    first_ids = {e["resource"]["id"] for e in page["entry"]}
    assert first_ids.isdisjoint({e["resource"]["id"] for e in second["entry"]})


def test_audit_entries_wait_in_the_inbox_until_sealed(
    platform: Platform, province: Province, http: TestClient
) -> None:
    with platform.db.transaction(readonly=True) as conn:
        before = conn.execute(select(audit_events.c.seq)).all()
    _create_and_read(province, http)
    assert platform.audit.pending() > 0
    with platform.db.transaction(readonly=True) as conn:
        assert conn.execute(select(audit_events.c.seq)).all() == before
    sealed = platform.audit.seal()
    assert sealed > 0
    assert platform.audit.pending() == 0
    assert platform.audit.verify().ok
    assert platform.audit.verify().entries >= sealed


def test_background_sealer_seals_and_stops(platform: Platform) -> None:
    import time

    from healthroam.security.audit import Action
    from healthroam.security.sealer import AuditSealer

    sealer = AuditSealer(platform.audit, interval_ms=20)
    sealer.start()
    try:
        platform.audit.record([platform.audit.event(None, action=Action.EXECUTE, subtype="test")])
        deadline = time.monotonic() + 10
        while platform.audit.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert platform.audit.pending() == 0
    finally:
        sealer.stop()


def test_a_large_seal_keeps_every_field_and_the_chain(platform: Platform) -> None:
    """From COPY_ROWS entries a seal writes by COPY on PostgreSQL: the same rows, hashes and
    order as the insert it replaces (a batch below the threshold goes by insert)."""
    from dataclasses import replace
    from datetime import UTC

    from healthroam.security.audit import Action
    from healthroam.security.audit_repository import COPY_ROWS

    platform.audit.seal()
    first = platform.audit.event(
        None,
        action=Action.EXECUTE,
        subtype="search-type",
        event_type="query",
        resource_type="Condition",
        query='code=http://hl7.org/fhir/sid/icd-10|I10 \t 引号 " \\',
        detail="access=care-relationship",
    )
    records = [replace(first, patient_ref=f"Patient/p{i}") for i in range(COPY_ROWS + 5)]
    records.append(replace(first, patient_ref=None, query=None, detail=None))
    platform.audit.record(records)
    assert platform.audit.seal() == len(records)
    with platform.db.transaction(readonly=True) as conn:
        last = conn.execute(select(audit_events.c.seq).order_by(audit_events.c.seq.desc())).first()
    assert last is not None
    stored = [platform.audit.get(seq) for seq in range(last[0] - len(records) + 1, last[0] + 1)]
    assert [s.patient_ref for s in stored] == [r.patient_ref for r in records]
    assert stored[0].query == first.query
    assert stored[0].detail == first.detail
    moment = stored[0].recorded_at  # naive UTC from SQLite
    assert moment.replace(tzinfo=moment.tzinfo or UTC) == first.recorded_at
    assert stored[-1].query is None
    assert platform.audit.verify().ok
