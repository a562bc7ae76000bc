"""Plain FHIR reads, searches and history follow the cross-institution care rules (decision
0025), through the real API on SQLite and PostgreSQL: hospital HA wrote a resident's record;
other hospitals see it only with a care relationship (card check-in, active Encounter), never
against a consent refusal, or by breaking the glass; their own data always; agencies as before."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from care_world import (
    CLINICIAN,
    GLASS,
    OFFICER,
    TERMINAL,
    WRITER,
    World,
    _dynamic_code,
    _world,
    refusing_consent,
)
from healthroam.bootstrap import Platform

from helpers import Province, patient


def _ids(http: TestClient, url: str, headers: dict[str, str], mode: str = "match") -> list[str]:
    """Every id the search returns in ``mode`` entries, following next links."""
    found: list[str] = []
    next_url: str | None = url
    while next_url:
        response = http.get(next_url, headers=headers)
        assert response.status_code == 200, response.text
        bundle = response.json()
        found += [
            e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode
        ]
        next_url = next(
            (link["url"] for link in bundle["link"] if link["relation"] == "next"), None
        )
    return found


def _observation(subject: str, value: float = 7.1, day: str = "2026-11-20") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "subject": {"reference": subject},
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
        "effectiveDateTime": day,
        "valueQuantity": {"value": value, "unit": "%"},
    }


def _ha_observation(http: TestClient, world: World) -> str:
    found = _ids(http, f"/fhir/Observation?subject=Patient/{world.patient_id}", world.a)
    assert len(found) == 1
    return found[0]


def test_reads_and_searches_need_a_care_relationship_then_a_check_in_opens_them(
    platform: Platform, province: Province, http: TestClient
) -> None:
    world = _world(platform, province, http)
    obs = _ha_observation(http, world)
    hb = province.institution("HB", level=2)
    clinician = province.headers(CLINICIAN, institution=hb)
    organization = http.post(
        "/fhir/Organization",
        json={"resourceType": "Organization", "name": "检验科"},
        headers=world.a,
    )
    assert organization.status_code == 201

    # Before any check-in: reads 403 with the guidance, like $everything.
    for url in (
        f"/fhir/Observation/{obs}",
        f"/fhir/Observation/{obs}/_history/1",
        f"/fhir/Observation/{obs}/_history",
        f"/fhir/Patient/{world.patient_id}",
    ):
        refused = http.get(url, headers=clinician)
        assert refused.status_code == 403, (url, refused.text)
        issue = refused.json()["issue"][0]
        assert issue["code"] == "forbidden"
        assert "check the resident in" in issue["diagnostics"]
        assert "X-Break-Glass-Reason" in issue["diagnostics"]
    # A search restricted to the resident: 403 too (HB has nothing of its own about them).
    about = f"/fhir/Observation?subject=Patient/{world.patient_id}"
    assert http.get(about, headers=clinician).status_code == 403
    # Other searches and history leave HA's resources out; totals agree.
    everything = http.get("/fhir/Observation", headers=clinician).json()
    assert everything["total"] == 0
    assert _ids(http, "/fhir/Condition?code=44054006", clinician) == []
    form = {"Content-Type": "application/x-www-form-urlencoded", **clinician}
    posted = http.post("/fhir/Patient/_search", content=f"_id={world.patient_id}", headers=form)
    assert posted.status_code == 403
    history = http.get("/fhir/Observation/_history", headers=clinician).json()
    assert not [e for e in history.get("entry", []) if e["fullUrl"].endswith(obs)]
    # Outside any patient compartment nothing changes.
    org_id = organization.json()["id"]
    assert http.get(f"/fhir/Organization/{org_id}", headers=clinician).status_code == 200
    assert org_id in _ids(http, "/fhir/Organization", clinician)
    # Refused reads are audited as failures.
    reads = platform.audit.search(patient_ref=f"Patient/{world.patient_id}")[0]
    refusals = [r for _, r in reads if r.institution_code == "HB" and r.subtype == "read"]
    assert refusals
    assert all(r.outcome == "4" and "refused" in (r.detail or "") for r in refusals)

    # The card check-in opens the record.
    checked = http.post(
        "/care/check-in",
        json={"text": _dynamic_code(http, world), "terminal": "REG-01"},
        headers=province.headers(TERMINAL, institution=hb),
    )
    assert checked.status_code == 201, checked.text
    assert http.get(f"/fhir/Observation/{obs}", headers=clinician).status_code == 200
    assert http.get(f"/fhir/Observation/{obs}/_history/1", headers=clinician).status_code == 200
    assert http.get(f"/fhir/Patient/{world.patient_id}", headers=clinician).status_code == 200
    assert _ids(http, about, clinician) == [obs]
    assert _ids(http, f"/fhir/Observation?patient={world.mii}", clinician) == []  # by HA's id
    assert obs in _ids(http, "/fhir/Observation?code=4548-4", clinician)
    assert http.get("/fhir/Observation", headers=clinician).json()["total"] == 1
    history = http.get("/fhir/Observation/_history", headers=clinician).json()
    assert [e for e in history["entry"] if e["fullUrl"].endswith(obs)]


def test_own_data_stays_visible_includes_cannot_leak_and_pages_count_right(
    platform: Platform, province: Province, http: TestClient
) -> None:
    world = _world(platform, province, http)
    for day in range(1, 6):  # HA: five more results
        created = http.post(
            "/fhir/Observation",
            json=_observation(f"Patient/{world.patient_id}", day=f"2026-10-0{day}"),
            headers=world.a,
        )
        assert created.status_code == 201
    hb = province.institution("HB", level=2)
    writer = province.headers(WRITER, institution=hb)
    # HB wrote three results of its own about the same resident (referring to HA's Patient).
    own = []
    for day in range(1, 4):
        created = http.post(
            "/fhir/Observation",
            json=_observation(f"Patient/{world.patient_id}", 6.0, f"2026-09-0{day}"),
            headers=writer,
        )
        own.append(created.json()["id"])
    clinician = province.headers(CLINICIAN, institution=hb)

    # Paged in the default order and sorted: only HB's three, totals and pages agree.
    for url in (
        "/fhir/Observation?_count=2&_total=accurate",
        "/fhir/Observation?_count=2&_sort=-date&_total=accurate",
        # A short date window's page, read from the date rows (decision 0059): HA's two in it
        # come first in lastUpdated order and are hidden before the page is cut.
        "/fhir/Observation?date=ge2026-09-01&date=lt2026-10-03&_count=2&_total=accurate",
    ):
        first = http.get(url, headers=clinician).json()
        assert first["total"] == 3, url
        assert len(first["entry"]) == 2
        assert sorted(_ids(http, url, clinician)) == sorted(own)
    assert http.get("/fhir/Observation?_summary=count", headers=clinician).json()["total"] == 3
    # Restricted to the resident: own data only, and told that more exists (not a 403).
    about = f"/fhir/Observation?subject=Patient/{world.patient_id}"
    bundle = http.get(about, headers=clinician).json()
    assert bundle["total"] == 3
    outcome = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome[0]["resource"]["issue"][0]["code"] == "suppressed"
    assert "X-Break-Glass-Reason" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    # _include and _revinclude never bring in HA's hidden resources.
    included = _ids(http, f"{about}&_include=Observation:subject", clinician, "include")
    assert included == []
    one = http.get(
        f"/fhir/Observation?_id={own[0]}&_include=Observation:subject&_include:iterate=Patient:link",
        headers=clinician,
    ).json()
    assert [e["resource"]["id"] for e in one["entry"]] == [own[0]]
    # A chain does not look through the hidden Patient either (its birth date would leak).
    assert _ids(http, "/fhir/Observation?subject:Patient.birthdate=1990-01-01", clinician) == []
    # HA sees its own six (HB's three are another institution's data to HA: no relationship).
    assert len(_ids(http, "/fhir/Observation?subject:Patient.birthdate=1990-01-01", world.a)) == 6
    # HA sees everything it wrote, as always.
    assert len(_ids(http, about, world.a)) == 6
    # An agency is not narrowed.
    agency = province.headers(CLINICIAN, institution="HNWJW")
    assert http.get("/fhir/Observation", headers=agency).json()["total"] == 9
    obs = _ids(http, about, world.a)[0]
    assert http.get(f"/fhir/Observation/{obs}", headers=agency).status_code == 200


def test_an_active_encounter_opens_the_record_and_a_consent_refusal_closes_it(
    platform: Platform, province: Province, http: TestClient
) -> None:
    world = _world(platform, province, http)
    obs = _ha_observation(http, world)
    hd = province.institution("HD", level=2)
    writer = province.headers(WRITER, institution=hd)
    clinician = province.headers(CLINICIAN, institution=hd)
    # HD registers the resident and admits them: an active Encounter, nothing recorded yet.
    own = http.post("/fhir/Patient", json=patient("林晓梅", sequence=321), headers=writer)
    assert own.headers["x-master-index-id"] == world.mii
    encounter = {
        "resourceType": "Encounter",
        "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"},
        "subject": {"reference": f"Patient/{own.json()['id']}"},
    }
    assert http.post("/fhir/Encounter", json=encounter, headers=writer).status_code == 201
    # A search about the resident counts the active Encounter at once ...
    about = f"/fhir/Observation?subject=Patient/{world.patient_id}"
    assert _ids(http, about, clinician) == [obs]
    assert obs not in _ids(http, "/fhir/Observation?code=4548-4", clinician)
    # ... a read does too, and records the relationship, which opens searches across residents.
    assert http.get(f"/fhir/Observation/{obs}", headers=clinician).status_code == 200
    assert obs in _ids(http, "/fhir/Observation?code=4548-4", clinician)
    relations = http.get(f"/care/patients/{world.mii}/relationships", headers=clinician).json()
    assert [r["reason"] for r in relations["relationships"]] == ["encounter"]

    # The resident refuses sharing.
    stored = http.post("/fhir/Consent", json=refusing_consent(world.patient_id), headers=world.a)
    assert stored.status_code == 201, stored.text
    refused = http.get(f"/fhir/Observation/{obs}", headers=clinician)
    assert refused.status_code == 403
    assert "consent" in refused.json()["issue"][0]["diagnostics"]
    bundle = http.get(about, headers=clinician).json()
    assert bundle["total"] == 0
    outcome = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert "consent" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    assert obs not in _ids(http, "/fhir/Observation?code=4548-4", clinician)
    # HD's own data stays visible.
    assert len(_ids(http, "/fhir/Encounter?status=in-progress", clinician)) == 1

    # Break-the-glass overrides the refusal (the default policy), flagged for review.
    glass = {**clinician, "X-Break-Glass-Reason": GLASS, "X-End-User": "dr-li"}
    assert http.get(f"/fhir/Observation/{obs}", headers=glass).status_code == 200
    officer = province.headers(OFFICER, institution="HNWJW")
    listed = http.get("/care/access-exceptions", headers=officer).json()["exceptions"]
    assert [(e["access"], e["consentOverridden"], e["hadRelationship"]) for e in listed] == [
        ("read", True, True)
    ]


def test_break_the_glass_read_and_search_are_audited_and_flagged(
    platform: Platform, province: Province, http: TestClient
) -> None:
    world = _world(platform, province, http)
    obs = _ha_observation(http, world)
    hc = province.institution("HC", level=1)
    clinician = province.headers(CLINICIAN, institution=hc)
    glass = {**clinician, "X-Break-Glass-Reason": GLASS, "X-End-User": "dr-wang"}
    assert http.get(f"/fhir/Observation/{obs}", headers=clinician).status_code == 403
    short = http.get(f"/fhir/Observation/{obs}", headers={**clinician, "X-Break-Glass-Reason": "x"})
    assert short.status_code == 400
    read = http.get(f"/fhir/Observation/{obs}", headers=glass)
    assert read.status_code == 200, read.text
    assert read.json()["id"] == obs
    about = f"/fhir/Observation?subject=Patient/{world.patient_id}"
    assert _ids(http, about, glass) == [obs]
    # Break-the-glass opens one resident's record: a search across residents is refused.
    wide = http.get("/fhir/Observation?code=4548-4", headers=glass)
    assert wide.status_code == 400
    assert wide.json()["issue"][0]["expression"] == ["X-Break-Glass-Reason"]
    # Audited with purpose of use BTG, naming the exception; flagged for review.
    entries = platform.audit.search(patient_ref=f"Patient/{world.patient_id}")[0]
    btg = [r for _, r in entries if r.purpose_of_use == "BTG" and r.institution_code == "HC"]
    assert {r.subtype for r in btg} == {"read", "search-type"}
    assert all(r.end_user == "dr-wang" and "exception=" in (r.detail or "") for r in btg)
    officer = province.headers(OFFICER, institution="HNWJW")
    listed = http.get("/care/access-exceptions", headers=officer).json()["exceptions"]
    assert sorted(e["access"] for e in listed) == ["read", "search"]
    assert all(e["institution"] == "HC" and e["endUser"] == "dr-wang" for e in listed)
    assert all(e["hadRelationship"] is False for e in listed)
    # The header grants nothing more for the next request without it.
    assert http.get(f"/fhir/Observation/{obs}", headers=clinician).status_code == 403
