"""Transaction Bundles with their version, index and audit rows written together at the end
(decision 0058; on PostgreSQL through records/deferred.py): what is stored is what the
per-entry path (a batch, each entry in its own transaction) stores; references between
entries, conditional references and updates still see the Bundle's earlier entries; a failure
still rolls everything back and names the entry (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import literal, select, union_all

from healthroam.bootstrap import Platform
from healthroam.db.schema import audit_events, audit_inbox, fhir_resource_versions, fhir_resources
from healthroam.db.tables_records import INDEX_TABLES
from healthroam.synth.clinical import ClinicalGenerator, transaction_bundle

from helpers import Province

ALL = "system/*.cruds"
_AUDIT_COLUMNS = (
    "action",
    "event_type",
    "subtype",
    "outcome",
    "client_id",
    "institution_code",
    "purpose_of_use",
    "resource_type",
    "resource_id",
    "patient_ref",
    "query",
    "detail",
)


def _history() -> list[dict[str, Any]]:
    generator = ClinicalGenerator(7)
    patient = next(generator.patients(40, chunk_size=40))[0]
    return generator.history(patient)


def _audit(platform: Platform) -> list[tuple[Any, ...]]:
    """Every audit entry so far, in order (sealed ones first), read in one statement."""
    sealed = select(
        literal(0).label("part"),
        audit_events.c.seq.label("n"),
        *(audit_events.c[c] for c in _AUDIT_COLUMNS),
    )
    inbox = select(
        literal(1).label("part"),
        audit_inbox.c.id.label("n"),
        *(audit_inbox.c[c] for c in _AUDIT_COLUMNS),
    )
    both = union_all(sealed, inbox).subquery()
    with platform.db.transaction() as conn:
        rows = conn.execute(select(both).order_by(both.c.part, both.c.n)).all()
    return [tuple(r[2:]) for r in rows]


def _plain(value: Any, since: datetime) -> Any:
    if isinstance(value, datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=UTC)
        return "NOW" if stamp >= since else stamp.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return value


def _rows(platform: Platform, since: datetime) -> list[tuple[str, str]]:
    """Every resource, version and index row, without generated ids; write times as NOW."""
    found: list[tuple[str, str]] = []
    with platform.db.transaction() as conn:
        for table in (fhir_resources, fhir_resource_versions, *INDEX_TABLES):
            columns = [c for c in table.c if c.name not in ("row_id", "last_updated")]
            for row in conn.execute(select(*columns)):
                plain = [_plain(v, since) for v in row]
                found.append((table.name, json.dumps(plain, ensure_ascii=False, default=str)))
    return found


def _normalised(rows: list[Any], names: dict[str, str]) -> list[str]:
    out = []
    for row in rows:
        text = json.dumps(row, ensure_ascii=False, default=str)
        for old, new in names.items():
            text = text.replace(old, new)
        out.append(text)
    return out


def _bundle(kind: str, prefix: str, history: list[dict[str, Any]]) -> dict[str, Any]:
    """The history without its Patient (a registration differs the second time): resources
    referred to by others are PUT with ``prefix``ed ids, the others POSTed (server ids)."""
    resources = [r for r in history if r["resourceType"] != "Patient"]
    patient = next(r for r in history if r["resourceType"] == "Patient")
    text = json.dumps(resources, ensure_ascii=False)
    keys = {f"{r['resourceType']}/{r['id']}" for r in resources}
    targets = {k for k in keys if f'"reference": "{k}"' in text}
    text = text.replace(
        f'"reference": "Patient/{patient["id"]}"', f'"reference": "Patient/{prefix}pat"'
    )
    for key in targets:
        rtype, rid = key.split("/")
        text = text.replace(f'"reference": "{key}"', f'"reference": "{rtype}/{prefix}{rid}"')
    entries = []
    for resource in json.loads(text):
        key = f"{resource['resourceType']}/{resource['id']}"
        if key in targets:
            resource["id"] = f"{prefix}{resource['id']}"
            url = f"{resource['resourceType']}/{resource['id']}"
            entries.append({"resource": resource, "request": {"method": "PUT", "url": url}})
        else:
            del resource["id"]
            request = {"method": "POST", "url": resource["resourceType"]}
            entries.append({"resource": resource, "request": request})
    assert len(targets) >= 2
    assert len(entries) - len(targets) >= 10
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def test_a_transaction_stores_what_the_per_entry_path_stores(
    http: TestClient, province: Province, platform: Platform
) -> None:
    h = province.headers(ALL)
    history = _history()
    since = datetime.now(UTC)
    answers = {}
    marks = [len(_audit(platform))]
    for kind, prefix in (("transaction", "txq9-"), ("batch", "bxq9-")):
        r = http.post("/fhir", json=_bundle(kind, prefix, history), headers=h)
        assert r.status_code == 200, r.text
        answers[prefix] = r.json()["entry"]
        assert all(e["response"]["status"] == "201 Created" for e in answers[prefix])
        marks.append(len(_audit(platform)))
    audit = _audit(platform)
    rows = _rows(platform, since)
    names = {}
    for prefix, entries in answers.items():
        for index, entry in enumerate(entries):
            rid = entry["response"]["location"].split("/")[1]
            names[rid] = f"E{index}"  # a server-assigned id, or a prefixed one
        names[prefix] = ""

    def of(prefix: str, found: list[str]) -> list[str]:
        own = {rid for rid, name in names.items() if name and any(
            rid == e["response"]["location"].split("/")[1] for e in answers[prefix]
        )} | {prefix}  # fmt: skip
        return [r for r in found if any(rid in r for rid in own)]

    row_texts = [json.dumps(r, ensure_ascii=False) for r in rows]
    transaction_rows = sorted(_normalised(of("txq9-", row_texts), names))
    batch_rows = sorted(_normalised(of("bxq9-", row_texts), names))
    assert len(transaction_rows) > 3 * len(answers["txq9-"])  # versions and index rows too
    assert transaction_rows == batch_rows
    # the same audit entries, in the same order
    transaction_audit = _normalised(audit[marks[0] : marks[1]], names)
    batch_audit = _normalised(audit[marks[1] : marks[2]], names)
    assert len(transaction_audit) == len(answers["txq9-"])
    assert transaction_audit == batch_audit


def test_a_synthetic_ingest_bundle_is_searchable_and_matched_again(
    http: TestClient, province: Province
) -> None:
    """The bench's Bundle: urn:uuid fullUrls everywhere, the Patient a conditional create."""
    h = province.headers(ALL)
    history = _history()
    bundle = transaction_bundle(history)
    r = http.post("/fhir", json=bundle, headers=h)
    assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    assert [e["response"]["status"] for e in entries] == ["201 Created"] * len(history)
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    pid = entries[kinds.index("Patient")]["response"]["location"].split("/")[1]
    observations = [e for e, k in zip(entries, kinds, strict=True) if k == "Observation"]
    assert observations
    found = http.get(f"/fhir/Observation?subject=Patient/{pid}&_count=500", headers=h).json()
    assert found["total"] == len(observations)
    assert all(e["resource"]["subject"]["reference"] == f"Patient/{pid}" for e in found["entry"])
    # the same Bundle again: the Patient is matched (its index rows were written), the rest new
    again = http.post("/fhir", json=transaction_bundle(history), headers=h)
    assert again.status_code == 200, again.text
    second = again.json()["entry"]
    assert second[kinds.index("Patient")]["response"]["status"] == "200 OK"
    assert second[kinds.index("Patient")]["response"]["location"].startswith(f"Patient/{pid}/")
    found = http.get(f"/fhir/Observation?subject=Patient/{pid}&_summary=count", headers=h).json()
    assert found["total"] == 2 * len(observations)


