"""The page statement kept per search shape (decision 0054) gives the general statement's
answers: the same pages, in the same order, with the same Bundles (next links, totals,
``_include``), for requests that differ only in their values, and requests whose values have
different forms (a token with or without its system, a date's prefix, a reference's form,
the number of values, a modifier) never share a statement.

On SQLite (and with a record-gate condition, deferred rows, sorted or snapshot pages, or a
clause the shapes do not know) the general path answers, which the same comparisons cover.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from healthroam.bootstrap import Platform
from healthroam.records import repository
from healthroam.records.repository import ResourceRepository, search_shape
from healthroam.records.search import parse_search
from healthroam.records.searchset import searchset_json
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet

AGENCY = Principal(
    client_id="t:shapes", institution_code="HCP", scopes=ScopeSet.parse("system/*.cruds")
)
BASE = "https://fhir.example.org/fhir"
LOINC = "http://loinc.org"
LOCAL = "urn:local:codes"
START = datetime(2021, 5, 3, 8, tzinfo=UTC)
CODES = [(LOINC, "718-7"), (LOINC, "4548-4"), (LOCAL, "718-7"), (None, "718-7"), (LOINC, "8867-4")]


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _observation(n: int) -> tuple[str, str, dict[str, Any]]:
    system, code = CODES[n % len(CODES)]
    coding: dict[str, Any] = {"code": code} | ({"system": system} if system else {})
    moment = START + timedelta(hours=17 * n)
    return (
        "Observation",
        f"o{n:03d}",
        {
            "resourceType": "Observation",
            "id": f"o{n:03d}",
            "status": "final" if n % 4 else "amended",
            "code": {"coding": [coding]},
            "subject": {"reference": f"Patient/p{n % 6}"},
            "encounter": {"reference": f"Encounter/e{n % 9}"},
            "effectiveDateTime": _iso(moment),
        },
    )


def _encounter(n: int) -> tuple[str, str, dict[str, Any]]:
    start = START + timedelta(hours=29 * n)
    end = start + timedelta(hours=3 + n % 4) if n % 7 else start + timedelta(days=40)
    return (
        "Encounter",
        f"e{n}",
        {
            "resourceType": "Encounter",
            "id": f"e{n}",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "period": {"start": _iso(start), "end": _iso(end)},
        },
    )


def _organization(n: int, name: str) -> tuple[str, str, dict[str, Any]]:
    return (
        "Organization",
        f"org{n}",
        {"resourceType": "Organization", "id": f"org{n}", "name": name},
    )


@pytest.fixture
def store(platform: Platform) -> Platform:
    platform.institutions.add(code="HCP", name="卫健委", kind="agency", region="460106")
    items = [_observation(n) for n in range(60)] + [_encounter(n) for n in range(9)]
    items += [
        _organization(n, name)
        for n, name in enumerate(["North Clinic", "Northgate Hospital", "South 100% Care", "north"])
    ]
    for part in (items[0::3], items[1::3], items[2::3]):  # ties in lastUpdated within each
        with platform.db.transaction() as conn:
            platform.records.create_many_in(conn, AGENCY, part)
    return platform


@pytest.fixture(autouse=True)
def _fresh_shapes(fresh_search_shapes: None) -> None:
    del fresh_search_shapes


# Queries of one shape each group, with different values (values picked so that the pages
# differ: a statement shared wrongly would show as a wrong answer).
SAME_SHAPE: list[tuple[str, list[list[tuple[str, str]]]]] = [
    ("Observation", [[("code", f"{LOINC}|718-7")], [("code", f"{LOINC}|4548-4")]]),
    ("Observation", [[("code", "718-7")], [("code", "8867-4")]]),
    ("Observation", [[("code", "|718-7")], [("code", "|4548-4")]]),
    ("Observation", [[("code", f"{LOINC}|")], [("code", f"{LOCAL}|")]]),
    (
        "Observation",
        [
            [("subject", "Patient/p1"), ("code", f"{LOINC}|718-7")],
            [("subject", "Patient/p3"), ("code", f"{LOCAL}|718-7")],
        ],
    ),
    ("Observation", [[("subject", "p1")], [("subject", "p2")]]),
    ("Observation", [[("subject", f"{BASE}/Patient/p1")], [("subject", "Patient/p4")]]),
    ("Observation", [[("subject:Patient", "p1")], [("subject:Patient", "p5")]]),
    ("Observation", [[("code:not", f"{LOINC}|718-7")], [("code:not", f"{LOCAL}|718-7")]]),
    (
        "Observation",
        [
            [("code", f"{LOINC}|718-7,{LOINC}|4548-4")],
            [("code", f"{LOINC}|8867-4,{LOCAL}|718-7")],
        ],
    ),
    ("Observation", [[("date", "ge2021-06-01")], [("date", "ge2021-05-10")]]),
    ("Observation", [[("date", "2021-05-04")], [("date", "2021-05-12")]]),
    ("Observation", [[("date", "2021-05")], [("date", "2021-06")]]),
    ("Observation", [[("date", "lt2021-05-20T10:00:00Z")], [("date", "lt2021-05-09")]]),
    (
        "Encounter",
        [
            [("date", "ge2021-05-03"), ("date", "lt2021-05-10")],
            [("date", "ge2021-05-06"), ("date", "lt2021-05-13")],
        ],
    ),
    (
        "Encounter",
        [
            [("date", "ge2021-04-01"), ("date", "lt2021-09-01")],
            [("date", "ge2021-05-08"), ("date", "lt2021-07-01")],
        ],
    ),
    ("Observation", [[("status", "final")], [("status", "amended")]]),
    ("Organization", [[("name", "north")], [("name", "south 100%")]]),
    ("Organization", [[("name:contains", "gate")], [("name:contains", "100%")]]),
    ("Organization", [[("name:exact", "north")], [("name:exact", "North Clinic")]]),
    ("Observation", [[("_lastUpdated", "ge2000-01-01")], [("_lastUpdated", "ge2999-01-01")]]),
    ("Observation", [[("encounter:missing", "false")], [("encounter:missing", "false")]]),
]


def _general_and_shaped(
    platform: Platform, rtype: str, query: list[tuple[str, str]]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]] | None]:
    request = parse_search(rtype, query)
    with platform.db.transaction(readonly=True) as conn:
        repo = ResourceRepository(conn)
        limit = request.count + 1
        general = repo.find_loaded(request, repo.search_condition(request, BASE), limit)
        shaped = ResourceRepository(conn).find_shaped(request, BASE, None, limit)

    def rows(found: list[Any]) -> list[tuple[Any, ...]]:
        return [
            (s.resource_type, s.id, s.version, s.last_updated, s.served_json(), s.patient)
            for s in found
        ]

    return rows(general), None if shaped is None else rows(shaped)


@pytest.mark.parametrize(("rtype", "queries"), SAME_SHAPE)
@pytest.mark.parametrize("count", ["3", "50"])
def test_a_shape_answers_each_of_its_values_as_the_general_statement_does(
    store: Platform, rtype: str, queries: list[list[tuple[str, str]]], count: str
) -> None:
    keys = set()
    answers = []
    for query in queries:
        query = [*query, ("_count", count)]
        shape = search_shape(parse_search(rtype, query), BASE, int(count) + 1)
        assert shape is not None
        keys.add(shape[0])
        # Twice: the first builds the shape's statement, the second reuses it.
        for _ in range(2):
            general, shaped = _general_and_shaped(store, rtype, query)
            if store.db.dialect == "postgresql":
                assert shaped == general
            else:
                assert shaped is None  # SQLite: the general path
        answers.append(general)
    assert len(keys) == 1, "these queries were meant to have one shape"
    if store.db.dialect == "postgresql":
        assert len(repository._SHAPES) == 1
    if queries[0] != queries[1]:
        assert answers[0] != answers[1], "the values were meant to give different pages"


# Pairs of queries that must NOT share a statement: a different form of a value, prefix,
# modifier, number of values, parameter or pairing of date bounds.
DIFFERENT_SHAPES: list[tuple[str, list[tuple[str, str]], list[tuple[str, str]]]] = [
    ("Observation", [("code", f"{LOINC}|718-7")], [("code", "718-7")]),
    ("Observation", [("code", f"{LOINC}|718-7")], [("code", "|718-7")]),
    ("Observation", [("code", f"{LOINC}|718-7")], [("code", f"{LOINC}|")]),
    ("Observation", [("code", f"{LOINC}|718-7")], [("code:not", f"{LOINC}|718-7")]),
    ("Observation", [("code", f"{LOINC}|718-7")], [("code", f"{LOINC}|718-7,{LOINC}|4548-4")]),
    (
        "Observation",
        [("code", f"{LOINC}|718-7")],
        [("code", f"{LOINC}|718-7"), ("status", "final")],
    ),
    ("Observation", [("subject", "Patient/p1")], [("subject", "p1")]),
    ("Observation", [("subject", "Patient/p1")], [("encounter", "Encounter/e1")]),
    ("Observation", [("date", "ge2021-06-01")], [("date", "gt2021-06-01")]),
    ("Observation", [("date", "ge2021-06-01")], [("date", "le2021-06-01")]),
    ("Observation", [("date", "ge2021-06-01")], [("date", "2021-06-01")]),
    ("Observation", [("date", "2021-06-01")], [("date", "ne2021-06-01")]),
    (
        "Encounter",
        [("date", "ge2021-05-03"), ("date", "lt2021-05-10")],  # a short window
        [("date", "ge2021-04-01"), ("date", "lt2021-09-01")],  # a long one
    ),
    ("Encounter", [("date", "ge2021-05-03"), ("date", "lt2021-05-10")], [("date", "ge2021-05-03")]),
    ("Organization", [("name", "north")], [("name:contains", "north")]),
    ("Organization", [("name", "north")], [("name:exact", "north")]),
    ("Observation", [("code", f"{LOINC}|718-7")], [("code", f"{LOINC}|718-7"), ("_count", "7")]),
]


@pytest.mark.parametrize(("rtype", "first", "second"), DIFFERENT_SHAPES)
def test_different_forms_never_share_a_statement(
    store: Platform, rtype: str, first: list[tuple[str, str]], second: list[tuple[str, str]]
) -> None:
    shapes = []
    for query in (first, second):
        request = parse_search(rtype, query)
        shape = search_shape(request, BASE, request.count + 1)
        assert shape is not None
        shapes.append(shape[0])
        general, shaped = _general_and_shaped(store, rtype, query)
        if store.db.dialect == "postgresql":
            assert shaped == general
    assert shapes[0] != shapes[1]
    if store.db.dialect == "postgresql":
        assert len(repository._SHAPES) == 2


@pytest.mark.parametrize(
    ("rtype", "query"),
    [
        ("Observation", [("subject.name", "x")]),  # a chain
        ("Patient", [("_has:Observation:subject:code", "718-7")]),
        ("Observation", [("_id", "o001,o002")]),
        ("Observation", [("code:text", "blood")]),
        ("Observation", [("code", "718-7"), ("_sort", "date")]),
        ("Observation", [("value-quantity", "5")]),
        ("Observation", [("date", "ap2021-05-04")]),
        ("Observation", [("_lastUpdated", "ap2021-05-04")]),
    ],
)
def test_other_searches_have_no_shape(
    store: Platform, rtype: str, query: list[tuple[str, str]]
) -> None:
    request = parse_search(rtype, query)
    assert search_shape(request, BASE, request.count + 1) is None
    with store.db.transaction(readonly=True) as conn:
        assert ResourceRepository(conn).find_shaped(request, BASE, None, 21) is None


def _bundles(platform: Platform, rtype: str, query: list[tuple[str, str]]) -> list[bytes]:
    """Every page's Bundle, following the next links."""
    out = []
    params: list[tuple[str, str]] | None = query
    while params is not None:
        result = platform.records.search(AGENCY, rtype, params, base_url=BASE)
        out.append(searchset_json(result, f"{BASE}/{rtype}", BASE, "q"))
        params = result.next_params
        assert len(out) < 100
    return out


