"""The registry through the API: matching on Patient create, reviews, merge, split, PIX, PDQm."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from healthroam.bootstrap import Platform

from helpers import Province, national_id, patient

NATIONAL = "urn:oid:2.16.156.10011.1.3"
MII = "urn:healthroam:master-index-id"


class Registry:
    """Two hospitals, the population base (an agency) and a steward of each co-owning agency."""

    def __init__(self, province: Province, http: TestClient) -> None:
        self.http = http
        self.h1 = province.headers("system/Patient.cruds")
        self.h2 = province.headers("system/Patient.cruds")
        province.institution("HNWJW", kind="agency")
        province.institution("HNGXT", kind="agency")
        self.steward = {
            **province.headers("system/MasterPerson.cruds", institution="HNWJW"),
            "X-End-User": "steward-wang",
        }
        self.other_steward = {
            **province.headers("system/MasterPerson.cruds", institution="HNGXT"),
            "X-End-User": "steward-li",
        }
        self.auditor = province.headers("system/AuditEvent.rs")

    def register(self, headers: dict[str, str], resource: dict[str, Any]) -> tuple[str, str, str]:
        response = self.http.post("/fhir/Patient", json=resource, headers=headers)
        assert response.status_code == 201, response.text
        return (
            response.json()["id"],
            response.headers["x-master-index-id"],
            response.headers["x-match-outcome"],
        )


@pytest.fixture
def registry(province: Province, http: TestClient) -> Registry:
    return Registry(province, http)


def test_same_id_at_two_hospitals_is_one_person(registry: Registry) -> None:
    _, first, outcome1 = registry.register(
        registry.h1, patient("王伟", gender="male", sequence=131)
    )
    _, second, outcome2 = registry.register(
        registry.h2, patient("王伟", gender="male", sequence=131)
    )
    assert (outcome1, outcome2) == ("new", "linked")
    assert first == second
    assert len(first) == 64
    assert first == first.upper()


def test_homophone_traditional_name_without_id_links_on_other_fields(registry: Registry) -> None:
    _, first, _ = registry.register(
        registry.h1,
        patient(
            "张伟",
            gender="male",
            sequence=133,
            telecom=[{"system": "phone", "value": "13907550001"}],
            address=[{"text": "海口市龙华区滨海大道32号", "district": "460106"}],
        ),
    )
    second_patient = {
        "resourceType": "Patient",
        "name": [{"text": "章偉"}],
        "gender": "male",
        "birthDate": "1990-01-01",
        "telecom": [{"system": "phone", "value": "+86 139-0755-0001"}],
        "address": [{"text": "海口市龍華區濱海大道32號", "district": "460106"}],
    }
    _, second, outcome = registry.register(registry.h2, second_patient)
    assert outcome == "linked"
    assert second == first


def test_strangers_with_same_name_and_birthday_stay_apart(registry: Registry) -> None:
    _, first, _ = registry.register(registry.h1, patient("李娜", sequence=124))
    _, second, outcome = registry.register(registry.h2, patient("李娜", sequence=246))
    assert first != second
    assert outcome == "new"  # two valid, consistent ID numbers: two people, no review


def test_foreign_visitor_with_passport_is_matched(registry: Registry) -> None:
    visitor = {
        "resourceType": "Patient",
        "name": [{"family": "Smith", "given": ["John"]}],
        "gender": "male",
        "birthDate": "1975-06-30",
        "identifier": [{"system": "urn:healthroam:passport:GBR", "value": "p1234567"}],
    }
    _, first, _ = registry.register(registry.h1, visitor)
    again = {
        **visitor,
        "name": [{"text": "SMITH, John"}],
        "identifier": [{"system": "urn:healthroam:passport:GBR", "value": "P1234567"}],
    }
    _, second, outcome = registry.register(registry.h2, again)
    assert (second, outcome) == (first, "linked")


def test_shared_id_with_other_birth_date_and_sex_goes_to_review(
    registry: Registry, http: TestClient
) -> None:
    number = national_id(born="19900101", sequence=135)
    _, first, _ = registry.register(registry.h1, patient("陈明", gender="male", sequence=135))
    other = {
        "resourceType": "Patient",
        "name": [{"text": "陈明"}],
        "gender": "female",
        "birthDate": "1985-07-07",
        "identifier": [{"system": NATIONAL, "value": number}],
    }
    _, second, outcome = registry.register(registry.h2, other)
    assert outcome == "review"
    assert second != first
    reviews = http.get("/registry/reviews", headers=registry.steward).json()["items"]
    assert len(reviews) == 1
    assert {
        reviews[0]["record"]["master_index_id"],
        reviews[0]["candidate"]["master_index_id"],
    } == {first, second}


def _review_pair(registry: Registry) -> tuple[str, str, int]:
    """Two records that must go to a steward: the same ID number, but birth date and sex both
    differ (a shared or mistyped ID)."""
    _, first, _ = registry.register(registry.h1, patient("林小红", sequence=142))
    other = {
        "resourceType": "Patient",
        "name": [{"text": "林小红"}],
        "gender": "male",
        "birthDate": "1992-03-04",
        "identifier": [{"system": NATIONAL, "value": national_id(sequence=142)}],
    }
    _, second, outcome = registry.register(registry.h2, other)
    assert outcome == "review", outcome
    items = registry.http.get("/registry/reviews", headers=registry.steward).json()["items"]
    return first, second, items[0]["id"]


def test_review_same_merges_and_attributes_the_steward(
    registry: Registry, http: TestClient
) -> None:
    first, second, review_id = _review_pair(registry)
    decided = http.post(
        f"/registry/reviews/{review_id}/decision",
        headers=registry.steward,
        json={"decision": "same", "reason": "same phone confirmed by clinic"},
    )
    assert decided.status_code == 200, decided.text
    survivor = decided.json()["master_index_id"]
    assert survivor in (first, second)
    merged = second if survivor == first else first
    old = http.get(f"/fhir/Patient/{merged}", headers=registry.h1).json()
    assert old["active"] is False
    assert {"other": {"reference": f"Patient/{survivor}"}, "type": "replaced-by"} in old["link"]
    history = http.get(f"/registry/persons/{survivor}/history", headers=registry.steward).json()[
        "events"
    ]
    merge = next(e for e in history if e["type"] == "merge")
    assert merge["actor"] == {
        "institution": "HNWJW",
        "user": "steward-wang",
        "client": merge["actor"]["client"],
    }
    assert merge["reason"] == "same phone confirmed by clinic"
    again = http.post(
        f"/registry/reviews/{review_id}/decision",
        headers=registry.other_steward,
        json={"decision": "different", "reason": "x"},
    )
    assert again.status_code == 409


def test_pair_marked_different_is_never_linked_automatically_again(
    registry: Registry, http: TestClient, platform: Platform
) -> None:
    first, second, review_id = _review_pair(registry)
    decided = http.post(
        f"/registry/reviews/{review_id}/decision",
        headers=registry.other_steward,
        json={"decision": "different", "reason": "different mothers"},
    )
    assert decided.status_code == 200
    source = http.get(f"/registry/persons/{second}", headers=registry.steward).json()[
        "source_records"
    ][0]
    # The second hospital's record changes so that it now matches the first strongly (same
    # national ID, same name): the steward's decision still keeps them apart.
    from datetime import date

    from healthroam.registry.model import SourceKey, SourceRecord
    from healthroam.security.model import Principal
    from healthroam.security.scopes import ScopeSet

    updated = SourceRecord(
        key=SourceKey(source["institution"], source["system"], source["local_id"]),
        name="林小红",
        sex="female",
        birth_date=date(1990, 1, 1),
        national_id=national_id(sequence=142),
        region="460106",
        fhir_patient_id=source["fhir_patient_id"],
    )
    who = Principal("c", source["institution"], ScopeSet.parse("system/Patient.u"))
    result = platform.registry.register(who, updated)
    assert result.master_index_id == second
    assert result.outcome.value == "linked"  # kept where it was, not moved
    person = http.get(f"/registry/persons/{first}", headers=registry.steward).json()
    assert len(person["source_records"]) == 1


def test_merge_unmerge_split_and_events(registry: Registry, http: TestClient) -> None:
    _, a, _ = registry.register(registry.h1, patient("吴芳", sequence=144))
    _, b, _ = registry.register(registry.h2, patient("吴芳", sequence=146, born="1991-02-02"))
    assert a != b
    merged = http.post(
        f"/registry/persons/{a}/$merge",
        headers=registry.steward,
        json={"source": b, "reason": "duplicate registration"},
    )
    assert merged.status_code == 200, merged.text
    person = http.get(f"/registry/persons/{a}", headers=registry.steward).json()
    assert len(person["source_records"]) == 2
    assert person["merged_from"] == [b]
    assert http.get(f"/fhir/Patient/{b}", headers=registry.h1).json()["link"][0]["type"] == (
        "replaced-by"
    )
    # Both hospitals are told.
    feed = http.get("/registry/events", headers=registry.h2).json()["events"]
    assert any(e["type"] == "merge" and e["other_master_index_id"] == b for e in feed)

    restored = http.post(
        f"/registry/persons/{b}/$unmerge",
        headers=registry.steward,
        json={"reason": "merged by mistake"},
    )
    assert restored.status_code == 200, restored.text
    assert (
        len(http.get(f"/registry/persons/{a}", headers=registry.steward).json()["source_records"])
        == 1
    )
    assert http.get(f"/fhir/Patient/{b}", headers=registry.h1).json()["active"] is True

    http.post(
        f"/registry/persons/{a}/$merge",
        headers=registry.steward,
        json={"source": b, "reason": "really the same"},
    )
    records = http.get(f"/registry/persons/{a}", headers=registry.steward).json()["source_records"]
    split = http.post(
        f"/registry/persons/{a}/$split",
        headers=registry.steward,
        json={"sourceRecords": [records[1]["id"]], "reason": "twin"},
    )
    assert split.status_code == 200, split.text
    new_person = split.json()["new_person"]
    assert new_person not in (a, b)
    assert (
        len(
            http.get(f"/registry/persons/{new_person}", headers=registry.steward).json()[
                "source_records"
            ]
        )
        == 1
    )


def test_pix_lists_every_identifier_across_sources(registry: Registry, http: TestClient) -> None:
    number = national_id(sequence=148)
    p1, mii, _ = registry.register(
        registry.h1,
        patient(
            "黄丽",
            sequence=148,
            identifier=[
                {"system": NATIONAL, "value": number},
                {"system": "urn:healthroam:insurance", "value": "460012345678"},
            ],
        ),
    )
    p2, _, _ = registry.register(registry.h2, patient("黄丽", sequence=148))
    response = http.get(
        f"/fhir/Patient/$ihe-pix?sourceIdentifier={NATIONAL}|{number}", headers=registry.h1
    )
    assert response.status_code == 200, response.text
    params = response.json()["parameter"]
    identifiers = {
        (p["valueIdentifier"]["system"], p["valueIdentifier"]["value"])
        for p in params
        if p["name"] == "targetIdentifier"
    }
    assert (MII, mii) in identifiers
    assert (NATIONAL, number) in identifiers
    assert ("urn:healthroam:insurance", "460012345678") in identifiers
    refs = {p["valueReference"]["reference"] for p in params if p["name"] == "targetId"}
    assert refs == {f"Patient/{p1}", f"Patient/{p2}"}
    only = http.get(
        f"/fhir/Patient/$ihe-pix?sourceIdentifier={NATIONAL}|{number}&targetSystem={MII}",
        headers=registry.h1,
    ).json()["parameter"]
    assert only == [{"name": "targetIdentifier", "valueIdentifier": {"system": MII, "value": mii}}]
    missing = http.get(
        f"/fhir/Patient/$ihe-pix?sourceIdentifier={NATIONAL}|{national_id(sequence=150)}",
        headers=registry.h1,
    )
    assert missing.status_code == 404


def test_pdqm_search_and_match(registry: Registry, http: TestClient) -> None:
    _, mii, _ = registry.register(registry.h1, patient("欧阳娜娜", sequence=152))
    registry.register(registry.h1, patient("欧阳娜", sequence=154, born="1980-05-05"))
    number = national_id(sequence=152)
    by_id = http.get(f"/fhir/Patient?identifier={NATIONAL}|{number}", headers=registry.h1).json()
    assert [e["resource"]["id"] for e in by_id["entry"]] == [mii]
    golden = by_id["entry"][0]["resource"]
    assert golden["meta"]["tag"][0]["code"] == "golden"
    assert {"system": MII, "value": mii, "use": "official"} in golden["identifier"]
    by_name = http.get("/fhir/Patient?family=欧阳&birthdate=1990-01-01", headers=registry.h1).json()
    assert [e["resource"]["id"] for e in by_name["entry"]] == [mii]
    match = http.post(
        "/fhir/Patient/$match",
        headers=registry.h2,
        json={
            "resourceType": "Parameters",
            "parameter": [
                {
                    "name": "resource",
                    "resource": {
                        "resourceType": "Patient",
                        "name": [{"text": "歐陽娜娜"}],
                        "gender": "female",
                        "birthDate": "1990-01-01",
                        "identifier": [{"system": NATIONAL, "value": number}],
                    },
                },
                {"name": "count", "valueInteger": 3},
            ],
        },
    )
    assert match.status_code == 200, match.text
    entry = match.json()["entry"][0]
    assert entry["resource"]["id"] == mii
    assert 0.99 < entry["search"]["score"] <= 1
    assert entry["search"]["extension"][0]["valueCode"] == "certain"


@pytest.mark.parametrize(
    ("change", "expression"),
    [
        (
            {"identifier": [{"system": NATIONAL, "value": "460106199001011230"}]},
            "Patient.identifier[0].value",
        ),
        ({"name": [{"use": "official", "family": ""}]}, "Patient.name[0].family"),
        ({"name": None}, "Patient.name"),
        ({"birthDate": None, "identifier": None}, "Patient.birthDate"),
        (
            {"identifier": [{"system": NATIONAL, "value": "469003201601011238"}]},
            "Patient.identifier[0].value",
        ),
    ],
)
def test_bad_registrations_name_the_field(
    registry: Registry, http: TestClient, change: dict[str, Any], expression: str
) -> None:
    resource = patient("赵敏")
    for key, value in change.items():
        if value is None:
            resource.pop(key)
        else:
            resource[key] = value
    response = http.post("/fhir/Patient", json=resource, headers=registry.h1)
    assert response.status_code in (400, 422), response.text
    assert response.json()["issue"][0]["expression"] == [expression]


def test_only_stewards_of_the_co_owning_agencies_act(
    registry: Registry, province: Province, http: TestClient
) -> None:
    hospital_steward = {**province.headers("system/MasterPerson.cruds"), "X-End-User": "x"}
    assert http.get("/registry/reviews", headers=hospital_steward).status_code == 403
    anonymous = {k: v for k, v in registry.steward.items() if k != "X-End-User"}
    response = http.get("/registry/reviews", headers=anonymous)
    assert response.status_code == 400
    assert response.json()["field"] == "X-End-User"


def test_reads_of_persons_are_audited(registry: Registry, http: TestClient) -> None:
    _, mii, _ = registry.register(registry.h1, patient("郑洁", sequence=156))
    http.get(f"/fhir/Patient/{mii}", headers=registry.h2)
    events = http.get(f"/fhir/AuditEvent?patient=Patient/{mii}", headers=registry.auditor).json()
    subtypes = {e["resource"]["subtype"][0]["code"] for e in events["entry"]}
    assert {"register", "read"} <= subtypes