def _obs(identifier: str, subject: str, status: str = "final") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": status,
        "identifier": [{"system": "urn:test:obs", "value": identifier}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": subject},
        "valueQuantity": {"value": 70, "unit": "/min"},
    }


def test_a_conditional_update_sees_the_bundles_own_creates(
    http: TestClient, province: Province
) -> None:
    h = province.headers(ALL)
    patient = "urn:uuid:0f6b8d6e-8d47-4b1a-9d0e-4b7c1a2f3e01"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient,
                "resource": {
                    "resourceType": "Patient",
                    "name": [{"family": "Chen"}],
                    "identifier": [{"system": "urn:test:mrn", "value": "C1"}],
                },
                "request": {
                    "method": "POST",
                    "url": "Patient",
                    "ifNoneExist": "identifier=urn:test:mrn|C1",
                },
            },
            {
                "resource": _obs("X1", patient),
                "request": {"method": "POST", "url": "Observation"},
            },
            {  # runs after the POSTs: its search must find the Observation just created
                "resource": _obs("X1", patient, status="amended"),
                "request": {"method": "PUT", "url": "Observation?identifier=urn:test:obs|X1"},
            },
        ],
    }
    r = http.post("/fhir", json=bundle, headers=h)
    assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    pid = entries[0]["response"]["location"].split("/")[1]
    oid = entries[1]["response"]["location"].split("/")[1]
    assert entries[2]["response"]["status"] == "200 OK"
    assert entries[2]["response"]["location"] == f"Observation/{oid}/_history/2"
    found = http.get(f"/fhir/Observation?subject=Patient/{pid}", headers=h).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [oid]
    assert found["entry"][0]["resource"]["status"] == "amended"
    # the stale index rows of version 1 are gone, version 2's are there
    gone = http.get("/fhir/Observation?status=final&_summary=count", headers=h).json()
    assert gone["total"] == 0
    # a second Bundle's conditional reference finds the committed Patient by its identifier
    second = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": _obs("X2", "Patient?identifier=urn:test:mrn|C1"),
                "request": {"method": "POST", "url": "Observation"},
            }
        ],
    }
    r = http.post("/fhir", json=second, headers=h)
    assert r.status_code == 200, r.text
    found = http.get(f"/fhir/Observation?subject=Patient/{pid}&_summary=count", headers=h).json()
    assert found["total"] == 2


