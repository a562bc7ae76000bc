"""FHIR writes follow the cross-institution care rules (decision 0028), through the real API on
SQLite and PostgreSQL: a care provider updates, patches and deletes only what its own
institution wrote (plain REST, conditional interactions, batch and transaction entries), and a
conditional create that matches another institution's resource shows it only when the caller
may read it. Hospital HA wrote the resident's record (tests/care_world.py)."""

from __future__ import annotations

import base64
import json
from typing import Any

from fastapi.testclient import TestClient

from care_world import CLINICIAN, GLASS, TERMINAL, WRITER, World, _dynamic_code, _world
from healthroam.bootstrap import Platform
from healthroam.security.audit import AuditRecord

from helpers import Province, patient

AGENCY = "HNWJW"  # the provincial health commission: an agency (tests/care_world.py)
NATIONAL_ID = "urn:oid:2.16.156.10011.1.3"
PATCH = "application/json-patch+json"


def _observation(subject: str, value: float, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "subject": {"reference": subject},
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
        "effectiveDateTime": "2026-11-20",
        "valueQuantity": {"value": value, "unit": "%"},
        **extra,
    }


def _ha_observation(http: TestClient, world: World) -> dict[str, Any]:
    bundle = http.get(f"/fhir/Observation?subject=Patient/{world.patient_id}", headers=world.a)
    entries = bundle.json()["entry"]
    assert len(entries) == 1
    resource: dict[str, Any] = entries[0]["resource"]
    return resource


def _current(http: TestClient, world: World, reference: str) -> dict[str, Any]:
    """The resource as its writer HA reads it."""
    response = http.get(f"/fhir/{reference}", headers=world.a)
    assert response.status_code == 200, response.text
    resource: dict[str, Any] = response.json()
    return resource


def _patch(ops: list[dict[str, Any]]) -> str:
    return json.dumps(ops)


def _binary(ops: list[dict[str, Any]]) -> dict[str, Any]:
    data = base64.b64encode(json.dumps(ops).encode()).decode()
    return {"resourceType": "Binary", "contentType": PATCH, "data": data}


def _assert_refused_write(response: Any, reference: str) -> None:
    assert response.status_code == 403, response.text
    issue = response.json()["issue"][0]
    assert issue["code"] == "forbidden"
    assert f"{reference} belongs to another institution" in issue["diagnostics"]
    assert "corrections go through the authoring institution" in issue["diagnostics"]
    assert "HA" not in issue["diagnostics"].split()  # the writer is not named


def _refusals(platform: Platform, patient_id: str, institution: str) -> list[AuditRecord]:
    rows, _ = platform.audit.search(patient_ref=f"Patient/{patient_id}", limit=1000)
    return [
        r
        for _, r in rows
        if r.institution_code == institution
        and r.subtype in ("update", "patch", "delete")
        and r.outcome == "4"
    ]


def _patients_with(http: TestClient, headers: dict[str, str], identifier: str) -> list[str]:
    form = {"Content-Type": "application/x-www-form-urlencoded", **headers}
    found = http.post("/fhir/Patient/_search", content=f"identifier={identifier}", headers=form)
    assert found.status_code == 200, found.text
    return [e["resource"]["id"] for e in found.json().get("entry", [])]


