"""A care provider's searches across residents take the kept search-shape statements too
(decision 0065): the same pages as the general statement under the record gate, one kept
statement per institution, and the gate's clock read when each search runs, so a care
relationship that ends closes the record at once although the statement was made while it
was open. A search restricted to one person (a per-person list of Patients) and every gated
search on SQLite take the general path, which the same comparisons cover."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from care_world import refusing_consent
from healthroam.bootstrap import Platform
from healthroam.exchange.care.model import RelationshipReason
from healthroam.exchange.care.repository import (
    CareRepository,
    related_patient_ids,
    visible_condition,
)
from healthroam.records import repository
from healthroam.records.repository import ResourceRepository, VisibleCondition
from healthroam.records.search import parse_search
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet

from helpers import patient

AGENCY = Principal(
    client_id="t:gated", institution_code="HCP", scopes=ScopeSet.parse("system/*.cruds")
)
HB = Principal(
    client_id="t:gated-hb", institution_code="HB", scopes=ScopeSet.parse("system/*.cruds")
)
BASE = "https://fhir.example.org/fhir"
LOINC = "http://loinc.org"
START = datetime(2021, 5, 3, 8, tzinfo=UTC)
OPENED = datetime(2026, 11, 1, 9, tzinfo=UTC)
CLOSES = OPENED + timedelta(hours=8)


def _observation(n: int, writer: str) -> tuple[str, str, dict[str, Any]]:
    code = ("718-7", "4548-4")[n % 2]
    return (
        "Observation",
        f"{writer.lower()}{n:03d}",
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code}]},
            "subject": {"reference": f"Patient/p{n % 4}"},
            "effectiveDateTime": (START + timedelta(hours=13 * n)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    )


@pytest.fixture
def store(platform: Platform) -> Platform:
    platform.institutions.add(code="HCP", name="卫健委", kind="agency", region="460106")
    platform.institutions.add(
        code="HB", name="测试医院乙", kind="hospital", region="460106", level=2
    )
    people = [
        ("Patient", f"p{n}", patient(name, sequence=200 + n, born=f"198{n}-02-0{n + 1}"))
        for n, name in enumerate(["林晓梅", "王建国", "陈美玲", "符海生"])
    ]
    with platform.db.transaction() as conn:
        platform.records.create_many_in(conn, AGENCY, people)
    with platform.db.transaction() as conn:
        platform.records.create_many_in(conn, AGENCY, [_observation(n, "HCP") for n in range(40)])
    with platform.db.transaction() as conn:
        platform.records.create_many_in(conn, HB, [_observation(n, "HB") for n in (2, 5)])
    with platform.db.transaction() as conn:
        care = CareRepository(conn)
        mii = care.masters_of(["p1"])["p1"]
        care.add_relationship(
            master_index_id=mii,
            institution_code="HB",
            since=OPENED,
            until=CLOSES,
            reason=RelationshipReason.CHECK_IN,
        )
    return platform


@pytest.fixture(autouse=True)
def _fresh_shapes(fresh_search_shapes: None) -> None:
    del fresh_search_shapes


QUERIES = [
    [("code", f"{LOINC}|718-7")],
    [("code", f"{LOINC}|4548-4")],
    [("date", "ge2021-05-03"), ("date", "lt2021-05-10")],
    [("date", "ge2021-05-06"), ("date", "lt2021-05-20")],
    [("status", "final")],
]


def _pages(
    platform: Platform, query: list[tuple[str, str]], visible: VisibleCondition
) -> tuple[list[str], list[str] | None]:
    """The page's ids by the general statement and by the kept one (None: no shape)."""
    request = parse_search("Observation", [*query, ("_count", "50")])
    with platform.db.transaction(readonly=True) as conn:
        repo = ResourceRepository(conn)
        general = repo.find_loaded(request, repo.search_condition(request, BASE, visible), 51)
        shaped = ResourceRepository(conn).find_shaped(request, BASE, visible, 51)
    return [s.id for s in general], None if shaped is None else [s.id for s in shaped]


def _subjects(platform: Platform, ids: list[str]) -> set[str]:
    return {_observation(int(rid[-3:]), "")[2]["subject"]["reference"] for rid in ids}


