"""The FHIR read and type search through the lean ASGI handler (``FhirReadFastPath``, decision
0042) answer exactly as the FastAPI routes do, on SQLite and PostgreSQL, and it takes only the
requests those routes would get."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from sqlalchemy import select

from care_world import CLINICIAN, GLASS, _world
from healthroam.api.app import PAGE_ROUTERS, ROUTERS, create_app
from healthroam.api.fhir_read import FhirReadFastPath, shadowing
from healthroam.bootstrap import Platform, build
from healthroam.config import Settings
from healthroam.db.schema import audit_events

from helpers import Province, make_patient, post_created


@pytest.fixture
def slow(settings: Settings, platform: Platform) -> Iterator[TestClient]:
    """A second server on the same database with the fast path turned off."""
    off = settings.model_copy(update={"fhir_read_fast_path": False})
    with build(off) as other, TestClient(create_app(other), raise_server_exceptions=False) as c:
        yield c


def fast_path_of(http: TestClient) -> FhirReadFastPath:
    app: Any = http.app
    layer = app.middleware_stack
    while not isinstance(layer, FhirReadFastPath):
        layer = layer.app
    return layer


def answer(response: Any) -> tuple[Any, ...]:
    headers = response.headers
    return (
        response.status_code,
        headers.get("content-type"),
        headers.get("content-length"),
        headers.get("www-authenticate"),
        headers.get("etag"),
        headers.get("last-modified"),
        headers.get("location"),
        response.content,
    )


def audited(platform: Platform, after: int) -> tuple[list[dict[str, Any]], int]:
    """The audit entries sealed after ``after`` (a seq), without their time; the last seq."""
    platform.audit.seal()
    with platform.db.transaction(readonly=True) as conn:
        rows = conn.execute(
            select(audit_events).where(audit_events.c.seq > after).order_by(audit_events.c.seq)
        ).mappings()
        found = [dict(r) for r in rows]
    last = found[-1]["seq"] if found else after
    skipped = {"seq", "recorded_at", "prev_hash", "hash"}
    entries = [{k: v for k, v in r.items() if k not in skipped} for r in found]
    for entry in entries:  # each break-the-glass opens an access exception of its own
        entry["detail"] = re.sub(r"exception=\d+", "exception=N", entry["detail"] or "")
    return entries, last


def scope(path: str, method: str = "GET", query: bytes = b"") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "query_string": query}


def test_fast_path_answers_exactly_like_the_route(
    http: TestClient, slow: TestClient, platform: Platform, province: Province
) -> None:
    writer = province.headers("system/*.cruds")
    pid = make_patient(http, writer)
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "meta": {"tag": [{"system": "urn:t", "code": "x"}]},
        "note": [{"text": '引号 " and \\ 斜杠'}],
    }
    obs = post_created(http, writer, observation)["id"]
    gone = post_created(http, writer, {**observation, "status": "amended"})["id"]
    assert http.delete(f"/fhir/Observation/{gone}", headers=writer).status_code in (200, 204)
    reader = province.headers("system/Observation.r")
    world = _world(platform, province, http)
    ha_obs = http.get(f"/fhir/Observation?subject=Patient/{world.patient_id}", headers=world.a)
    foreign = ha_obs.json()["entry"][0]["resource"]["id"]
    other = province.headers(CLINICIAN, institution=province.institution("HB", level=2))
    cases: list[tuple[str, dict[str, str]]] = [
        (f"/fhir/Observation/{obs}", writer),  # found, with its stored meta
        (f"/fhir/Observation/{obs}", reader),  # a read-only scope
        (f"/fhir/Observation/{obs}", {**writer, "X-Purpose-Of-Use": "ETREAT"}),
        ("/fhir/Observation/nothere", writer),  # 404
        (f"/fhir/Observation/{gone}", writer),  # 410
        ("/fhir/Observation/a!b", writer),  # 400: not an id
        ("/fhir/Nonsense/1", writer),  # 404: not a type
        (f"/fhir/Observation/{obs}", {}),  # 401: no token
        (f"/fhir/Observation/{obs}", {"Authorization": "Bearer nonsense"}),
        (f"/fhir/Observation/{obs}", province.headers("system/Patient.r")),  # 403: scope
        (f"/fhir/Observation/{obs}", {**writer, "X-Purpose-Of-Use": "SHOPPING"}),  # 400
        (f"/fhir/Observation/{obs}", {**writer, "X-End-User": "not ok!"}),  # 400
        (f"/fhir/Observation/{foreign}", other),  # 403: no care relationship
        (f"/fhir/Observation/{foreign}", {**other, "X-Break-Glass-Reason": GLASS}),  # 200, BTG
        (f"/fhir/Patient/{pid}", writer),  # the route (Patient has routes of that shape)
        (f"/fhir/Observation/{obs}?_format=json", writer),  # the route (a query string)
        # searches
        (f"/fhir/Observation?subject=Patient/{pid}", writer),
        (f"/fhir/Observation?subject=Patient/{pid}&_count=1", reader),  # 403: no .s scope
        (f"/fhir/Observation?subject=Patient/{pid}&_count=1", province.headers("system/*.rs")),
        (f"/fhir/Observation?subject=Patient/{pid}&_elements=status&_total=accurate", writer),
        (f"/fhir/Observation?subject=Patient/{world.patient_id}", other),  # 403: the gate
        ("/fhir/Observation?nonsense=1", {**writer, "Prefer": "handling=strict"}),  # 400
        ("/fhir/Observation?date=notadate", writer),  # 400
        ("/fhir/Observation", {}),  # 401
        ("/fhir/Nonsense?x=1", writer),  # 404
        (f"/fhir/Patient?_id={pid}", writer),  # the registry's route
        ("/fhir/metadata", writer),  # its own route
    ]
    last = audited(platform, 0)[1]
    for url, headers in cases:
        fast = http.get(url, headers=headers)
        fast_entries, last = audited(platform, last)
        plain = slow.get(url, headers=headers)
        plain_entries, last = audited(platform, last)
        assert answer(fast) == answer(plain), url
        # The same audit entries, but for their time (who, what, why, outcome, detail).
        assert fast_entries == plain_entries, url
    assert http.get(f"/fhir/Observation/{obs}", headers=writer).json()["note"] == [
        {"text": '引号 " and \\ 斜杠'}
    ]


def test_fast_path_answers_reads_without_the_routes_and_passes_the_rest_on(
    http: TestClient, province: Province
) -> None:
    writer = province.headers("system/*.cruds")
    pid = make_patient(http, writer)
    obs = post_created(
        http,
        writer,
        {"resourceType": "Observation", "status": "final", "code": {"text": "pulse"}},
    )["id"]
    layer = fast_path_of(http)
    routes = layer.app
    passed: list[str] = []

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        passed.append(scope["path"])
        await routes(scope, receive, send)

    layer.app = spy
    try:
        assert http.get(f"/fhir/Observation/{obs}", headers=writer).status_code == 200
        assert http.get("/fhir/Observation/nothere", headers=writer).status_code == 404
        assert http.get("/fhir/Observation?status=final", headers=writer).status_code == 200
        assert passed == []  # answered by the fast path
        assert http.get(f"/fhir/Patient/{pid}", headers=writer).status_code == 200
        assert http.get(f"/fhir/Observation/{obs}/_history/1", headers=writer).status_code == 200
        assert http.get(f"/fhir/Patient?_id={pid}", headers=writer).status_code == 200
        assert passed == [
            f"/fhir/Patient/{pid}",
            f"/fhir/Observation/{obs}/_history/1",
            "/fhir/Patient",
        ]
    finally:
        layer.app = routes


def test_fast_path_takes_only_what_the_read_route_would_get(http: TestClient) -> None:
    layer = fast_path_of(http)
    assert layer.takes(scope("/fhir/Observation/abc-1.2")) == ("Observation", "abc-1.2")
    assert layer.takes(scope("/fhir/Observation", query=b"code=x")) == ("Observation", None)
    assert layer.takes(scope("/fhir/Observation")) == ("Observation", None)
    declined = [
        scope("/fhir/Patient", query=b"family=x"),  # the registry's PDQm search
        scope("/fhir/AuditEvent"),
        scope("/fhir/_history"),
        scope("/fhir/$export"),
        scope("/fhir/"),
        scope("/fhir/Observation", method="POST"),
        scope("/fhir/Patient/" + "A" * 64),  # the golden Patient
        scope("/fhir/Patient/p1"),  # Patient has other routes of this shape
        scope("/fhir/Patient/$export"),
        scope("/fhir/Patient/$ihe-pix"),
        scope("/fhir/AuditEvent/12"),
        scope("/fhir/Observation/_history"),
        scope("/fhir/$export-status/job1"),
        scope("/fhir/.well-known/smart-configuration"),
        scope("/fhir/metadata"),
        scope("/fhir/Observation/"),
        scope("/fhir/Observation/1/_history"),
        scope("/fhir/Observation/1/_history/1"),
        scope("/fhir/Observation/abc", query=b"_format=json"),
        scope("/fhir/Observation/abc", method="HEAD"),
        scope("/fhir/Observation/abc", method="PUT"),
        scope("/fhirx/Observation/abc"),
        {"type": "websocket", "path": "/fhir/Observation/abc"},
    ]
    for case in declined:
        assert layer.takes(case) is None, case
    names, types, ids = shadowing((*ROUTERS, *PAGE_ROUTERS))
    assert {"Patient", "AuditEvent", "metadata", "_history"} <= names
    assert {"Patient", "AuditEvent"} <= types
    assert "_history" in ids
    for path in ("/{a}/{b}", "/{a}"):
        catch_all = APIRouter(prefix="/fhir")
        catch_all.add_api_route(path, lambda: None, methods=["GET"])
        with pytest.raises(ValueError, match="shadow"):
            shadowing([catch_all])