def test_only_the_writer_and_agencies_change_a_resource(
    platform: Platform, province: Province, http: TestClient
) -> None:
    world = _world(platform, province, http)
    obs = _ha_observation(http, world)
    oid, pid = obs["id"], world.patient_id
    hb = province.institution("HB", level=2)
    b = province.headers(WRITER, institution=hb)
    # HB has a care relationship and reads the record: it may read, never change, HA's data.
    checked = http.post(
        "/care/check-in",
        json={"text": _dynamic_code(http, world), "terminal": "REG-01"},
        headers=province.headers(TERMINAL, institution=hb),
    )
    assert checked.status_code == 201, checked.text
    assert http.get(f"/fhir/Observation/{oid}", headers=b).status_code == 200

    changed = {**obs, "valueQuantity": {"value": 9.9, "unit": "%"}}
    _assert_refused_write(
        http.put(f"/fhir/Observation/{oid}", json=changed, headers=b), f"Observation/{oid}"
    )
    # Refused before If-Match is looked at (a wrong version would otherwise answer 412) ...
    stale = {**b, "If-Match": 'W/"7"'}
    assert http.put(f"/fhir/Observation/{oid}", json=changed, headers=stale).status_code == 403
    # ... and before a patch is applied (a failing `test` would otherwise answer 422).
    for ops in (
        [{"op": "replace", "path": "/status", "value": "entered-in-error"}],
        [{"op": "test", "path": "/status", "value": "preliminary"}],
    ):
        patched = http.patch(
            f"/fhir/Observation/{oid}",
            content=_patch(ops),
            headers={**b, "Content-Type": PATCH},
        )
        _assert_refused_write(patched, f"Observation/{oid}")
    _assert_refused_write(http.delete(f"/fhir/Observation/{oid}", headers=b), f"Observation/{oid}")
    # HA's Patient: no update or patch by HB; nobody deletes a Patient (405).
    ha_patient = _current(http, world, f"Patient/{pid}")
    renamed = {**ha_patient, "name": [{"text": "林晓"}]}
    _assert_refused_write(
        http.put(f"/fhir/Patient/{pid}", json=renamed, headers=b), f"Patient/{pid}"
    )
    deactivate = _patch([{"op": "add", "path": "/active", "value": False}])
    _assert_refused_write(
        http.patch(
            f"/fhir/Patient/{pid}", content=deactivate, headers={**b, "Content-Type": PATCH}
        ),
        f"Patient/{pid}",
    )
    assert http.delete(f"/fhir/Patient/{pid}", headers=b).status_code == 405

    # Nothing was written: HA reads both unchanged.
    stored = _current(http, world, f"Observation/{oid}")
    assert stored["meta"]["versionId"] == "1"
    assert stored["valueQuantity"]["value"] == 7.1
    assert stored["status"] == "final"
    assert _current(http, world, f"Patient/{pid}")["meta"]["versionId"] == "1"
    # Each refusal is audited as a failed attempt by HB.
    refusals = _refusals(platform, pid, "HB")
    assert sorted(r.subtype for r in refusals) == sorted(
        ["update", "update", "patch", "patch", "delete", "update", "patch"]
    )
    assert all("refused" in (r.detail or "") for r in refusals)
    assert {r.resource_id for r in refusals} == {oid, pid}

    # The writer changes its own resources.
    ha_changed = http.put(f"/fhir/Observation/{oid}", json=changed, headers=world.a)
    assert ha_changed.status_code == 200, ha_changed.text
    ha_patched = http.patch(
        f"/fhir/Patient/{pid}", content=deactivate, headers={**world.a, "Content-Type": PATCH}
    )
    assert ha_patched.status_code == 200, ha_patched.text
    # An agency is not narrowed (its scopes decide).
    agency = province.headers(WRITER, institution=AGENCY)
    steward = http.put(
        f"/fhir/Observation/{oid}", json={**changed, "status": "amended"}, headers=agency
    )
    assert steward.status_code == 200, steward.text
    assert steward.json()["meta"]["versionId"] == "3"
    assert http.put(f"/fhir/Patient/{pid}", json=renamed, headers=agency).status_code == 200
    assert http.delete(f"/fhir/Observation/{oid}", headers=agency).status_code == 200
    # A deleted resource stays its writer's: HB cannot bring it back under HA's name.
    _assert_refused_write(
        http.put(f"/fhir/Observation/{oid}", json=changed, headers=b), f"Observation/{oid}"
    )
    assert http.get(f"/fhir/Observation/{oid}", headers=world.a).status_code == 410
    # Update-as-create of a new id is not affected, and the new resource is HB's own.
    own = _observation(f"Patient/{pid}", 6.2, id="hb-result-1")
    assert http.put("/fhir/Observation/hb-result-1", json=own, headers=b).status_code == 201
    own["status"] = "amended"
    assert http.put("/fhir/Observation/hb-result-1", json=own, headers=b).status_code == 200
    _assert_refused_write(
        http.delete("/fhir/Observation/hb-result-1", headers=world.a), "Observation/hb-result-1"
    )


