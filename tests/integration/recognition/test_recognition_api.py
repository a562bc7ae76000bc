"""Duplicate-test alerts through the real API (SQLite and PostgreSQL): two hospitals of
different levels, results at one, orders at the other."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from healthroam.bootstrap import Platform
from healthroam.config import Settings
from healthroam.exchange.hl7.contract import MessageContext, Sender, Severity
from healthroam.exchange.recognition.model import CHINA_TIME, LOINC
from healthroam.exchange.recognition.service import EXTENSION_URL
from healthroam.security.audit import Outcome

from helpers import Province, patient

ALL = "system/*.cruds"
LOCAL_SYSTEM = "urn:hc:lab-codes"


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """The shipped table plus a local code of hospital HC (through the real setting)."""
    override = tmp_path / "recognition.toml"
    override.write_text(
        f"""
[[local_codes]]
institution = "HC"
system = "{LOCAL_SYSTEM}"
code = "XCG"
loinc = "58410-2"
""",
        encoding="utf-8",
    )
    return settings.model_copy(update={"recognition_table_file": override})


@dataclass
class World:
    http: TestClient
    a: dict[str, str]  # level-3 hospital HA
    b: dict[str, str]  # level-2 hospital HB
    c: dict[str, str]  # level-1 hospital HC
    patient_a: str
    patient_b: str
    patient_c: str
    mii: str


def day(days_ago: int) -> str:
    return (datetime.now(CHINA_TIME).date() - timedelta(days=days_ago)).isoformat()


def post(http: TestClient, h: dict[str, str], resource: dict[str, Any], **headers: str) -> Any:
    r = http.post(f"/fhir/{resource['resourceType']}", json=resource, headers={**h, **headers})
    assert r.status_code == 201, r.text
    return r


def observation(
    subject: str, code: str, when: str, system: str = LOINC, **extra: Any
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{subject}"},
        "effectiveDateTime": when,
        **extra,
    }


def order(subject: str, code: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{subject}"},
        **extra,
    }


@pytest.fixture
def world(http: TestClient, province: Province) -> World:
    province.institution("HA", level=3)
    province.institution("HB", level=2)
    province.institution("HC", level=1)
    a, b, c = (province.headers(ALL, code) for code in ("HA", "HB", "HC"))
    ids, miis = [], set()
    for h in (a, b, c):
        r = post(http, h, patient(sequence=124))
        ids.append(r.json()["id"])
        miis.add(r.headers["X-Master-Index-Id"])
    assert len(miis) == 1, "the three registrations are one person"
    # Each hospital is treating the person (an open visit): a care relationship, so other
    # hospitals' results may be shown to it (exchange/care).
    for h, pid in zip((a, b, c), ids, strict=True):
        post(http, h, visit(pid))
    return World(http, a, b, c, ids[0], ids[1], ids[2], miis.pop())


def visit(subject: str) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "status": "in-progress",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "AMB",
        },
        "subject": {"reference": f"Patient/{subject}"},
    }


def test_without_a_care_relationship_only_the_callers_own_results_are_shown(
    world: World, province: Province
) -> None:
    http = world.http
    at_a = post(http, world.a, observation(world.patient_a, "58410-2", day(2))).json()["id"]
    province.institution("HD", level=3)
    d = province.headers(ALL, "HD")
    at_d = post(http, d, patient(sequence=124)).json()["id"]  # registered, never treated
    own = post(http, d, observation(at_d, "58410-2", day(1))).json()["id"]

    seen = entries(http.get(f"/fhir/Patient/{at_d}/$recent-results?code=58410-2", headers=d).json())
    assert set(seen) == {f"Observation/{own}"}
    alerts = post(http, d, order(at_d, "58410-2"), Prefer="return=OperationOutcome").json()
    assert f"Observation/{at_a}" not in json.dumps(alerts)
    # Once it treats the person, the other hospital's result is shown too.
    post(http, d, visit(at_d))
    seen = entries(http.get(f"/fhir/Patient/{at_d}/$recent-results?code=58410-2", headers=d).json())
    assert set(seen) == {f"Observation/{own}", f"Observation/{at_a}"}


def entries(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Match entries by resource reference -> the recognition extension's parts."""
    out = {}
    for entry in bundle["entry"]:
        if entry["search"]["mode"] != "match":
            continue
        (ext,) = [e for e in entry["extension"] if e["url"] == EXTENSION_URL]
        parts = {p["url"]: p for p in ext["extension"]}
        out[f"{entry['resource']['resourceType']}/{entry['resource']['id']}"] = parts
    return out