@pytest.mark.parametrize(
    ("rtype", "query"),
    [
        ("Observation", [("code", f"{LOINC}|718-7"), ("_count", "4")]),  # the one-code page
        ("Observation", [("code", f"{LOINC}|718-7"), ("_count", "4"), ("_total", "accurate")]),
        ("Observation", [("subject", "Patient/p1"), ("code", f"{LOINC}|718-7"), ("_count", "2")]),
        (
            "Observation",
            [("status", "final"), ("_count", "7"), ("_include", "Observation:encounter")],
        ),
        ("Encounter", [("date", "ge2021-05-03"), ("date", "lt2021-05-30"), ("_count", "2")]),
        ("Observation", [("date", "ge2021-05-10"), ("_count", "9"), ("_revinclude", "*")]),
        ("Observation", [("code", "718-7"), ("_summary", "count")]),
        ("Observation", [("code", "718-7"), ("_count", "0")]),
    ],
)
def test_the_bundles_pages_links_totals_and_includes_are_those_of_the_general_path(
    store: Platform, rtype: str, query: list[tuple[str, str]]
) -> None:
    store.records.search_shapes = False
    general = _bundles(store, rtype, query)
    store.records.search_shapes = True
    shaped = _bundles(store, rtype, query)
    again = _bundles(store, rtype, query)  # every page's statement kept by now
    assert shaped == general
    assert again == general
    if store.db.dialect == "postgresql" and len(general) > 1:
        assert repository._SHAPES  # the pages after the first (a cursor) too