def test_conditional_update_and_delete_of_another_institutions_match_are_refused(
    platform: Platform, province: Province, http: TestClient
) -> None:
    world = _world(platform, province, http)
    pid = world.patient_id
    lab = {"identifier": [{"system": "urn:lab:HA", "value": "A1"}]}
    first = http.post(
        "/fhir/Observation", json=_observation(f"Patient/{pid}", 5.0, **lab), headers=world.a
    )
    assert first.status_code == 201
    oid = first.json()["id"]
    b = province.headers(WRITER, institution=province.institution("HB", level=2))
    query = "identifier=urn:lab:HA|A1"
    amended = _observation(f"Patient/{pid}", 5.5, status="amended", **lab)
    _assert_refused_write(
        http.put(f"/fhir/Observation?{query}", json=amended, headers=b), f"Observation/{oid}"
    )
    _assert_refused_write(
        http.delete(f"/fhir/Observation?{query}", headers=b), f"Observation/{oid}"
    )
    stored = _current(http, world, f"Observation/{oid}")
    assert (stored["meta"]["versionId"], stored["status"]) == ("1", "final")
    assert len(_refusals(platform, pid, "HB")) == 2
    # A criterion that matches nothing still creates (HB's own resource).
    mine = _observation(f"Patient/{pid}", 6.0, identifier=[{"system": "urn:lab:HB", "value": "B1"}])
    created = http.put("/fhir/Observation?identifier=urn:lab:HB|B1", json=mine, headers=b)
    assert created.status_code == 201, created.text
    # The writer's conditional update goes through.
    assert http.put(f"/fhir/Observation?{query}", json=amended, headers=world.a).status_code == 200


def test_a_refused_entry_rolls_a_transaction_back_and_fails_alone_in_a_batch(
    platform: Platform, province: Province, http: TestClient
) -> None:
    world = _world(platform, province, http)
    obs = _ha_observation(http, world)
    oid, pid = obs["id"], world.patient_id
    b = province.headers(WRITER, institution=province.institution("HB", level=2))
    mine = {"identifier": [{"system": "urn:lab:HB", "value": "T1"}]}
    new_entry = {
        "fullUrl": "urn:uuid:0b5c1d1e-7f0a-4a55-9d43-2f1f4c1f0a01",
        "resource": _observation(f"Patient/{pid}", 6.1, **mine),
        "request": {"method": "POST", "url": "Observation"},
    }
    changed = {**obs, "status": "entered-in-error"}
    refused_entries = [
        {"resource": changed, "request": {"method": "PUT", "url": f"Observation/{oid}"}},
        {
            "resource": _binary([{"op": "replace", "path": "/status", "value": "cancelled"}]),
            "request": {"method": "PATCH", "url": f"Observation/{oid}"},
        },
        {"request": {"method": "DELETE", "url": f"Observation/{oid}"}},
        {
            "resource": changed,
            "request": {"method": "PUT", "url": f"Observation?_id={oid}"},
        },
    ]
    for refused in refused_entries:
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [new_entry, refused]}
        answer = http.post("/fhir", json=bundle, headers=b)
        assert answer.status_code == 403, answer.text
        issue = answer.json()["issue"][0]
        assert issue["code"] == "forbidden"
        assert issue["expression"][0].startswith("Bundle.entry[1]")
        assert "belongs to another institution" in issue["diagnostics"]
    # Rolled back whole: HB's new Observation was not kept, HA's is unchanged.
    kept = http.get("/fhir/Observation?identifier=urn:lab:HB|T1", headers=b).json()
    assert kept.get("entry", []) == []
    stored = _current(http, world, f"Observation/{oid}")
    assert (stored["meta"]["versionId"], stored["status"]) == ("1", "final")
    # The refusals are audited although their transactions rolled back.
    assert sorted(r.subtype for r in _refusals(platform, pid, "HB")) == [
        "delete",
        "patch",
        "update",
        "update",
    ]

    # In a batch only the refused entries fail.
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [new_entry, *refused_entries]}
    answer = http.post("/fhir", json=batch, headers=b)
    assert answer.status_code == 200, answer.text
    entries = answer.json()["entry"]
    assert entries[0]["response"]["status"] == "201 Created"
    for entry in entries[1:]:
        assert entry["response"]["status"] == "403 Forbidden", entry
        outcome = entry["response"]["outcome"]["issue"][0]
        assert outcome["code"] == "forbidden"
        assert "belongs to another institution" in outcome["diagnostics"]
    assert (
        len(http.get("/fhir/Observation?identifier=urn:lab:HB|T1", headers=b).json()["entry"]) == 1
    )
    stored = _current(http, world, f"Observation/{oid}")
    assert (stored["meta"]["versionId"], stored["status"]) == ("1", "final")
    assert len(_refusals(platform, pid, "HB")) == 8
    # The writer's own transaction changes it.
    own = {"resourceType": "Bundle", "type": "transaction", "entry": refused_entries[:1]}
    assert http.post("/fhir", json=own, headers=world.a).status_code == 200