def test_a_late_failure_rolls_back_every_row_and_names_the_entry(
    http: TestClient, province: Province, platform: Platform
) -> None:
    h = province.headers(ALL)
    existing = http.put("/fhir/Observation/kept", json={**_obs("K", "Patient/p"), "id": "kept"},
                        headers=h)  # fmt: skip
    assert existing.status_code == 201
    since = datetime.now(UTC)
    before_rows, before_audit = _rows(platform, since), _audit(platform)
    entries: list[dict[str, Any]] = [
        {
            "resource": _obs(f"N{i}", "Patient/p"),
            "request": {"method": "POST", "url": "Observation"},
        }
        for i in range(30)
    ]
    entries.append(
        {
            "resource": {**_obs("K", "Patient/p", status="amended"), "id": "kept"},
            "request": {"method": "PUT", "url": "Observation/kept", "ifMatch": 'W/"7"'},
        }
    )
    r = http.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                 "entry": entries}, headers=h)  # fmt: skip
    assert r.status_code == 412, r.text
    assert r.json()["issue"][0]["expression"][0].startswith("Bundle.entry[30]")
    assert _rows(platform, since) == before_rows
    assert _audit(platform) == before_audit
    # the connection is usable and nothing is left deferred: the next Bundle stores only its own
    ok = http.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                  "entry": entries[:2]}, headers=h)  # fmt: skip
    assert ok.status_code == 200, ok.text
    count = http.get("/fhir/Observation?_summary=count", headers=h).json()
    assert count["total"] == 3


def test_an_invalid_create_among_many_is_named_and_nothing_is_stored(
    http: TestClient, province: Province
) -> None:
    """Consecutive creates are written together, but each is checked in turn first."""
    h = province.headers(ALL)
    entries: list[dict[str, Any]] = [
        {
            "resource": _obs(f"V{i}", "Patient/p"),
            "request": {"method": "POST", "url": "Observation"},
        }
        for i in range(12)
    ]
    entries[6]["resource"]["valueQuantity"]["value"] = "seventy"
    entries[9]["resource"]["status"] = "not-a-status"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    r = http.post("/fhir", json=bundle, headers=h)
    assert r.status_code == 422, r.text
    assert r.json()["issue"][0]["expression"][0].startswith("Bundle.entry[6]")
    assert http.get("/fhir/Observation?_summary=count", headers=h).json()["total"] == 0