def test_values_are_bound_not_written_into_the_statement(store: Platform) -> None:
    """A value with quotes and LIKE's wildcards is a value of the kept statement, never part
    of its text; the next value of the shape finds its own matches."""
    if store.db.dialect != "postgresql":
        pytest.skip("the shapes are kept on PostgreSQL")
    odd = "North' OR 1=1 --"
    for name in (odd, "south 100%", "north"):
        query = [("name", name)]
        general, shaped = _general_and_shaped(store, "Organization", query)
        assert shaped == general
    (statement,) = repository._SHAPES.values()
    assert "North" not in statement.sql
    assert "100" not in statement.sql
    assert [row[1] for row in _general_and_shaped(store, "Organization", [("name", odd)])[0]] == []


def test_a_thousand_values_take_the_general_path(store: Platform) -> None:
    if store.db.dialect != "postgresql":
        pytest.skip("the shapes are kept on PostgreSQL")
    codes = ",".join(f"{LOINC}|x{n}" for n in range(600)) + f",{LOINC}|718-7"
    general, shaped = _general_and_shaped(store, "Observation", [("code", codes)])
    assert shaped is None  # 1,202 values: more than a kept statement names
    assert len(general) == 12
    assert _bundles(store, "Observation", [("code", codes), ("_count", "5")])


