"""The FHIR R4 store: interactions, search, history, bundles (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from healthroam.bootstrap import Platform

from helpers import Province, make_patient, post_created

ALL = "system/*.cruds"


@pytest.fixture
def h(province: Province) -> dict[str, str]:
    return province.headers(ALL)


def obs(
    subject: str, code: str = "8867-4", value: float = 72, when: str = "2024-03-01", **extra: Any
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": "Heart rate"}]},
        "subject": {"reference": subject},
        "effectiveDateTime": when,
        "valueQuantity": {
            "value": value,
            "unit": "beats/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
        **extra,
    }


def ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def search(http: TestClient, h: dict[str, str], url: str) -> dict[str, Any]:
    r = http.get(url, headers=h)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# --- interactions ------------------------------------------------------------------------------


def test_crud_versions_and_delete(http: TestClient, h: dict[str, str]) -> None:
    pid = make_patient(http, h)
    created = post_created(http, h, obs(f"Patient/{pid}"))
    oid = created["id"]
    assert http.get(f"/fhir/Observation/{oid}", headers=h).json() == created
    changed = {**created, "status": "amended"}
    r = http.put(f"/fhir/Observation/{oid}", json=changed, headers=h)
    assert r.status_code == 200
    assert r.headers["etag"] == 'W/"2"'
    assert http.get(f"/fhir/Observation/{oid}/_history/1", headers=h).json()["status"] == "final"
    assert http.delete(f"/fhir/Observation/{oid}", headers=h).status_code == 200
    gone = http.get(f"/fhir/Observation/{oid}", headers=h)
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    history = search(http, h, f"/fhir/Observation/{oid}/_history")
    assert [e["response"]["etag"] for e in history["entry"]] == ['W/"3"', 'W/"2"', 'W/"1"']
    assert "resource" not in history["entry"][0]
    assert http.get(f"/fhir/Observation/{oid}/_history/3", headers=h).status_code == 410


def test_update_as_create_and_if_match(http: TestClient, h: dict[str, str]) -> None:
    body = obs("Patient/x", id="client-id-1")
    r = http.put("/fhir/Observation/client-id-1", json=body, headers=h)
    assert r.status_code == 201
    stale = http.put("/fhir/Observation/client-id-1", json=body, headers={**h, "If-Match": 'W/"7"'})
    assert stale.status_code == 412
    ok = http.put("/fhir/Observation/client-id-1", json=body, headers={**h, "If-Match": 'W/"1"'})
    assert ok.status_code == 200
    assert ok.json()["meta"]["versionId"] == "2"
    wrong_id = http.put("/fhir/Observation/other", json=body, headers=h)
    assert wrong_id.status_code == 400


def test_conditional_create_update_delete(http: TestClient, h: dict[str, str]) -> None:
    ident: dict[str, Any] = {"identifier": [{"system": "urn:lab", "value": "A1"}]}
    first = http.post(
        "/fhir/Observation",
        json=obs("Patient/p", **ident),
        headers={**h, "If-None-Exist": "identifier=urn:lab|A1"},
    )
    again = http.post(
        "/fhir/Observation",
        json=obs("Patient/p", **ident),
        headers={**h, "If-None-Exist": "identifier=urn:lab|A1"},
    )
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    upd = http.put(
        "/fhir/Observation?identifier=urn:lab|A1",
        json={**obs("Patient/p", **ident), "status": "amended"},
        headers=h,
    )
    assert upd.status_code == 200
    assert upd.json()["id"] == first.json()["id"]
    new = http.put("/fhir/Observation?identifier=urn:lab|B2", json=obs("Patient/p"), headers=h)
    assert new.status_code == 201
    post_created(http, h, obs("Patient/p", **ident))  # now two match
    assert (
        http.put("/fhir/Observation?identifier=urn:lab|A1", json=obs("Patient/p"), headers=h)
    ).status_code == 412
    assert http.delete(f"/fhir/Observation?_id={new.json()['id']}", headers=h).status_code == 200
    assert http.get(f"/fhir/Observation/{new.json()['id']}", headers=h).status_code == 410


def test_json_patch(http: TestClient, h: dict[str, str]) -> None:
    oid = post_created(http, h, obs("Patient/p"))["id"]
    ops = [
        {"op": "test", "path": "/status", "value": "final"},
        {"op": "replace", "path": "/status", "value": "amended"},
        {"op": "add", "path": "/note", "value": [{"text": "rechecked"}]},
    ]
    hp = {**h, "Content-Type": "application/json-patch+json"}
    r = http.patch(f"/fhir/Observation/{oid}", content=json.dumps(ops), headers=hp)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "amended"
    assert r.json()["note"] == [{"text": "rechecked"}]
    failed = http.patch(f"/fhir/Observation/{oid}", content=json.dumps(ops[:1]), headers=hp)
    assert failed.status_code == 422
    bad = [{"op": "replace", "path": "/status", "value": "nonsense"}]
    assert (
        http.patch(f"/fhir/Observation/{oid}", content=json.dumps(bad), headers=hp).status_code
        == 422
    )
    stale = {**hp, "If-Match": 'W/"1"'}
    assert (
        http.patch(f"/fhir/Observation/{oid}", content=json.dumps(ops[1:2]), headers=stale)
    ).status_code == 412


def test_patient_update_rematches_and_delete_is_refused(
    http: TestClient, h: dict[str, str], platform: Platform
) -> None:
    pid = make_patient(http, h)
    current = http.get(f"/fhir/Patient/{pid}", headers=h).json()
    current["name"] = [{"text": "黎阿妹新"}]
    r = http.put(f"/fhir/Patient/{pid}", json=current, headers=h)
    assert r.status_code == 200
    source = platform.registry.source_patient(pid)
    assert source is not None
    assert http.delete(f"/fhir/Patient/{pid}", headers=h).status_code == 405


def test_scopes_are_checked_per_type(http: TestClient, province: Province) -> None:
    reader = province.headers("system/Observation.rs")
    assert http.post("/fhir/Observation", json=obs("Patient/p"), headers=reader).status_code == 403
    assert http.get("/fhir/Condition?code=1", headers=reader).status_code == 403
    assert http.get("/fhir/Observation?code=1", headers=reader).status_code == 200
    chained = http.get("/fhir/Observation?subject:Patient.name=x", headers=reader)
    assert chained.status_code == 403
    assert http.get("/fhir/NoSuchType/1", headers=reader).status_code == 404
    assert http.get("/fhir/_history", headers=reader).status_code == 403


# --- search ------------------------------------------------------------------------------------


@pytest.fixture
def data(http: TestClient, h: dict[str, str]) -> dict[str, str]:
    p1 = make_patient(http, h, 124)
    p2 = make_patient(http, h, 135, name="王小明", gender="male", born="1985-06-15")
    out = {"p1": p1, "p2": p2}
    out["o1"] = post_created(http, h, obs(f"Patient/{p1}", "8867-4", 72, "2024-03-01"))["id"]
    out["o2"] = post_created(http, h, obs(f"Patient/{p1}", "8867-4", 120, "2024-05-10T10:00:00Z"))[
        "id"
    ]
    out["o3"] = post_created(
        http,
        h,
        {
            **obs(f"Patient/{p2}", "85354-9", 0, "2023-12-31"),
            "valueQuantity": {
                "value": 5,
                "unit": "mg",
                "system": "http://unitsofmeasure.org",
                "code": "mg",
            },
            "component": [
                {
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                    "valueQuantity": {
                        "value": 140,
                        "system": "http://unitsofmeasure.org",
                        "code": "mm[Hg]",
                    },
                }
            ],
        },
    )["id"]
    return out


def test_token_search(http: TestClient, h: dict[str, str], data: dict[str, str]) -> None:
    assert sorted(ids(search(http, h, "/fhir/Observation?code=8867-4"))) == sorted(
        [data["o1"], data["o2"]]
    )
    assert len(ids(search(http, h, "/fhir/Observation?code=http://loinc.org|8867-4"))) == 2
    assert ids(search(http, h, "/fhir/Observation?code=|8867-4")) == []
    assert len(ids(search(http, h, "/fhir/Observation?code=http://loinc.org|"))) == 3
    assert ids(search(http, h, "/fhir/Observation?code:not=8867-4")) == [data["o3"]]
    assert len(ids(search(http, h, "/fhir/Observation?code:text=heart"))) == 3
    assert len(ids(search(http, h, "/fhir/Observation?code=8867-4,85354-9"))) == 3


def test_identifier_of_type(http: TestClient, h: dict[str, str]) -> None:
    mr = {
        "type": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]
        },
        "system": "urn:mrn",
        "value": "M-1",
    }
    oid = post_created(http, h, obs("Patient/p", identifier=[mr]))["id"]
    url = (
        "/fhir/Observation?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|M-1"
    )
    assert ids(search(http, h, url)) == [oid]


def test_string_search(http: TestClient, h: dict[str, str]) -> None:
    a = post_created(http, h, {"resourceType": "Organization", "name": "Hôpital Saint-Éloi"})["id"]
    b = post_created(http, h, {"resourceType": "Organization", "name": "Hospital Central"})["id"]
    assert sorted(ids(search(http, h, "/fhir/Organization?name=hop"))) == [a]
    assert sorted(ids(search(http, h, "/fhir/Organization?name=HOS"))) == [b]
    assert ids(search(http, h, "/fhir/Organization?name:exact=Hospital Central")) == [b]
    assert ids(search(http, h, "/fhir/Organization?name:exact=hospital central")) == []
    assert ids(search(http, h, "/fhir/Organization?name:contains=eloi")) == [a]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("date=2024-03-01", ["o1"]),
        ("date=2024-03", ["o1"]),
        ("date=ge2024-03-02", ["o2"]),
        ("date=gt2024-03-01", ["o2"]),
        ("date=lt2024-03-01", ["o3"]),
        ("date=le2024-03-01", ["o1", "o3"]),
        ("date=ne2024-03-01", ["o2", "o3"]),
        ("date=sa2024-03-01", ["o2"]),
        ("date=eb2024", ["o3"]),
        ("date=ap2024-05-10", ["o1", "o2"]),  # 10% of the distance from today
        ("date=ge2024-01-01&date=lt2024-04-01", ["o1"]),
    ],
)
def test_date_prefixes(
    http: TestClient, h: dict[str, str], data: dict[str, str], query: str, expected: list[str]
) -> None:
    found = ids(search(http, h, f"/fhir/Observation?{query}"))
    assert sorted(found) == sorted(data[k] for k in expected)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("value-quantity=72", ["o1"]),
        ("value-quantity=gt100", ["o2"]),
        ("value-quantity=le72|http://unitsofmeasure.org|/min", ["o1"]),
        ("value-quantity=5|http://unitsofmeasure.org|mg", ["o3"]),
        ("value-quantity=0.005|http://unitsofmeasure.org|g", ["o3"]),
        ("value-quantity=ap110", ["o2"]),
        ("component-code-value-quantity=http://loinc.org|8480-6$gt130", ["o3"]),
        ("component-code-value-quantity=http://loinc.org|8480-6$lt130", []),
        ("code-value-quantity=8867-4$ge100", ["o2"]),
    ],
)
def test_quantity_and_composite(
    http: TestClient, h: dict[str, str], data: dict[str, str], query: str, expected: list[str]
) -> None:
    found = ids(search(http, h, f"/fhir/Observation?{query}"))
    assert sorted(found) == sorted(data[k] for k in expected)


def test_reference_chain_has_and_missing(
    http: TestClient, h: dict[str, str], data: dict[str, str]
) -> None:
    p1, p2 = data["p1"], data["p2"]
    assert len(ids(search(http, h, f"/fhir/Observation?subject=Patient/{p1}"))) == 2
    assert len(ids(search(http, h, f"/fhir/Observation?subject={p1}"))) == 2
    assert len(ids(search(http, h, f"/fhir/Observation?patient:Patient={p2}"))) == 1
    assert ids(search(http, h, "/fhir/Observation?subject.name=王")) == [data["o3"]]
    assert ids(search(http, h, "/fhir/Observation?subject:Patient.gender=male")) == [data["o3"]]
    r = http.post(
        "/fhir/Patient/_search",
        content="_has:Observation:subject:code=85354-9",
        headers={**h, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200
    assert ids(r.json()) == [p2]
    assert ids(search(http, h, "/fhir/Observation?encounter:missing=false")) == []
    assert len(ids(search(http, h, "/fhir/Observation?encounter:missing=true"))) == 3
    assert len(ids(search(http, h, "/fhir/Observation?value-quantity:missing=false"))) == 3


def test_include_revinclude_sort_and_summary(
    http: TestClient, h: dict[str, str], data: dict[str, str]
) -> None:
    b = search(http, h, f"/fhir/Observation?subject={data['p1']}&_include=Observation:subject")
    assert ids(b, "include") == [data["p1"]]
    r = http.post(
        "/fhir/Patient/_search",
        content=f"_id={data['p1']}&_revinclude=Observation:subject",
        headers={**h, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert sorted(ids(r.json(), "include")) == sorted([data["o1"], data["o2"]])
    asc = ids(search(http, h, "/fhir/Observation?_sort=date"))
    assert asc == [data["o3"], data["o1"], data["o2"]]
    desc = ids(search(http, h, "/fhir/Observation?_sort=-date"))
    assert desc == [data["o2"], data["o1"], data["o3"]]
    multi = ids(search(http, h, "/fhir/Observation?_sort=code,-value-quantity"))
    assert multi == [data["o3"], data["o2"], data["o1"]]
    count = search(http, h, "/fhir/Observation?_summary=count")
    assert count["total"] == 3
    assert "entry" not in count
    elements = search(http, h, "/fhir/Observation?_elements=status&_count=1")
    resource = elements["entry"][0]["resource"]
    assert set(resource) == {"resourceType", "id", "meta", "status"}
    assert "total" not in search(http, h, "/fhir/Observation?_total=none&_count=1")


def test_unknown_parameters_lenient_or_strict(
    http: TestClient, h: dict[str, str], data: dict[str, str]
) -> None:
    lenient = search(http, h, "/fhir/Observation?nonsense=1")
    assert lenient["entry"][-1]["search"]["mode"] == "outcome"
    strict = http.get("/fhir/Observation?nonsense=1", headers={**h, "Prefer": "handling=strict"})
    assert strict.status_code == 400


def test_meta_params(http: TestClient, h: dict[str, str]) -> None:
    meta = {
        "tag": [{"system": "urn:t", "code": "x"}],
        "profile": ["http://example.org/p"],
        "security": [{"system": "urn:s", "code": "R"}],
        "source": "urn:src",
    }
    oid = post_created(http, h, obs("Patient/p", meta=meta))["id"]
    post_created(http, h, obs("Patient/p"))
    for q in (
        "_tag=urn:t|x",
        "_profile=http://example.org/p",
        "_security=R",
        "_source=urn:src",
        f"_id={oid}",
        "_lastUpdated=gt2000-01-01&_tag=x",
    ):
        assert ids(search(http, h, f"/fhir/Observation?{q}")) == [oid], q


def test_uri_and_number(http: TestClient, h: dict[str, str]) -> None:
    vs = post_created(
        http,
        h,
        {
            "resourceType": "ValueSet",
            "status": "draft",
            "url": "http://example.org/fhir/ValueSet/a",
        },
    )["id"]
    assert ids(search(http, h, "/fhir/ValueSet?url=http://example.org/fhir/ValueSet/a")) == [vs]
    assert ids(search(http, h, "/fhir/ValueSet?url:below=http://example.org/fhir")) == [vs]
    assert ids(
        search(http, h, "/fhir/ValueSet?url:above=http://example.org/fhir/ValueSet/a/x")
    ) == [vs]
    risk = post_created(
        http,
        h,
        {
            "resourceType": "RiskAssessment",
            "status": "final",
            "subject": {"reference": "Patient/p"},
            "prediction": [{"probabilityDecimal": 0.25}],
        },
    )["id"]
    assert ids(search(http, h, "/fhir/RiskAssessment?probability=gt0.2")) == [risk]
    assert ids(search(http, h, "/fhir/RiskAssessment?probability=0.25")) == [risk]
    assert ids(search(http, h, "/fhir/RiskAssessment?probability=lt0.2")) == []


def test_paging_is_stable_while_others_write(http: TestClient, h: dict[str, str]) -> None:
    made = [post_created(http, h, obs("Patient/p", value=i))["id"] for i in range(5)]
    for query in ("_count=2", "_count=2&_sort=-value-quantity"):
        seen: list[str] = []
        page = search(http, h, f"/fhir/Observation?{query}")
        seen += ids(page)
        post_created(http, h, obs("Patient/p", value=99))  # a concurrent write between pages
        while True:
            nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
            if not nxt:
                break
            page = search(http, h, nxt[0].replace("http://testserver", ""))
            seen += ids(page)
        assert len(seen) == len(set(seen))
        assert set(made) <= set(seen)


def test_a_date_window_pages_stably_while_others_write(http: TestClient, h: dict[str, str]) -> None:
    """The short window's page is read from the date rows' stamps (decision 0059): a write
    between pages (a new match, an update moving one already seen to the end) neither
    repeats nor skips one of those there before."""

    def visit(day: int) -> dict[str, Any]:
        start = f"2021-03-{day:02d}T08:00:00Z"
        return {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "period": {"start": start, "end": start.replace("T08", "T09")},
        }

    made = [post_created(http, h, visit(1 + i % 7))["id"] for i in range(7)]
    page = search(http, h, "/fhir/Encounter?date=ge2021-03-01&date=lt2021-03-08&_count=2")
    seen = ids(page)
    post_created(http, h, visit(3))  # a concurrent write between pages
    moved = seen[0]
    r = http.put(f"/fhir/Encounter/{moved}", json={**visit(2), "id": moved}, headers=h)
    assert r.status_code == 200, r.text
    while True:
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not nxt:
            break
        page = search(http, h, nxt[0].replace("http://testserver", ""))
        seen += ids(page)
    assert set(made) <= set(seen)
    assert seen.count(moved) == 2  # seen first, then again at the end (its new lastUpdated)
    assert len(seen) == len(set(seen)) + 1
    assert seen[-1] == moved


# --- history -----------------------------------------------------------------------------------


def test_history_params(http: TestClient, h: dict[str, str]) -> None:
    a = post_created(http, h, obs("Patient/p"))
    mid = a["meta"]["lastUpdated"]
    http.put(f"/fhir/Observation/{a['id']}", json={**a, "status": "amended"}, headers=h)
    post_created(http, h, obs("Patient/q"))
    system = search(http, h, "/fhir/_history?_count=2")
    assert len(system["entry"]) == 2
    assert any(link["relation"] == "next" for link in system["link"])
    typed = search(http, h, "/fhir/Observation/_history")
    assert len(typed["entry"]) == 3
    since = search(http, h, f"/fhir/Observation/{a['id']}/_history?_since={mid}")
    assert len(since["entry"]) == 2
    at = search(http, h, f"/fhir/Observation/{a['id']}/_history?_at={mid}")
    assert [e["resource"]["status"] for e in at["entry"]] == ["final"]
    rest = search(http, h, system["link"][1]["url"].replace("http://testserver", ""))
    assert len(rest["entry"]) >= 1


# --- bundles -----------------------------------------------------------------------------------


def test_transaction_with_references_and_conditional(http: TestClient, h: dict[str, str]) -> None:
    existing = post_created(
        http,
        h,
        {
            "resourceType": "Organization",
            "name": "Org",
            "identifier": [{"system": "urn:org", "value": "O1"}],
        },
    )
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
                "resource": {"resourceType": "Practitioner", "name": [{"family": "Li"}]},
                "request": {"method": "POST", "url": "Practitioner"},
            },
            {
                "resource": {
                    **obs("urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"),
                    "performer": [{"reference": "Organization?identifier=urn:org|O1"}],
                },
                "request": {"method": "POST", "url": "Observation"},
            },
            {
                "resource": {"resourceType": "Organization", "name": "Org"},
                "request": {
                    "method": "POST",
                    "url": "Organization",
                    "ifNoneExist": "identifier=urn:org|O1",
                },
            },
            {"request": {"method": "GET", "url": "Organization?identifier=urn:org|O1"}},
        ],
    }
    r = http.post("/fhir", json=bundle, headers=h)
    assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    assert entries[0]["response"]["status"] == "201 Created"
    assert entries[2]["response"]["status"] == "200 OK"
    assert entries[2]["resource"]["id"] == existing["id"]
    observation = entries[1]["resource"]
    assert observation["subject"]["reference"] == f"Practitioner/{entries[0]['resource']['id']}"
    assert observation["performer"][0]["reference"] == f"Organization/{existing['id']}"
    assert entries[3]["resource"]["total"] == 1


def test_transaction_rolls_back_on_failure(http: TestClient, h: dict[str, str]) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": obs("Patient/p"), "request": {"method": "POST", "url": "Observation"}},
            {
                "request": {"method": "PUT", "url": "Observation?identifier=nope"},
                "resource": obs("Patient/p"),
            },
            {
                "resource": obs("Patient/p", id="x1"),
                "request": {"method": "PUT", "url": "Observation/x1", "ifMatch": 'W/"4"'},
            },
        ],
    }
    r = http.post("/fhir", json=bundle, headers=h)
    assert r.status_code == 412, r.text
    assert r.json()["issue"][0]["expression"][0].startswith("Bundle.entry[2]")
    assert search(http, h, "/fhir/Observation?_summary=count")["total"] == 0


def test_batch_reports_each_entry(http: TestClient, h: dict[str, str]) -> None:
    patch = base64.b64encode(
        json.dumps([{"op": "replace", "path": "/status", "value": "amended"}]).encode()
    ).decode()
    oid = post_created(http, h, obs("Patient/p"))["id"]
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": obs("Patient/p"), "request": {"method": "POST", "url": "Observation"}},
            {"request": {"method": "GET", "url": "Observation/missing"}},
            {
                "resource": {
                    "resourceType": "Binary",
                    "contentType": "application/json-patch+json",
                    "data": patch,
                },
                "request": {"method": "PATCH", "url": f"Observation/{oid}"},
            },
            {"request": {"method": "DELETE", "url": f"Observation/{oid}"}},
        ],
    }
    r = http.post("/fhir", json=bundle, headers=h)
    assert r.status_code == 200
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses[0] == "201 Created"
    assert statuses[1].startswith("404")
    assert statuses[3] == "204 No Content"
    # DELETE runs before PATCH in a batch, so the patch finds the resource gone
    assert statuses[2].startswith("410")


# --- audit -------------------------------------------------------------------------------------


def test_search_is_audited_per_patient(
    http: TestClient, h: dict[str, str], data: dict[str, str], platform: Platform
) -> None:
    search(http, h, "/fhir/Observation?code=8867-4,85354-9&_tag:missing=true")
    rows, _ = platform.audit.search(limit=1000)
    refs = [record.patient_ref for _, record in rows if record.subtype == "search-type"]
    assert sorted(r or "" for r in refs) == sorted(
        [f"Patient/{data['p1']}", f"Patient/{data['p2']}"]
    )


def test_a_nul_character_is_refused_with_its_path_on_every_write(
    http: TestClient, h: dict[str, str]
) -> None:
    """U+0000 in a string: PostgreSQL's jsonb cannot store it (it answered 500); SQLite stored
    it. Both refuse it now, naming the element, whether created, updated or sent in a Bundle."""
    bad = obs("Patient/p", note=[{"text": "a\u0000b"}])
    created = http.post("/fhir/Observation", json=bad, headers=h)
    assert created.status_code == 422, created.text
    assert created.json()["issue"][0]["expression"] == ["Observation.note[0].text"]
    updated = http.put("/fhir/Observation/nul-1", json={**bad, "id": "nul-1"}, headers=h)
    assert updated.status_code == 422, updated.text
    entry = {"resource": bad, "request": {"method": "POST", "url": "Observation"}}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
    refused = http.post("/fhir", json=bundle, headers=h)
    assert refused.status_code == 422, refused.text
    assert refused.json()["issue"][0]["expression"] == ["Bundle.entry[0].resource.note[0].text"]
    assert search(http, h, "/fhir/Observation?subject=Patient/p")["total"] == 0