def test_recent_results_across_hospitals_with_recognition(world: World) -> None:
    http = world.http
    at_a = post(http, world.a, observation(world.patient_a, "58410-2", day(2))).json()["id"]
    at_c = post(
        http, world.c, observation(world.patient_c, "XCG", day(1), system=LOCAL_SYSTEM)
    ).json()["id"]
    # The CBC window is 7 days: taken 7 days ago is still valid today, 8 days ago is not.
    edge = post(http, world.a, observation(world.patient_a, "57021-8", day(7))).json()["id"]
    expired = post(http, world.a, observation(world.patient_a, "57021-8", day(8))).json()["id"]
    prelim = post(
        http, world.a, observation(world.patient_a, "58410-2", day(0), status="preliminary")
    ).json()["id"]
    other_test = post(http, world.a, observation(world.patient_a, "4548-4", day(3))).json()["id"]
    # Someone else's result, at the same hospital, the same day: never returned.
    stranger = post(http, world.a, patient("符小明", gender="male", born="1985-05-05", sequence=77))
    post(http, world.a, observation(stranger.json()["id"], "58410-2", day(1)))

    # Hospital B (level 2) asks with an equivalent code of the same panel, by its own Patient.
    r = http.get(
        f"/fhir/Patient/{world.patient_b}/$recent-results",
        params={"code": f"{LOINC}|57021-8"},
        headers=world.b,
    )
    assert r.status_code == 200, r.text
    bundle = r.json()
    found = entries(bundle)
    assert set(found) == {f"Observation/{at_a}", f"Observation/{at_c}", f"Observation/{edge}"}
    assert bundle["total"] == 3
    assert found[f"Observation/{at_a}"]["recognised"]["valueBoolean"] is True
    assert found[f"Observation/{at_a}"]["reason"]["valueCoding"]["code"] == "same-or-higher-level"
    assert found[f"Observation/{at_a}"]["performer"]["valueIdentifier"]["value"] == "HA"
    assert found[f"Observation/{at_c}"]["recognised"]["valueBoolean"] is False
    assert found[f"Observation/{at_c}"]["reason"]["valueCoding"]["code"] == "lower-level"
    assert found[f"Observation/{at_a}"]["test"]["valueCoding"]["code"] == "cbc"
    # Recognised results come first; the outcome entry explains each one.
    matches = [e for e in bundle["entry"] if e["search"]["mode"] == "match"]
    assert matches[0]["resource"]["id"] == at_a
    outcome = next(e for e in bundle["entry"] if e["search"]["mode"] == "outcome")["resource"]
    assert len(outcome["issue"]) == 3
    assert found[f"Observation/{edge}"]["validUntil"]["valueDate"] == day(0)
    for gone in (expired, prelim, other_test):
        assert f"Observation/{gone}" not in found

    # The golden record id gives the same answer; hospital C's own view of its result.
    golden = http.get(
        f"/fhir/Patient/{world.mii}/$recent-results?code=58410-2", headers=world.c
    ).json()
    assert entries(golden)[f"Observation/{at_c}"]["recognised"]["valueBoolean"] is True
    assert entries(golden)[f"Observation/{at_a}"]["recognised"]["valueBoolean"] is True

    # A local code of the asking institution, and an explicit institution context (POST).
    local = http.post(
        f"/fhir/Patient/{world.patient_c}/$recent-results",
        json={
            "resourceType": "Parameters",
            "parameter": [
                {"name": "code", "valueCoding": {"system": LOCAL_SYSTEM, "code": "XCG"}},
                {"name": "institution", "valueString": "HA"},
            ],
        },
        headers={**world.c, "Content-Type": "application/fhir+json"},
    )
    assert local.status_code == 200, local.text
    judged_for_a = entries(local.json())
    assert judged_for_a[f"Observation/{at_c}"]["recognised"]["valueBoolean"] is False
    assert judged_for_a[f"Observation/{at_a}"]["recognised"]["valueBoolean"] is True

    # No code: every tabled test within its window (the HbA1c result too).
    everything = entries(
        http.get(f"/fhir/Patient/{world.patient_b}/$recent-results", headers=world.b).json()
    )
    assert f"Observation/{other_test}" in everything
    assert f"Observation/{expired}" not in everything