def test_a_conditional_create_shows_another_institutions_match_only_to_who_may_read_it(
    platform: Platform, province: Province, http: TestClient
) -> None:
    world = _world(platform, province, http)
    pid = world.patient_id
    resident = patient("林晓梅", sequence=321)  # the same national ID as HA's Patient
    identifier = f"{NATIONAL_ID}|{resident['identifier'][0]['value']}"
    hb = province.institution("HB", level=2)
    b = province.headers(WRITER, institution=hb)
    conditional = {**b, "If-None-Exist": f"identifier={identifier}"}

    # No relationship: 200, where the match is, why it is not shown - never its body.
    answer = http.post("/fhir/Patient", json=resident, headers=conditional)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert issue["code"] == "suppressed"
    assert f"a matching Patient exists (Patient/{pid})" in issue["diagnostics"]
    assert "check the resident in" in issue["diagnostics"]
    assert "林晓梅" not in answer.text
    assert answer.headers["location"].endswith(f"/fhir/Patient/{pid}/_history/1")
    assert answer.headers["etag"] == 'W/"1"'
    assert "x-master-index-id" not in answer.headers
    minimal = http.post(
        "/fhir/Patient", json=resident, headers={**conditional, "Prefer": "return=minimal"}
    )
    assert (minimal.status_code, minimal.content) == (200, b"")
    # In a transaction the fullUrl still resolves to the match, so references work.
    full_url = "urn:uuid:6f0d3c4e-2a1b-4c5d-8e9f-0a1b2c3d4e5f"
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": full_url,
                "resource": resident,
                "request": {
                    "method": "POST",
                    "url": "Patient",
                    "ifNoneExist": f"identifier={identifier}",
                },
            },
            {
                "resource": _observation(full_url, 6.3),
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    answer = http.post("/fhir", json=transaction, headers=b)
    assert answer.status_code == 200, answer.text
    matched, created = answer.json()["entry"]
    assert matched["response"]["status"] == "200 OK"
    assert matched["response"]["location"] == f"Patient/{pid}/_history/1"
    assert "resource" not in matched
    assert matched["response"]["outcome"]["issue"][0]["code"] == "suppressed"
    assert created["response"]["status"] == "201 Created"
    assert created["resource"]["subject"]["reference"] == f"Patient/{pid}"
    batch = {**transaction, "type": "batch", "entry": transaction["entry"][:1]}
    answer = http.post("/fhir", json=batch, headers=b)
    assert answer.status_code == 200, answer.text
    assert "resource" not in answer.json()["entry"][0]
    assert answer.json()["entry"][0]["response"]["status"] == "200 OK"
    # No duplicate was created, and the withheld matches are audited as refused reads.
    agency = province.headers(CLINICIAN, institution=AGENCY)
    assert _patients_with(http, agency, identifier) == [pid]
    rows, _ = platform.audit.search(patient_ref=f"Patient/{pid}", limit=1000)
    withheld = [
        r
        for _, r in rows
        if r.institution_code == "HB" and "conditional create matched" in (r.detail or "")
    ]
    assert len(withheld) == 4
    assert all(r.outcome == "4" and "not shown" in (r.detail or "") for r in withheld)

    # Break-the-glass shows it (audited BTG) ...
    hc = province.institution("HC", level=1)
    glass = {
        **province.headers(WRITER, institution=hc),
        "If-None-Exist": f"identifier={identifier}",
        "X-Break-Glass-Reason": GLASS,
    }
    shown = http.post("/fhir/Patient", json=resident, headers=glass)
    assert shown.status_code == 200, shown.text
    assert (shown.json()["resourceType"], shown.json()["id"]) == ("Patient", pid)
    # ... and so does a care relationship.
    checked = http.post(
        "/care/check-in",
        json={"text": _dynamic_code(http, world), "terminal": "REG-01"},
        headers=province.headers(TERMINAL, institution=hb),
    )
    assert checked.status_code == 201, checked.text
    shown = http.post("/fhir/Patient", json=resident, headers=conditional)
    assert shown.status_code == 200, shown.text
    assert (shown.json()["resourceType"], shown.json()["id"]) == ("Patient", pid)
    answer = http.post("/fhir", json=transaction, headers=b)
    assert answer.json()["entry"][0]["resource"]["id"] == pid
    # The writer is shown its own match as before.
    own = http.post(
        "/fhir/Patient",
        json=resident,
        headers={**world.a, "If-None-Exist": f"identifier={identifier}"},
    )
    assert (own.status_code, own.json()["id"]) == (200, pid)
    assert _patients_with(http, agency, identifier) == [pid]


def test_a_refused_read_inside_a_bundle_is_audited_although_the_bundle_rolled_back(
    platform: Platform, province: Province, http: TestClient
) -> None:
    world = _world(platform, province, http)
    obs = _ha_observation(http, world)
    oid, pid = obs["id"], world.patient_id
    b = province.headers(WRITER, institution=province.institution("HB", level=2))

    def refused_reads() -> list[AuditRecord]:
        rows, _ = platform.audit.search(patient_ref=f"Patient/{pid}", limit=1000)
        return [
            r
            for _, r in rows
            if r.institution_code == "HB" and r.subtype in ("read", "vread") and r.outcome == "4"
        ]

    reads = [
        {"request": {"method": "GET", "url": f"Observation/{oid}"}},
        {"request": {"method": "GET", "url": f"Observation/{oid}/_history/1"}},
    ]
    for read in reads:
        transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [read]}
        answer = http.post("/fhir", json=transaction, headers=b)
        assert answer.status_code == 403, answer.text
    assert sorted(r.subtype for r in refused_reads()) == ["read", "vread"]

    batch = {"resourceType": "Bundle", "type": "batch", "entry": reads}
    answer = http.post("/fhir", json=batch, headers=b)
    assert answer.status_code == 200, answer.text
    assert [e["response"]["status"] for e in answer.json()["entry"]] == ["403 Forbidden"] * 2
    assert sorted(r.subtype for r in refused_reads()) == ["read", "read", "vread", "vread"]

    # Plain REST reads are audited once each, as before.
    assert http.get(f"/fhir/Observation/{oid}", headers=b).status_code == 403
    assert http.get(f"/fhir/Observation/{oid}/_history/1", headers=b).status_code == 403
    assert len(refused_reads()) == 6

    # A search restricted to the resident, refused inside a transaction, is audited too.
    def refused_searches() -> int:
        rows, _ = platform.audit.search(limit=1000)
        return sum(
            1
            for _, r in rows
            if r.institution_code == "HB" and r.subtype == "search-type" and r.outcome == "4"
        )

    before = refused_searches()
    search = {"request": {"method": "GET", "url": f"Observation?subject=Patient/{pid}"}}
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [search]}
    answer = http.post("/fhir", json=transaction, headers=b)
    assert answer.status_code == 403, answer.text
    assert refused_searches() == before + 1
