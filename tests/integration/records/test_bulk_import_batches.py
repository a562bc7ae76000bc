"""Bulk import in batches (decision 0036): one audit entry per chunk and patient naming every
resource written, and a chunk's new Patients registered in one batch, a refused one alone
reported."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from healthroam.bootstrap import Platform
from healthroam.db.schema import audit_events, fhir_resources
from healthroam.records.bulk_import import BulkImporter
from healthroam.security.audit_fhir import to_audit_event
from healthroam.security.audit_repository import _record
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet

from helpers import national_id, patient


def _principal() -> Principal:
    return Principal(
        client_id="test:import",
        institution_code="H001",
        scopes=ScopeSet.parse("system/*.cu"),
        end_user="operator-7",
        purpose_of_use="HOPERAT",
    )


def _observation(oid: str, subject: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
        "subject": {"reference": subject},
        "valueQuantity": {"value": 120, "unit": "g/L"},
    }


def _condition(cid: str, subject: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "subject": {"reference": subject},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "E11.9"}]},
    }


def _lines(resources: list[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(r, ensure_ascii=False).encode() for r in resources]


def _import_entries(platform: Platform) -> list[Any]:
    platform.audit.seal()
    with platform.db.transaction(readonly=True) as conn:
        rows = conn.execute(
            select(audit_events)
            .where(audit_events.c.subtype == "import")
            .order_by(audit_events.c.seq)
        ).all()
    return list(rows)


def test_one_audit_entry_per_chunk_and_patient_names_every_resource(
    platform: Platform,
) -> None:
    platform.institutions.add(code="H001", name="医院", kind="hospital", region="460106", level=3)
    organization = {"resourceType": "Organization", "id": "org1", "name": "医院"}
    resources = [
        organization,
        _observation("o1", "Patient/p1"),
        _condition("c1", "Patient/p2"),
        _observation("o2", "Patient/p1"),
        _observation("o3", "Patient/p1"),
        _condition("c2", "Patient/p2"),  # the second chunk starts here
        _observation("o4", "Patient/p1"),
    ]
    importer = BulkImporter(platform.db, platform.audit, platform.records, chunk_size=5)
    report = importer.import_lines(_principal(), _lines(resources))
    assert (report.created, report.failed) == (7, 0)

    entries = _import_entries(platform)
    found = [(e.patient_ref, e.resource_type, e.resource_id, e.detail) for e in entries]
    assert found == [
        (None, "Organization", "org1", "Organization/org1"),
        ("Patient/p1", "Observation", None, "Observation/o1 Observation/o2 Observation/o3"),
        ("Patient/p2", "Condition", "c1", "Condition/c1"),
        ("Patient/p2", "Condition", "c2", "Condition/c2"),
        ("Patient/p1", "Observation", "o4", "Observation/o4"),
    ]
    for entry in entries:  # who, when, why
        assert entry.action == "C"
        assert entry.client_id == "test:import"
        assert entry.institution_code == "H001"
        assert entry.end_user == "operator-7"
        assert entry.purpose_of_use == "HOPERAT"
        assert entry.recorded_at is not None
    # Every imported resource is named by exactly one entry.
    named = [ref for e in entries for ref in e.detail.split()]
    assert sorted(named) == sorted(f"{r['resourceType']}/{r['id']}" for r in resources)

    # Read as FHIR AuditEvent: the patient and one entity per resource written.
    event = to_audit_event(entries[1].seq, _record(entries[1]))
    whats = [entity["what"] for entity in event["entity"]]
    assert whats == [
        {"reference": "Patient/p1"},
        {"reference": "Observation/o1"},
        {"reference": "Observation/o2"},
        {"reference": "Observation/o3"},
    ]


def test_a_chunks_new_patients_are_registered_together_and_a_refused_one_fails_alone(
    platform: Platform,
) -> None:
    platform.institutions.add(code="H001", name="医院", kind="hospital", region="460106", level=3)
    refused = patient("陈大文", id="p3", sequence=157)
    # A well-formed national ID with a region code that does not exist: the registry refuses.
    refused["identifier"][0]["value"] = national_id("990106", "19900101", 157)
    resources = [
        patient(id="p1", sequence=124),
        patient("王小明", id="p2", gender="male", sequence=135),
        refused,
        patient("李华", id="p4", gender="male", sequence=146),
        _observation("o1", "Patient/p1"),
    ]
    importer = BulkImporter(platform.db, platform.audit, platform.records, chunk_size=10)
    report = importer.import_lines(_principal(), _lines(resources))
    assert (report.created, report.failed) == (4, 1)
    assert [e.line for e in report.errors] == [3]
    assert "region" in report.errors[0].detail  # refused by the registry, not by validation

    for pid in ("p1", "p2", "p4"):
        assert platform.registry.source_patient(pid) is not None
    assert platform.registry.source_patient("p3") is None
    with platform.db.transaction(readonly=True) as conn:
        ids = conn.execute(
            select(fhir_resources.c.id).where(fhir_resources.c.resource_type == "Patient")
        ).scalars()
        assert sorted(ids) == ["p1", "p2", "p4"]


def test_new_patients_of_one_chunk_in_one_batch_are_each_registered(
    platform: Platform,
) -> None:
    platform.institutions.add(code="H001", name="医院", kind="hospital", region="460106", level=3)
    resources = [
        patient(id="p1", sequence=124),
        patient("王小明", id="p2", gender="male", sequence=135),
        # the same person as p1 under another local id: linked to p1's master person
        patient(id="p1b", sequence=124),
    ]
    importer = BulkImporter(platform.db, platform.audit, platform.records, chunk_size=10)
    report = importer.import_lines(_principal(), _lines(resources))
    assert (report.created, report.failed) == (3, 0)
    found = {pid: platform.registry.source_patient(pid) for pid in ("p1", "p2", "p1b")}
    assert all(v is not None for v in found.values())
    masters = {pid: v[1].id for pid, v in found.items() if v is not None}
    assert masters["p1"] == masters["p1b"] != masters["p2"]