def test_recent_results_errors_and_unknown_codes(world: World) -> None:
    http = world.http
    unknown = http.get(
        f"/fhir/Patient/{world.patient_b}/$recent-results?code=http://loinc.org|0000-0",
        headers=world.b,
    )
    assert unknown.status_code == 200
    issues = unknown.json()["entry"][-1]["resource"]["issue"]
    assert issues[0]["severity"] == "warning"
    assert unknown.json()["total"] == 0
    missing = http.get("/fhir/Patient/no-such/$recent-results?code=58410-2", headers=world.b)
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"
    bad = http.get(
        f"/fhir/Patient/{world.patient_b}/$recent-results?institution=NOPE", headers=world.b
    )
    assert bad.status_code == 400
    assert bad.json()["issue"][0]["expression"] == ["institution"]
    extra = http.get(f"/fhir/Patient/{world.patient_b}/$recent-results?foo=1", headers=world.b)
    assert extra.status_code == 400
    wrong_body = http.post(
        f"/fhir/Patient/{world.patient_b}/$recent-results",
        json={"resourceType": "Patient"},
        headers={**world.b, "Content-Type": "application/fhir+json"},
    )
    assert wrong_body.status_code == 400


def test_results_need_read_scopes(world: World, province: Province) -> None:
    post(world.http, world.a, observation(world.patient_a, "58410-2", day(1)))
    only_patient = province.headers("system/Patient.r", "HB")
    r = world.http.get(
        f"/fhir/Patient/{world.patient_b}/$recent-results?code=58410-2", headers=only_patient
    )
    assert r.status_code == 200
    assert r.json()["total"] == 0  # no Observation.r: nothing is disclosed