def test_a_care_providers_view_is_kept_per_shape_and_reads_its_clock_per_search(
    store: Platform,
) -> None:
    moment = [OPENED + timedelta(hours=1)]
    view = visible_condition("HB", None, lambda: moment[0])
    postgres = store.db.dialect == "postgresql"
    opened: dict[int, list[str]] = {}
    for n, query in enumerate(QUERIES):
        general, shaped = _pages(store, query, view)
        assert shaped == (general if postgres else None)
        opened[n] = general
        # HB's own (about p1 and p2) and the related resident's (p1) results only.
        others = [rid for rid in general if rid.startswith("hcp")]
        assert _subjects(store, others) <= {"Patient/p1"}
    assert any(rid.startswith("hcp") for ids in opened.values() for rid in ids)
    kept = len(repository._SHAPES)
    assert kept == (3 if postgres else 0)  # a code, a week, a status: one statement each

    moment[0] = CLOSES + timedelta(minutes=1)  # the relationship has ended
    for n, query in enumerate(QUERIES):
        general, shaped = _pages(store, query, view)
        assert shaped == (general if postgres else None)
        assert all(rid.startswith("hb") for rid in general)  # HB's own only
        assert set(general) == {rid for rid in opened[n] if rid.startswith("hb")}
    assert len(repository._SHAPES) == kept  # the same statements, with the new clock


def test_each_institution_has_its_own_statement(store: Platform) -> None:
    now = OPENED + timedelta(hours=1)
    for institution in ("HB", "HCP", "HX"):
        view = visible_condition(institution, None, lambda: now)
        general, shaped = _pages(store, [("code", f"{LOINC}|718-7")], view)
        assert shaped == (general if store.db.dialect == "postgresql" else None)
        if institution == "HX":  # no data of its own, no relationship
            assert general == []
        if institution == "HCP":  # the agency wrote every other result
            assert len(general) == 20
    assert len(repository._SHAPES) == (3 if store.db.dialect == "postgresql" else 0)


def test_a_search_about_one_person_takes_the_general_path(store: Platform) -> None:
    view = visible_condition("HB", ["p1"], lambda: OPENED)
    general, shaped = _pages(store, [("code", f"{LOINC}|4548-4")], view)
    assert shaped is None
    assert general
    assert _subjects(store, general) <= {"Patient/p1", "Patient/p2"}


def test_the_database_function_gives_the_constructs_patients(store: Platform) -> None:
    """On PostgreSQL the view's Patients come from ``care_visible_patients`` (decision 0066,
    planned once per connection); it must return what ``related_patient_ids`` selects: the
    source and golden Patients of related persons, merged-away goldens, no person with a
    privacy Consent, no relationship of another institution or outside its time."""
    if store.db.dialect != "postgresql":
        pytest.skip("the function exists on PostgreSQL only (SQLite runs the construct)")
    with store.db.transaction() as conn:
        care = CareRepository(conn)
        masters = care.masters_of(["p0", "p2", "p3"])
        for pid, institution in (("p0", "HB"), ("p2", "HB"), ("p3", "HB"), ("p3", "HX")):
            care.add_relationship(
                master_index_id=masters[pid],
                institution_code=institution,
                since=OPENED + timedelta(hours=2),
                until=CLOSES,
                reason=RelationshipReason.ENCOUNTER,
            )
        store.records.create_many_in(conn, AGENCY, [("Consent", "c3", refusing_consent("p3"))])
    steward = Principal(
        "t:steward", "HNWJW", ScopeSet.parse("system/MasterPerson.cruds"), end_user="steward"
    )
    store.institutions.add(code="HNWJW", name="卫健委", kind="agency", region="460000")
    store.registry.merge(steward, masters["p0"], masters["p2"], "same resident")

    def both(institution: str, at: datetime) -> tuple[list[str], list[str]]:
        with store.db.transaction(readonly=True) as conn:
            made = conn.execute(related_patient_ids(institution, lambda: at)).scalars().all()
            called = conn.execute(
                select(func.care_visible_patients(institution, at).table_valued("patient_id"))
            )
            return sorted(made), sorted(r[0] for r in called)

    seen = set()
    for institution in ("HB", "HX", "HCP"):
        for at in (
            OPENED - timedelta(hours=1),
            OPENED + timedelta(hours=1),
            CLOSES - timedelta(hours=1),
            CLOSES,
        ):
            made, called = both(institution, at)
            assert called == made
            seen.update(made)
    golden = {masters["p0"], masters["p2"]}
    assert {"p0", "p1", "p2"} | golden <= seen  # merged: p2's golden shown with p0's person
    assert "p3" not in seen  # a privacy Consent on record
