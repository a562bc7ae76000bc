"""Cross-institution care through the real API on SQLite and PostgreSQL: card check-in with
a real dynamic code from a real issued card, relationships, the 403 without one,
break-the-glass (audited, listed, reviewed), consent refusals, and the grouped summary."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from care_world import (
    CLINICIAN,
    GLASS,
    OFFICER,
    TERMINAL,
    WRITER,
    _dynamic_code,
    _world,
    refusing_consent,
)
from healthroam.bootstrap import Platform
from healthroam.cli import app as cli_app
from healthroam.config import Settings, get_settings

from helpers import Province, patient


def _items(summary: dict[str, Any], key: str) -> list[dict[str, Any]]:
    section = next(s for s in summary["sections"] if s["key"] == key)
    items: list[dict[str, Any]] = section["items"]
    return items


def test_check_in_by_card_then_summary_from_every_institution(
    platform: Platform, province: Province, http: TestClient
) -> None:
    world = _world(platform, province, http)
    hb = province.institution("HB", level=2)
    clinician = province.headers(CLINICIAN, institution=hb)
    summary_url = f"/care/patients/{world.mii}/summary"

    # No relationship yet: 403 that says how to proceed, on the summary and on $everything.
    refused = http.get(summary_url, headers=clinician)
    assert refused.status_code == 403, refused.text
    assert "check-in" in refused.json()["detail"]
    assert "X-Break-Glass-Reason" in refused.json()["detail"]
    fhir = http.get(f"/fhir/Patient/{world.mii}/$everything", headers=clinician)
    assert fhir.status_code == 403
    issue = fhir.json()["issue"][0]
    assert issue["code"] == "forbidden"
    assert "X-Break-Glass-Reason" in issue["diagnostics"]

    stored_url = f"/fhir/Patient/{world.patient_id}/$everything"
    assert http.get(stored_url, headers=clinician).status_code == 403  # HA's own Patient
    own = http.get(stored_url, headers=province.headers(CLINICIAN, institution="HA"))
    assert own.status_code == 200  # HA always reads its own record
    assert own.json()["total"] == 8

    # The terminal scans a real dynamic code from the issued card.
    terminal = province.headers(TERMINAL, institution=hb)
    checked = http.post(
        "/care/check-in",
        json={"text": _dynamic_code(http, world), "terminal": "REG-01", "purpose": "outpatient"},
        headers=terminal,
    )
    assert checked.status_code == 201, checked.text
    body = checked.json()
    assert body["accepted"] is True
    assert body["codeKind"] == "dynamic"
    assert body["patient"]["name"] == "林晓梅"  # the terminal holds system/Patient.r
    check_in = body["checkIn"]
    assert check_in["masterIndexId"] == world.mii
    assert check_in["subject"] == f"Patient/{world.mii}"  # HB has no Patient of its own
    assert check_in["relationship"]["reason"] == "check-in"
    assert check_in["relationship"]["institution"] == "HB"
    assert check_in["summary"] == summary_url
    encounter = http.get(f"/fhir/{check_in['encounter']}", headers=clinician).json()
    assert encounter["status"] == "arrived"
    assert encounter["class"]["code"] == "AMB"
    # The card use is logged.
    uses = platform.audit.search(patient_ref=f"MasterPerson/{world.mii}")[0]
    assert any(r.subtype == "card-verify" and r.institution_code == "HB" for _, r in uses)

    # Now the clinician at HB sees HA's record, grouped, each item naming its institution.
    summary = http.get(summary_url + "?lang=en", headers=clinician)
    assert summary.status_code == 200, summary.text
    data = summary.json()
    assert data["access"]["basis"] == "care-relationship"
    assert data["person"]["name"] == "林晓梅"
    assert [s["key"] for s in data["sections"]] == [
        "problems",
        "allergies",
        "medications",
        "encounters",
        "results",
        "immunizations",
        "documents",
    ]
    assert next(s for s in data["sections"] if s["key"] == "results")["title"] == "Results"
    problem = _items(data, "problems")[0]
    assert problem["display"] == "2型糖尿病"
    assert problem["status"] == "active"
    assert problem["source"] == {
        "code": "HA",
        "name": problem["source"]["name"],
        "level": 3,
        "kind": "hospital",
    }
    assert problem["source"]["name"].startswith("测试医院")
    assert _items(data, "allergies")[0]["detail"] == "high"
    assert _items(data, "medications")[0]["display"] == "二甲双胍 0.5g"
    assert _items(data, "results")[0]["detail"] == "7.1 %"
    assert _items(data, "immunizations")[0]["display"] == "乙肝疫苗"
    assert _items(data, "documents")[0]["display"] == "出院小结"
    encounters = _items(data, "encounters")
    assert {e["source"]["code"] for e in encounters} == {"HA", "HB"}
    assert encounters[0]["source"]["code"] == "HB"  # newest first: today's check-in
    assert {i["code"] for i in data["institutions"]} == {"HA", "HB"}
    stored = http.get(stored_url, headers=clinician)
    assert stored.status_code == 200
    assert stored.json()["total"] == 8
    everything = http.get(f"/fhir/Patient/{world.mii}/$everything", headers=clinician).json()
    types = {e["resource"]["resourceType"] for e in everything["entry"]}
    assert {"Condition", "AllergyIntolerance", "Encounter", "Patient"} <= types
    # The read is audited as a read of the person, with why.
    reads = platform.audit.search(patient_ref=f"Patient/{world.mii}")[0]
    summary_reads = [r for _, r in reads if r.subtype == "summary" and r.outcome == "0"]
    assert summary_reads
    assert summary_reads[0].institution_code == "HB"
    assert summary_reads[0].purpose_of_use == "TREAT"
    assert "care-relationship" in (summary_reads[0].detail or "")
    assert any(r.subtype == "summary" and r.outcome == "4" for _, r in reads)  # the refusal


def _cli(settings: Settings, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    monkeypatch.setenv("HEALTHROAM_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("HEALTHROAM_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("HEALTHROAM_TOKEN_SIGNING_KEY_FILE", str(settings.signing_key_path))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli_app, ["access", *args])
    finally:
        get_settings.cache_clear()
    return result.exit_code, result.output


def test_break_glass_is_allowed_audited_listed_and_reviewed(
    platform: Platform,
    settings: Settings,
    province: Province,
    http: TestClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = _world(platform, province, http)
    clinician = {
        **province.headers(CLINICIAN, institution=province.institution("HC", level=1)),
        "X-End-User": "dr-wang",
    }
    url = f"/care/patients/{world.mii}/summary"
    too_short = http.get(url, headers={**clinician, "X-Break-Glass-Reason": "hi"})
    assert too_short.status_code == 400
    glass = http.get(url, headers={**clinician, "X-Break-Glass-Reason": GLASS})
    assert glass.status_code == 200, glass.text
    access = glass.json()["access"]
    assert access["basis"] == "break-the-glass"
    exception_id = access["breakGlassException"]
    assert isinstance(exception_id, int)
    assert _items(glass.json(), "allergies")[0]["source"]["code"] == "HA"
    fhir = http.get(
        f"/fhir/Patient/{world.mii}/$everything",
        headers={**clinician, "X-Break-Glass-Reason": GLASS},
    )
    assert fhir.status_code == 200
    # Audited with purpose of use BTG.
    reads = platform.audit.search(patient_ref=f"Patient/{world.mii}")[0]
    btg = [r for _, r in reads if r.purpose_of_use == "BTG"]
    assert {r.subtype for r in btg} >= {"summary", "everything"}
    assert all(r.end_user == "dr-wang" and r.institution_code == "HC" for r in btg)

    # The privacy officer lists and closes the exceptions.
    officer = {**province.headers(OFFICER, institution="HNWJW"), "X-End-User": "privacy-1"}
    listed = http.get("/care/access-exceptions", headers=officer)
    assert listed.status_code == 200, listed.text
    exceptions = listed.json()["exceptions"]
    assert len(exceptions) == 2
    first = next(e for e in exceptions if e["id"] == exception_id)
    assert first["reason"] == GLASS
    assert first["institution"] == "HC"
    assert first["endUser"] == "dr-wang"
    assert first["status"] == "open"
    assert first["access"] == "summary"
    assert first["hadRelationship"] is False
    # Without the scope: 403; a hospital's own privacy officer sees only its own staff's.
    assert http.get("/care/access-exceptions", headers=province.headers()).status_code == 403
    other = province.headers(OFFICER, institution="HA")
    assert http.get("/care/access-exceptions", headers=other).json()["exceptions"] == []
    assert http.get("/care/access-exceptions?institution=HC", headers=other).status_code == 403
    own = http.get("/care/access-exceptions", headers=province.headers(OFFICER, institution="HC"))
    assert len(own.json()["exceptions"]) == 2
    anonymous = {k: v for k, v in officer.items() if k != "X-End-User"}
    nameless = http.post(
        f"/care/access-exceptions/{exception_id}/$close",
        json={"outcome": "justified"},
        headers=anonymous,
    )
    assert nameless.status_code == 400
    closed = http.post(
        f"/care/access-exceptions/{exception_id}/$close",
        json={"outcome": "justified", "note": "ED admission confirmed"},
        headers=officer,
    )
    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "closed"
    assert closed.json()["reviewedBy"] == "privacy-1"
    again = http.post(
        f"/care/access-exceptions/{exception_id}/$close",
        json={"outcome": "justified"},
        headers=officer,
    )
    assert again.status_code == 409
    still_open = http.get("/care/access-exceptions?status=open", headers=officer).json()
    assert [e["id"] for e in still_open["exceptions"]] != [exception_id]
    assert len(still_open["exceptions"]) == 1
    missing = http.post(
        "/care/access-exceptions/99999/$close", json={"outcome": "justified"}, headers=officer
    )
    assert missing.status_code == 404
    # The same review from the command line.
    officer_cli = ("--institution", "HNWJW", "--user", "privacy-2")
    code, output = _cli(settings, monkeypatch, "exceptions", *officer_cli, "--json")
    assert code == 0, output
    listed_cli = json.loads(output)
    assert len(listed_cli) == 1
    assert listed_cli[0]["status"] == "open"
    other_id = str(listed_cli[0]["id"])
    code, output = _cli(
        settings, monkeypatch, "close", other_id, *officer_cli, "--outcome", "unjustified"
    )
    assert code == 0, output
    assert "unjustified" in output
    code, output = _cli(settings, monkeypatch, "close", other_id, *officer_cli, "--outcome", "x")
    assert code == 2
    code, output = _cli(settings, monkeypatch, "exceptions", *officer_cli, "--status", "any")
    assert code == 0
    assert "privacy" not in output  # the table lists who took the access, not the reviewer
    assert "HC" in output


def test_consent_refusal_is_honoured_and_break_glass_overrides_it(
    platform: Platform, province: Province, http: TestClient
) -> None:
    world = _world(platform, province, http)
    hd = province.institution("HD", level=2)
    writer = province.headers(WRITER, institution=hd)
    # HD registers the same resident and has them in an active encounter: a relationship.
    own = http.post("/fhir/Patient", json=patient("林晓梅", sequence=321), headers=writer)
    assert own.headers["x-master-index-id"] == world.mii
    encounter = {
        "resourceType": "Encounter",
        "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"},
        "subject": {"reference": f"Patient/{own.json()['id']}"},
        "period": {"start": "2026-11-29T08:00:00+08:00"},
    }
    assert http.post("/fhir/Encounter", json=encounter, headers=writer).status_code == 201
    clinician = province.headers(CLINICIAN, institution=hd)
    url = f"/care/patients/{world.mii}/summary"
    before = http.get(url, headers=clinician).json()
    assert before["access"]["basis"] == "care-relationship"
    assert _items(before, "problems")[0]["source"]["code"] == "HA"
    relations = http.get(f"/care/patients/{world.mii}/relationships", headers=clinician).json()
    assert [r["reason"] for r in relations["relationships"]] == ["encounter"]

    # The resident refuses sharing (recorded at HA against HA's Patient).
    stored = http.post("/fhir/Consent", json=refusing_consent(world.patient_id), headers=world.a)
    assert stored.status_code == 201, stored.text
    after = http.get(url, headers=clinician).json()
    assert after["access"]["consentRestricted"] is True
    assert _items(after, "problems") == []  # HA's data is hidden
    assert {e["source"]["code"] for e in _items(after, "encounters")} == {"HD"}  # own data stays
    bundle = http.get(f"/fhir/Patient/{world.mii}/$everything", headers=clinician).json()
    assert not [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Condition"]
    outcomes = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert outcomes
    assert outcomes[0]["resource"]["issue"][0]["code"] == "suppressed"
    # HA (no relationship) still sees its own data, and is told that more exists.
    own_view = http.get(url, headers=province.headers(CLINICIAN, institution="HA")).json()
    assert own_view["access"]["basis"] == "own-data"
    assert own_view["access"]["othersHidden"] is True
    assert "check-in" in own_view["access"]["guidance"]
    assert _items(own_view, "problems")[0]["source"]["code"] == "HA"
    assert {e["source"]["code"] for e in _items(own_view, "encounters")} == {"HA"}

    # Break-the-glass shows it anyway, flagged as a consent override.
    glass = http.get(url, headers={**clinician, "X-Break-Glass-Reason": GLASS}).json()
    assert glass["access"]["basis"] == "break-the-glass"
    assert glass["access"]["consentRestricted"] is False
    assert _items(glass, "problems")[0]["source"]["code"] == "HA"
    officer = province.headers(OFFICER, institution="HNWJW")
    listed = http.get("/care/access-exceptions", headers=officer).json()["exceptions"]
    assert [(e["consentOverridden"], e["hadRelationship"]) for e in listed] == [(True, True)]


def test_a_relationship_ends_and_agencies_keep_their_access(
    platform: Platform, province: Province, http: TestClient
) -> None:
    world = _world(platform, province, http)
    he = province.institution("HE", level=3)
    checked = http.post(
        "/care/check-in",
        json={"text": _dynamic_code(http, world), "terminal": "ED-2", "purpose": "emergency"},
        headers=province.headers("system/Card.r system/Encounter.c", institution=he),
    )
    assert checked.status_code == 201, checked.text
    assert "patient" not in checked.json()  # no system/Patient.r: no demographics
    relationship = checked.json()["checkIn"]["relationship"]
    since = datetime.fromisoformat(relationship["since"])
    until = datetime.fromisoformat(relationship["until"])
    assert (until - since).total_seconds() == platform.settings.care_relationship_hours * 3600
    with platform.db.transaction() as conn:
        assert platform.care.has_relationship(conn, "HE", world.mii, since)
        assert not platform.care.has_relationship(conn, "HA", world.mii, since)
        # Past the window the check-in's Encounter, still "arrived", keeps it going ...
        assert platform.care.has_relationship(conn, "HE", world.mii, until)
    # ... until the hospital finishes the encounter.
    writer = province.headers(WRITER, institution=he)
    ref = checked.json()["checkIn"]["encounter"]
    encounter = http.get(f"/fhir/{ref}", headers=writer).json()
    encounter["status"] = "finished"
    assert http.put(f"/fhir/{ref}", json=encounter, headers=writer).status_code == 200
    with platform.db.transaction() as conn:
        assert platform.care.has_relationship(conn, "HE", world.mii, since)
        assert not platform.care.has_relationship(conn, "HE", world.mii, until)
    # A refused card (replayed code) gives no relationship and logs the refusal.
    code = _dynamic_code(http, world)
    terminal = province.headers(TERMINAL, institution=province.institution("HF"))
    first = http.post("/care/check-in", json={"text": code, "terminal": "T1"}, headers=terminal)
    assert first.status_code == 201
    replay = http.post("/care/check-in", json={"text": code, "terminal": "T1"}, headers=terminal)
    assert replay.status_code == 400
    assert replay.json()["reason"]
    bad_purpose = http.post(
        "/care/check-in", json={"text": code, "terminal": "T1", "purpose": "x"}, headers=terminal
    )
    assert bad_purpose.status_code == 400
    assert bad_purpose.json()["field"] == "purpose"
    # An agency (the registry's steward, an auditor) keeps its scope-based access.
    steward = province.headers(CLINICIAN, institution="HNWJW")
    view = http.get(f"/care/patients/{world.mii}/summary", headers=steward)
    assert view.status_code == 200
    assert view.json()["access"]["basis"] == "custodian"
    unknown = http.get(f"/care/patients/{'A' * 64}/summary", headers=steward)
    assert unknown.status_code == 404