def test_order_alerts_outcome_header_audit_and_counts(world: World, platform: Platform) -> None:
    http = world.http
    at_a = post(http, world.a, observation(world.patient_a, "58410-2", day(2))).json()["id"]
    at_c = post(
        http, world.c, observation(world.patient_c, "XCG", day(1), system=LOCAL_SYSTEM)
    ).json()["id"]

    # An order at B with Prefer: return=OperationOutcome: the alerts come back as issues.
    r = post(http, world.b, order(world.patient_b, "57021-8"), Prefer="return=OperationOutcome")
    first_order = r.headers["Location"].split("/ServiceRequest/")[1].split("/")[0]
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    alerts = body["issue"][1:]
    assert len(alerts) == 2
    assert all(i["severity"] == "information" for i in alerts)
    assert f"Observation/{at_a}" in alerts[0]["diagnostics"]
    assert alerts[0]["details"]["coding"][0]["code"] == "same-or-higher-level"
    assert alerts[1]["details"]["coding"][0]["code"] == "lower-level"
    link = r.headers["Link"]
    assert f"/fhir/Patient/{world.patient_b}/$recent-results?code=" in link
    assert 'rel="related"' in link
    followed = http.get(
        link.split(">")[0].lstrip("<").replace("http://testserver", ""), headers=world.b
    )
    assert followed.json()["total"] == 2

    # Without the Prefer header: the resource as usual, and the Link still there.
    plain = post(http, world.b, order(world.patient_b, "58410-2"))
    assert plain.json()["resourceType"] == "ServiceRequest"
    assert "$recent-results" in plain.headers["Link"]
    second_order = plain.json()["id"]

    # An order with no equivalent result gets no alert (but the link).
    quiet = post(http, world.b, order(world.patient_b, "24627-2"), Prefer="return=OperationOutcome")
    assert len(quiet.json()["issue"]) == 1
    assert "Link" in quiet.headers

    # Audit: the disclosure is recorded against the person's records.
    rows, _ = platform.audit.search(patient_ref=f"Patient/{world.patient_a}", limit=100)
    subtypes = {record.subtype for _seq, record in rows}
    assert "order-alerts" in subtypes
    assert "recent-results" in subtypes  # the Link was followed
    assert all(
        record.institution_code == "HB" for _seq, record in rows if record.subtype == "order-alerts"
    )

    # Revoking the first order within the window: an avoided duplicate.
    sr = http.get(f"/fhir/ServiceRequest/{first_order}", headers=world.b).json()
    sr["status"] = "revoked"
    assert (
        http.put(f"/fhir/ServiceRequest/{first_order}", json=sr, headers=world.b).status_code == 200
    )
    # The second order is acknowledged as repeated on purpose (only by the ordering hospital).
    ack = {"order": f"ServiceRequest/{second_order}", "decision": "repeat"}
    assert http.post("/recognition/acknowledgements", json=ack, headers=world.a).status_code == 403
    done = http.post("/recognition/acknowledgements", json=ack, headers=world.b)
    assert done.status_code == 200, done.text
    assert done.json() == {
        "order": f"ServiceRequest/{second_order}",
        "outcome": "declined",
        "result": f"Observation/{at_a}",
    }
    again = http.post("/recognition/acknowledgements", json=ack, headers=world.b)
    assert again.status_code == 409

    today = datetime.now(CHINA_TIME).date().isoformat()
    province = Province(platform, http)
    clinical = province.headers("system/Observation.rs system/ServiceRequest.cruds", "HB")
    counts = http.get(f"/recognition/counts?since={today}", headers=clinical)
    assert counts.status_code == 403  # needs system/ResultRecognition.s
    reader = province.headers("system/ResultRecognition.s", "HB")
    by_ordering = http.get(f"/recognition/counts?since={today}", headers=reader).json()["rows"]
    assert by_ordering == [
        {
            "test": "cbc",
            "institution": "HB",
            "orders": 2,
            "alerts": 4,
            "recognised": 2,
            "avoided": 1,
            "declined": 1,
        }
    ]
    by_result = http.get(f"/recognition/counts?since={today}&by=result", headers=reader).json()
    assert {(r["institution"], r["avoided"], r["alerts"]) for r in by_result["rows"]} == {
        ("HA", 1, 2),
        ("HC", 0, 2),
    }
    before = http.get("/recognition/counts?since=2000-01-01&until=2000-01-31", headers=reader)
    assert before.json()["rows"] == []
    assert http.get("/recognition/counts", headers=reader).status_code == 400
    assert http.get("/recognition/counts?since=yesterday", headers=reader).status_code == 400
    assert http.get(f"/recognition/counts?since={today}&by=x", headers=reader).status_code == 400
    assert at_c


def test_completed_with_the_existing_result_counts_as_avoided(
    world: World, platform: Platform
) -> None:
    http = world.http
    at_a = post(http, world.a, observation(world.patient_a, "24627-2", day(30))).json()["id"]
    made = post(http, world.b, order(world.patient_b, "24627-2")).json()
    made["status"] = "completed"
    made["supportingInfo"] = [{"reference": f"Observation/{at_a}"}]
    assert (
        http.put(f"/fhir/ServiceRequest/{made['id']}", json=made, headers=world.b).status_code
        == 200
    )
    today = datetime.now(CHINA_TIME).date()
    (row,) = platform.recognition.counts(today, today)
    assert (row.test_id, row.avoided, row.recognised) == ("chest-ct", 1, 1)


