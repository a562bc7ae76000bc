"""Search: ``_text``/``_content``, ``:text``, ``:above``/``:below`` (uri and token), ``_id:not``
(SQLite and PostgreSQL)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select

from healthroam.bootstrap import Platform
from healthroam.db import migrations
from healthroam.db.tables_records import fhir_idx_text
from healthroam.records.repository import TEXT_ENGINES

from helpers import Province

ICD10 = "http://hl7.org/fhir/sid/icd-10"
ATC = "http://www.whocc.no/atc"
XHTML = "http://www.w3.org/1999/xhtml"


@pytest.fixture
def h(province: Province) -> dict[str, str]:
    return province.headers("system/*.cruds")


def post(http: TestClient, h: dict[str, str], resource: dict[str, Any]) -> str:
    r = http.post(f"/fhir/{resource['resourceType']}", json=resource, headers=h)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def found(http: TestClient, h: dict[str, str], url: str) -> list[str]:
    r = http.get(url, headers=h)
    assert r.status_code == 200, r.text
    entries = r.json().get("entry", [])
    assert all(e["search"]["mode"] != "outcome" for e in entries), entries  # nothing ignored
    return sorted(e["resource"]["id"] for e in entries if e["search"]["mode"] == "match")


def refused(http: TestClient, h: dict[str, str], url: str, expression: str) -> str:
    r = http.get(url, headers=h)
    assert r.status_code == 400, r.text
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [expression]
    return str(outcome["issue"][0]["diagnostics"])


def condition(code: str, system: str = ICD10, text: str | None = None) -> dict[str, Any]:
    concept: dict[str, Any] = {"coding": [{"system": system, "code": code}]}
    if text is not None:
        concept["text"] = text
    return {"resourceType": "Condition", "subject": {"reference": "Patient/p"}, "code": concept}


def narrative(text: str) -> dict[str, str]:
    return {"status": "generated", "div": f'<div xmlns="{XHTML}">{text}</div>'}


# --- uri :above / :below -------------------------------------------------------------------------


def test_uri_below_and_above_follow_the_url_path(http: TestClient, h: dict[str, str]) -> None:
    def value_set(url: str) -> str:
        return post(http, h, {"resourceType": "ValueSet", "status": "draft", "url": url})

    root = value_set("http://example.org/fhir")
    leaf = value_set("http://example.org/fhir/ValueSet/123")
    sibling = value_set("http://example.org/fhirx/ValueSet/123")
    other = value_set("http://other.org/fhir/ValueSet/123")
    upper = value_set("http://example.org/FHIR/ValueSet/9")
    oid = value_set("urn:oid:1.2.3")

    below = "/fhir/ValueSet?url:below="
    assert found(http, h, below + "http://example.org/fhir") == sorted([root, leaf])
    assert found(http, h, below + "http://example.org/fhir/") == sorted([root, leaf])
    assert found(http, h, below + "http://example.org/fhir/ValueSet") == [leaf]
    assert found(http, h, below + "http://example.org/FHIR") == [upper]  # case matters
    assert found(http, h, below + "http://example.org/fh") == []  # a path segment, not text
    above = "/fhir/ValueSet?url:above="
    assert found(http, h, above + "http://example.org/fhir/ValueSet/123/_history/5") == sorted(
        [root, leaf]
    )
    assert found(http, h, above + "http://example.org/fhir/ValueSet/124") == [root]
    assert found(http, h, above + "http://other.org/fhir") == []
    assert sibling not in found(http, h, above + "http://example.org/fhir/ValueSet/123")
    assert other not in found(http, h, below + "http://example.org")
    assert oid not in found(http, h, below + "http://example.org")

    assert "URN" in refused(http, h, below + "urn:oid:1.2", "url:below")
    assert "URN" in refused(http, h, above + "urn:oid:1.2.3.4", "url:above")
    assert "absolute URL" in refused(http, h, below + "ValueSet/123", "url:below")


def test_profile_below_on_meta(http: TestClient, h: dict[str, str]) -> None:
    base = "http://fhir.example.cn/StructureDefinition"
    tagged = post(
        http,
        h,
        {
            "resourceType": "Organization",
            "name": "A",
            "meta": {"profile": [f"{base}/cn-organization"]},
        },
    )
    post(http, h, {"resourceType": "Organization", "name": "B"})
    assert found(http, h, f"/fhir/Organization?_profile:below={base}") == [tagged]
    assert found(http, h, f"/fhir/Organization?_profile:below={base}/cn-org") == []


# --- token :above / :below -----------------------------------------------------------------------


def test_token_below_and_above_for_icd10(http: TestClient, h: dict[str, str]) -> None:
    e11 = post(http, h, condition("E11"))
    e119 = post(http, h, condition("E11.9"))
    national = post(http, h, condition("E11.900x001"))
    e118 = post(http, h, condition("E11.8"))
    e10 = post(http, h, condition("E10.9"))
    elsewhere = post(http, h, condition("E11.9", system="http://example.org/codes"))

    url = "/fhir/Condition?code:below="
    assert found(http, h, f"{url}{ICD10}|E11") == sorted([e11, e119, national, e118])
    assert found(http, h, f"{url}{ICD10}|E11.9") == sorted([e119, national])
    assert elsewhere not in found(http, h, f"{url}{ICD10}|E11")
    url = "/fhir/Condition?code:above="
    assert found(http, h, f"{url}{ICD10}|E11.900x001") == sorted([e11, e119, national])
    assert found(http, h, f"{url}{ICD10}|E11.8") == sorted([e11, e118])
    assert e10 not in found(http, h, f"{url}{ICD10}|E11.9")
    # ORed values, ANDed with another parameter
    assert found(http, h, f"/fhir/Condition?code:below={ICD10}|E10,{ICD10}|E11.8") == sorted(
        [e10, e118]
    )
    assert found(http, h, f"/fhir/Condition?code:below={ICD10}|E11&_id={e10},{e119}") == [e119]


def test_token_below_and_above_for_atc(http: TestClient, h: dict[str, str]) -> None:
    def medication(code: str) -> str:
        concept = {"coding": [{"system": ATC, "code": code}]}
        return post(http, h, {"resourceType": "Medication", "code": concept})

    metformin = medication("A10BA02")
    biguanides = medication("A10BA")
    insulin = medication("A10AB01")
    enalapril = medication("C09AA02")
    url = "/fhir/Medication?code:below="
    assert found(http, h, f"{url}{ATC}|A10") == sorted([metformin, biguanides, insulin])
    assert found(http, h, f"{url}{ATC}|A10B") == sorted([metformin, biguanides])
    assert found(http, h, f"{url}{ATC}|C") == [enalapril]
    assert found(http, h, f"/fhir/Medication?code:above={ATC}|A10BA02") == sorted(
        [metformin, biguanides]
    )


def test_token_hierarchy_is_refused_where_no_subsumption_is_known(
    http: TestClient, h: dict[str, str]
) -> None:
    post(http, h, condition("E11"))
    url = "/fhir/Condition?code:below="
    message = refused(http, h, f"{url}http://loinc.org|8867-4", "code:below")
    assert "no subsumption" in message
    assert "needs the code system" in refused(http, h, f"{url}E11", "code:below")
    assert "not an ICD-10 code" in refused(http, h, f"{url}{ICD10}|E1", "code:below")
    assert "not an ATC code" in refused(
        http, h, f"/fhir/Medication?code:above={ATC}|A1", "code:above"
    )
    refused(http, h, f"/fhir/Condition?code:in={ICD10}", "code:in")
    refused(http, h, "/fhir/Condition?code:exact=E11", "code:exact")


# --- :text, _id:not ------------------------------------------------------------------------------


def test_token_text_matches_words_and_chinese_inside_text(
    http: TestClient, h: dict[str, str]
) -> None:
    essential = post(http, h, condition("I10", text="原发性高血压 Essential hypertension"))
    other = post(http, h, condition("E11", text="2型糖尿病 Type 2 diabetes"))
    url = "/fhir/Condition?code:text="
    assert found(http, h, url + "高血压") == [essential]
    assert found(http, h, url + "hypert") == [essential]  # starts a word
    assert found(http, h, url + "tension") == []  # inside a word: not a match
    assert found(http, h, url + "HYPERTENSION essential") == [essential]  # every word
    assert found(http, h, url + "hypertension diabetes") == []
    assert found(http, h, url + "糖尿病,高血压") == sorted([essential, other])
    assert "needs words" in refused(http, h, url + "%20-%20", "code:text")


def test_string_text_matches_words(http: TestClient, h: dict[str, str]) -> None:
    central = post(http, h, {"resourceType": "Organization", "name": "Hospital Central"})
    people = post(http, h, {"resourceType": "Organization", "name": "海南省人民医院"})
    url = "/fhir/Organization?name:text="
    assert found(http, h, url + "central") == [central]
    assert found(http, h, url + "entral") == []
    assert found(http, h, url + "人民医院") == [people]
    assert found(http, h, url + "人民 海南") == [people]
    assert found(http, h, url + "人民 central") == []


def test_id_not(http: TestClient, h: dict[str, str]) -> None:
    a = post(http, h, {"resourceType": "Organization", "name": "A"})
    b = post(http, h, {"resourceType": "Organization", "name": "B"})
    c = post(http, h, {"resourceType": "Organization", "name": "C"})
    assert found(http, h, f"/fhir/Organization?_id:not={a}") == sorted([b, c])
    assert found(http, h, f"/fhir/Organization?_id:not={a},{b}") == [c]


# --- _text and _content --------------------------------------------------------------------------


@pytest.fixture
def texts(http: TestClient, h: dict[str, str]) -> dict[str, str]:
    hypertension = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/p"},
        "text": narrative("患者有<b>原发性高血压</b>病史 &amp; blood pressure raised"),
        "code": {"coding": [{"system": ICD10, "code": "I10"}], "text": "Essential hypertension"},
        "note": [{"text": "Started metformin"}],
    }
    sugar = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/p"},
        # 血压 and 高血 both occur, but not as 高血压: must not match it
        "text": narrative("血压正常，高血糖。Café visit"),
        "code": {"coding": [{"system": ICD10, "code": "R73.9"}], "text": "Hyperglycaemia"},
    }
    bare = condition("J00", text="Common cold")
    return {
        "hypertension": post(http, h, hypertension),
        "sugar": post(http, h, sugar),
        "bare": post(http, h, bare),
    }


TEXT_CASES = [
    ("_text=高血压", ["hypertension"]),
    ("_text=原发性高血压病史", ["hypertension"]),
    ("_text=压", ["hypertension", "sugar"]),  # one character: anywhere
    ("_text=血糖", ["sugar"]),
    ("_text=高血压,血糖", ["hypertension", "sugar"]),  # comma: OR
    ("_text=blood pressure", ["hypertension"]),  # words: AND
    ("_text=blood cold", []),
    ('_text="blood pressure"', ["hypertension"]),
    ('_text="pressure blood"', []),  # a phrase keeps its order
    ("_text=BLOOD", ["hypertension"]),
    ("_text=cafe", ["sugar"]),  # accents folded
    ("_text=pres", []),  # whole words ...
    ("_text=pres*", ["hypertension"]),  # ... unless asked for a prefix
    ("_text=metformin", []),  # not in the narrative
    ("_content=metformin", ["hypertension"]),  # but in the resource
    ("_content=hyperglycaemia", ["sugar"]),
    ("_content=common cold", ["bare"]),
    ("_content=hyper*", ["hypertension", "sugar"]),
    ("_content=I10", ["hypertension"]),  # codes are text too
    ("_content=高血压 metformin", ["hypertension"]),
    ("_text:missing=true", ["bare"]),
    ("_text:missing=false", ["hypertension", "sugar"]),
    ("_content=cold&code=J00", ["bare"]),
    ("_content=cold&code=I10", []),
]


@pytest.mark.parametrize(("query", "expected"), TEXT_CASES)
def test_text_and_content(
    http: TestClient, h: dict[str, str], texts: dict[str, str], query: str, expected: list[str]
) -> None:
    assert found(http, h, f"/fhir/Condition?{query}") == sorted(texts[k] for k in expected)


def test_without_fts5_like_finds_the_same(
    http: TestClient, h: dict[str, str], texts: dict[str, str], platform: Platform
) -> None:
    """The fallback for an SQLite built without FTS5 (LIKE over the stored terms)."""
    pool = platform.db.engine.pool
    TEXT_ENGINES[pool] = "like"
    try:
        for query, expected in TEXT_CASES:
            got = found(http, h, f"/fhir/Condition?{query}")
            assert got == sorted(texts[k] for k in expected), query
    finally:
        del TEXT_ENGINES[pool]


def test_text_follows_updates_and_deletes(http: TestClient, h: dict[str, str]) -> None:
    resource = {**condition("J00"), "text": narrative("感冒 common cold")}
    rid = post(http, h, resource)
    assert found(http, h, "/fhir/Condition?_text=感冒") == [rid]
    updated = {**resource, "id": rid, "text": narrative("流感 influenza")}
    assert http.put(f"/fhir/Condition/{rid}", json=updated, headers=h).status_code == 200
    assert found(http, h, "/fhir/Condition?_text=感冒") == []
    assert found(http, h, "/fhir/Condition?_text=流感") == [rid]
    assert http.delete(f"/fhir/Condition/{rid}", headers=h).status_code in (200, 204)
    assert found(http, h, "/fhir/Condition?_text=流感") == []


def test_text_in_chains_and_has(http: TestClient, h: dict[str, str]) -> None:
    encounter = post(
        http,
        h,
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"code": "AMB"},
            "text": narrative("门诊随访 follow-up visit"),
        },
    )
    obs = post(
        http,
        h,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "心率"},
            "encounter": {"reference": f"Encounter/{encounter}"},
        },
    )
    post(http, h, {"resourceType": "Observation", "status": "final", "code": {"text": "心率"}})
    assert found(http, h, "/fhir/Observation?encounter._text=随访") == [obs]
    assert found(http, h, "/fhir/Observation?encounter._text=住院") == []
    assert found(http, h, "/fhir/Encounter?_has:Observation:encounter:_content=心率") == [encounter]


def test_text_search_refuses_bad_input(http: TestClient, h: dict[str, str]) -> None:
    assert "needs words" in refused(http, h, "/fhir/Condition?_content=%21%21%21", "_content")
    assert "needs words" in refused(http, h, '/fhir/Condition?_text=""', "_text")
    many = "%20".join(f"w{n}" for n in range(70))
    assert "too many" in refused(http, h, f"/fhir/Condition?_content={many}", "_content")
    refused(http, h, "/fhir/Condition?_content:exact=cold", "_content:exact")
    refused(http, h, "/fhir/Condition?_text:missing=maybe", "_text:missing")
    # A Bundle has no narrative: _text is unknown there (refused when strict).
    strict = {**h, "Prefer": "handling=strict"}
    r = http.get("/fhir/Bundle?_text=x", headers=strict)
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["_text"]
    assert http.get("/fhir/Bundle?_content=x", headers=strict).status_code == 200
    assert http.get("/fhir/Condition?_sort=_content", headers=h).status_code == 400


def test_capability_statement_lists_text_search(http: TestClient) -> None:
    statement = http.get("/fhir/metadata").json()
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    observation = {p["name"]: p for p in resources["Observation"]["searchParam"]}
    assert observation["_text"]["type"] == "string"
    assert observation["_content"]["definition"].endswith("/Resource-content")
    bundle = {p["name"] for p in resources["Bundle"]["searchParam"]}
    assert "_content" in bundle
    assert "_text" not in bundle
    assert "near" not in {p["name"] for p in resources["Location"]["searchParam"]}
    assert "_filter" in statement["rest"][0]["documentation"]  # listed as not supported


def test_migration_indexes_resources_stored_before_it(
    http: TestClient, h: dict[str, str], platform: Platform
) -> None:
    rid = post(http, h, {**condition("J00"), "text": narrative("旧数据 old record")})
    with platform.db.transaction() as conn:
        conn.execute(delete(fhir_idx_text))
    assert found(http, h, "/fhir/Condition?_text=旧数据") == []
    path = Path(migrations.__file__).parent / "versions/0006_searchgaps.py"
    spec = importlib.util.spec_from_file_location("migration_0006_searchgaps", path)
    assert spec is not None
    assert spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    with platform.db.transaction() as conn:
        migration._index_existing(conn)
        rows = conn.execute(select(func.count()).select_from(fhir_idx_text)).scalar_one()
    assert rows == 2  # _text and _content of the one resource
    assert found(http, h, "/fhir/Condition?_text=旧数据") == [rid]
