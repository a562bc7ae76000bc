"""`$everything`'s Bundle entries as the database writes them (PostgreSQL) are the same text,
byte for byte, as the Python assembly (`searchset.entry_json` over loaded resources)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from healthroam.bootstrap import Platform
from healthroam.errors import NotFound
from healthroam.records.everything import _referenced, _rows_postgres, everything
from healthroam.records.model import StoredResource
from healthroam.records.repository import Key, ResourceRepository
from healthroam.records.searchset import entry_json
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet

from helpers import Province, make_patient, post_created

ALL = "system/*.cruds"


def _principal(scopes: str = ALL) -> Principal:
    return Principal(client_id="test", institution_code="H901", scopes=ScopeSet.parse(scopes))


def _texts(entries: list[str | bytes]) -> list[str]:
    return [e.decode() if isinstance(e, bytes) else e for e in entries]


def _python_entries(platform: Platform, patient_id: str, base: str) -> list[str]:
    """What `$everything` served before the database wrote the entries."""
    with platform.db.transaction() as conn:
        repo = ResourceRepository(conn)
        patients: list[Key] = [("Patient", patient_id)]
        found = list(dict.fromkeys(patients + repo.pointing_at(patients)))
        keys = list(dict.fromkeys(found + _referenced(conn, found)))
        resources = repo.load(keys)
    resources.sort(
        key=lambda r: (
            r.resource_type != "Patient",
            -r.last_updated.replace(tzinfo=r.last_updated.tzinfo or UTC).timestamp(),
            r.resource_type,
            r.id,
        )
    )
    return [entry_json(r, base, "match", None) for r in resources]


def _record(http: TestClient, h: dict[str, str]) -> str:
    pid = make_patient(http, h)
    bare = post_created(http, h, {"resourceType": "Organization"})  # stored body: {}
    named = post_created(http, h, {"resourceType": "Organization", "name": '琼海 "Clinic"'})
    base_obs: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": "2024-03-01",
    }
    post_created(http, h, base_obs | {"performer": [{"reference": f"Organization/{bare['id']}"}]})
    post_created(
        http,
        h,
        base_obs
        | {
            "meta": {"tag": [{"system": "urn:t", "code": "x"}], "profile": ["urn:p"]},
            "note": [{"text": '引号 " and \\ 斜杠\n\ttab'}],
            "performer": [{"reference": f"Organization/{named['id']}"}],
        },
    )
    post_created(http, h, base_obs | {"meta": {"source": "urn:src"}, "valueString": "é ü ß 😀"})
    return pid


@pytest.mark.parametrize("base", ["http://testserver/fhir", 'http://x/"q"\\/fhir'])
def test_entries_are_the_python_assembly(
    platform: Platform, province: Province, http: TestClient, base: str
) -> None:
    h = province.headers(ALL)
    pid = _record(http, h)
    expected = _python_entries(platform, pid, base)
    result = everything(
        platform.db, platform.audit, _principal(), [pid], audit_refs=[f"Patient/{pid}"], base=base
    )
    assert result.total == len(expected) == 6  # Patient, 3 Observations, 2 Organizations
    assert _texts(result.entries) == expected
    if platform.db.dialect == "postgresql":  # the database wrote those without a stored meta
        with platform.db.transaction() as conn:
            repo = ResourceRepository(conn)
            found = [("Patient", pid), *repo.pointing_at([("Patient", pid)])]
            rows = _rows_postgres(conn, found, '"' + base + "/")
        assert rows is not None
        assert len(rows) == 6
        assert sum(isinstance(r[4], bytes) for r in rows) == 4  # UTF-8, not decoded
        assert sum(isinstance(r[4], StoredResource) for r in rows) == 2
    for entry in _texts(result.entries):
        parsed = json.loads(entry)
        assert parsed["fullUrl"].startswith(base + "/")
        assert parsed["resource"]["meta"]["versionId"] == "1"
    # Paging and filters cut the same list.
    page = everything(
        platform.db,
        platform.audit,
        _principal(),
        [pid],
        audit_refs=[f"Patient/{pid}"],
        base=base,
        count=2,
        offset=3,
    )
    assert (page.total, _texts(page.entries)) == (6, expected[3:5])
    observations = everything(
        platform.db,
        platform.audit,
        _principal("system/Observation.rs system/Patient.rs"),
        [pid],
        audit_refs=[f"Patient/{pid}"],
        base=base,
        types=frozenset({"Observation"}),
    )
    assert _texts(observations.entries) == [
        e for e in expected if '"resourceType":"Observation"' in e
    ]


def test_visibility_since_and_unknown_patient(
    platform: Platform, province: Province, http: TestClient
) -> None:
    h = province.headers(ALL)
    pid = _record(http, h)
    base = "http://testserver/fhir"
    hidden = everything(
        platform.db,
        platform.audit,
        _principal(),
        [pid],
        audit_refs=[f"Patient/{pid}"],
        base=base,
        visible=lambda institution: institution is None,
    )
    assert _texts(hidden.entries) == []
    assert hidden.total == 0
    later = everything(
        platform.db,
        platform.audit,
        _principal(),
        [pid],
        audit_refs=[f"Patient/{pid}"],
        base=base,
        since=datetime(2999, 1, 1, tzinfo=UTC),
    )
    assert later.total == 0
    with pytest.raises(NotFound):
        everything(
            platform.db,
            platform.audit,
            _principal(),
            ["no-such-patient"],
            audit_refs=["Patient/no-such-patient"],
            base=base,
        )