def test_hl7_order_alerts_give_notes_and_count_once(world: World, platform: Platform) -> None:
    http = world.http
    post(http, world.a, observation(world.patient_a, "5196-1", day(20)))
    stored = post(http, world.b, order(world.patient_b, "5195-3")).json()  # FHIR listener ran
    client = platform.clients.list("HB")[0]
    principal = platform.auth.authenticate(world.b["Authorization"].split()[1])
    context = MessageContext(
        sender=Sender("HIS", "HB", "HB"),
        principal=principal,
        control_id="MSG0001",
        message_type="ORM",
        trigger_event="O01",
        version="2.5.1",
        received_at=datetime.now(UTC),
    )
    assert client.institution_code == "HB"
    with platform.db.transaction() as conn:
        notes = platform.recognition.order_alerts(conn, context, stored)
    assert len(notes) == 1
    assert notes[0].severity is Severity.INFORMATION
    assert "recognised (any-institution)" in notes[0].detail
    assert "|" not in notes[0].detail
    assert "^" not in notes[0].detail
    today = datetime.now(CHINA_TIME).date()
    (row,) = platform.recognition.counts(today, today)
    assert (row.test_id, row.alerts, row.orders) == ("hbsag", 1, 1)  # not counted twice
    # An order for a closed test (no open status) or without a Patient subject: no notes.
    with platform.db.transaction() as conn:
        assert (
            platform.recognition.order_alerts(conn, context, {**stored, "status": "completed"})
            == []
        )
        assert platform.recognition.order_alerts(conn, context, {**stored, "subject": {}}) == []


def test_the_recognition_routes_are_in_the_enumerated_routers() -> None:
    """tests/integration/test_route_protection.py checks every route of ROUTERS (401 without
    a token, 403 with an unrelated scope, 401 when disabled): these must be among them."""
    from fastapi.routing import APIRoute

    from healthroam.api.app import ROUTERS

    served = {
        (method, route.path)
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    }
    assert ("GET", "/fhir/Patient/{patient_id}/$recent-results") in served
    assert ("POST", "/fhir/Patient/{patient_id}/$recent-results") in served
    assert ("POST", "/recognition/acknowledgements") in served
    assert ("GET", "/recognition/counts") in served


def test_counts_cli(
    world: World, settings: Settings, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from healthroam.cli import app as cli_app
    from healthroam.config import get_settings

    http = world.http
    at_a = post(http, world.a, observation(world.patient_a, "24725-4", day(5))).json()["id"]
    made = post(http, world.b, order(world.patient_b, "24725-4")).json()
    made["status"] = "revoked"
    assert (
        http.put(f"/fhir/ServiceRequest/{made['id']}", json=made, headers=world.b).status_code
        == 200
    )
    monkeypatch.setenv("HEALTHROAM_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("HEALTHROAM_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("HEALTHROAM_TOKEN_SIGNING_KEY_FILE", str(settings.signing_key_path))
    monkeypatch.setenv("HEALTHROAM_RECOGNITION_TABLE_FILE", str(settings.recognition_table_file))
    get_settings.cache_clear()
    try:
        today = datetime.now(CHINA_TIME).date().isoformat()
        result = CliRunner().invoke(cli_app, ["recognition", "counts", "--since", today, "--json"])
        assert result.exit_code == 0, result.output
        assert '"test": "head-ct"' in result.output
        assert '"avoided": 1' in result.output
        table = CliRunner().invoke(cli_app, ["recognition", "counts", "--since", today])
        assert "head-ct" in table.output
        bad = CliRunner().invoke(cli_app, ["recognition", "counts", "--since", "soon"])
        assert bad.exit_code == 2
        assert "since must be a date" in bad.output
        shown = CliRunner().invoke(cli_app, ["recognition", "table"])
        assert shown.exit_code == 0
        assert "hba1c" in shown.output
        assert "local codes: 1" in shown.output
    finally:
        get_settings.cache_clear()
    assert at_a


def test_orders_in_a_transaction_bundle_get_alerts_in_the_entry_outcome(world: World) -> None:
    http = world.http
    at_a = post(http, world.a, observation(world.patient_a, "24590-2", day(60))).json()["id"]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": order(world.patient_b, "24590-2"),
                "request": {"method": "POST", "url": "ServiceRequest"},
            },
            {
                "resource": order(world.patient_b, "3255-7"),
                "request": {"method": "POST", "url": "ServiceRequest"},
            },
        ],
    }
    r = http.post(
        "/fhir", json=bundle, headers={**world.b, "Content-Type": "application/fhir+json"}
    )
    assert r.status_code == 200, r.text
    first, second = r.json()["entry"]
    (alert,) = first["response"]["outcome"]["issue"]
    assert f"Observation/{at_a}" in alert["diagnostics"]
    assert "outcome" not in second["response"]