@pytest.mark.parametrize(("rtype", "queries"), SAME_SHAPE)
def test_the_kept_statement_is_the_general_statement_with_named_parameters(
    store: Platform, rtype: str, queries: list[list[tuple[str, str]]]
) -> None:
    """The same SQL, parameter for parameter (the named mode only names them): the same
    plans as before, whatever the values."""
    if store.db.dialect != "postgresql":
        pytest.skip("the shapes are kept on PostgreSQL")
    query = [*queries[1], ("_count", "3"), ("_cursor", "2021-05-03T08:00:00+00:00|o001")]
    request = parse_search(rtype, query)
    with store.db.transaction(readonly=True) as conn:
        repo = ResourceRepository(conn)
        general = repo._page_query(request, repo.search_condition(request, BASE), 4)
        compiled = general.compile(dialect=conn.dialect)
        assert ResourceRepository(conn).find_shaped(request, BASE, None, 4) is not None
    (kept,) = repository._SHAPES.values()
    unnamed = re.compile(r"%\([a-z_0-9]+\)s")
    assert unnamed.sub("%s", kept.sql) == unnamed.sub("%s", str(compiled))
    # And parameter for parameter the same values, in the order the text takes them.
    _, values = search_shape(request, BASE, 4) or ((), [])
    named = dict(kept.defaults) | {f"sv{n}": v for n, v in enumerate(values)}
    in_order = [m.group(0)[2:-2] for m in unnamed.finditer(kept.sql)]
    assert [named[n] for n in in_order] == [
        compiled.params[m.group(0)[2:-2]] for m in unnamed.finditer(str(compiled))
    ]


def test_at_most_so_many_shapes_are_kept(store: Platform) -> None:
    if store.db.dialect != "postgresql":
        pytest.skip("the shapes are kept on PostgreSQL")
    for count in range(1, repository.SHAPES_KEPT + 6):  # a shape per _count
        general, shaped = _general_and_shaped(
            store, "Observation", [("code", "718-7"), ("_count", str(count))]
        )
        if count % 100 == 1:
            assert shaped == general
    assert len(repository._SHAPES) == repository.SHAPES_KEPT
    kept_counts = {key[-2] for key in repository._SHAPES}
    assert min(kept_counts) == 7  # the oldest five (limits 2 to 6) were dropped