GLASS = "unconscious on arrival, repeat labs?"


def test_break_the_glass_on_recent_results(
    world: World, province: Province, platform: Platform
) -> None:
    """A hospital with no care relationship and no data of its own is refused with guidance;
    with X-Break-Glass-Reason it sees every institution's results, audited with purpose of
    use BTG and opened for the privacy officer's review; a too-short reason is a 400."""
    http = world.http
    at_a = post(http, world.a, observation(world.patient_a, "58410-2", day(2))).json()["id"]
    province.institution("HD", level=3)
    d = {**province.headers(ALL, "HD"), "X-End-User": "dr-li"}
    url = f"/fhir/Patient/{world.mii}/$recent-results?code=58410-2"

    refused = http.get(url, headers=d)
    assert refused.status_code == 403, refused.text
    issue = refused.json()["issue"][0]
    assert issue["code"] == "forbidden"
    assert issue["expression"] == ["X-Break-Glass-Reason"]
    assert "POST /care/check-in" in issue["diagnostics"]
    assert "X-Break-Glass-Reason" in issue["diagnostics"]
    params = {
        "resourceType": "Parameters",
        "parameter": [{"name": "code", "valueString": "58410-2"}],
    }
    post_url = f"/fhir/Patient/{world.mii}/$recent-results"
    assert http.post(post_url, json=params, headers=d).status_code == 403

    for bad in ("hi", "x" * 501):
        too_short = http.get(url, headers={**d, "X-Break-Glass-Reason": bad})
        assert too_short.status_code == 400, too_short.text
        assert too_short.json()["resourceType"] == "OperationOutcome"
        assert too_short.json()["issue"][0]["expression"] == ["X-Break-Glass-Reason"]

    glass = http.get(url, headers={**d, "X-Break-Glass-Reason": GLASS})
    assert glass.status_code == 200, glass.text
    assert set(entries(glass.json())) == {f"Observation/{at_a}"}
    outcome = glass.json()["entry"][-1]["resource"]
    assert any("break-the-glass" in i["diagnostics"] for i in outcome["issue"])
    by_post = http.post(post_url, json=params, headers={**d, "X-Break-Glass-Reason": GLASS})
    assert set(entries(by_post.json())) == {f"Observation/{at_a}"}

    records = platform.audit.search(patient_ref=f"Patient/{world.mii}")[0]
    mine = [r for _, r in records if r.subtype == "recent-results" and r.institution_code == "HD"]
    refusals = [r for r in mine if r.outcome is not Outcome.SUCCESS]
    assert len(refusals) == 2  # the two refused look-ups
    btg = [r for r in mine if r.purpose_of_use == "BTG"]
    assert len(btg) == 2
    assert all(r.end_user == "dr-li" and "access=break-the-glass" in (r.detail or "") for r in btg)

    province.institution("HNWJW", kind="agency", level=None)
    officer = {**province.headers("system/AccessException.us", "HNWJW"), "X-End-User": "p-1"}
    listed = http.get("/care/access-exceptions", headers=officer).json()["exceptions"]
    assert [(e["institution"], e["access"], e["reason"], e["endUser"]) for e in listed] == [
        ("HD", "recent-results", GLASS, "dr-li")
    ] * 2
    assert all(e["masterIndexId"] == world.mii and not e["hadRelationship"] for e in listed)


def test_own_results_only_say_how_to_see_the_others(world: World, province: Province) -> None:
    http = world.http
    post(http, world.a, observation(world.patient_a, "58410-2", day(2)))
    province.institution("HD", level=3)
    d = province.headers(ALL, "HD")
    at_d = post(http, d, patient(sequence=124)).json()["id"]
    own = post(http, d, observation(at_d, "58410-2", day(1))).json()["id"]
    bundle = http.get(f"/fhir/Patient/{at_d}/$recent-results?code=58410-2", headers=d).json()
    assert set(entries(bundle)) == {f"Observation/{own}"}
    issues = bundle["entry"][-1]["resource"]["issue"]
    hidden = [i for i in issues if i["code"] == "suppressed"]
    assert len(hidden) == 1
    assert "X-Break-Glass-Reason" in hidden[0]["diagnostics"]
