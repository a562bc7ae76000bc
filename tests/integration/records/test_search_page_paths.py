"""The two page statements of decision 0039 give the answers of the general search, in its
order (lastUpdated, then id), page after page:

- a short date window (``date=ge..&date=lt..``, at most SHORT_SPAN long) is sought from the
  date index alone, every match then sorted: checked against the intersection of its two
  single-bound searches (the general statement), over visits inside the window, across its
  edges, reaching back over the SHORT_SPAN slack, long-running and open-ended;
- a search on one system|code is read from the token rows in (lastUpdated, id) order: checked
  against the same search sorted by ``_sort=_lastUpdated`` (the general statement), with ties
  in lastUpdated (one batch is one instant), a code carried twice, another system, updates
  (which move a resource to the end) and deletes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import and_, inspect, select

from healthroam.bootstrap import Platform
from healthroam.db.migrate import alembic_config, upgrade
from healthroam.db.schema import fhir_resources
from healthroam.db.tables_records import fhir_idx_token
from healthroam.records.repository import SHORT_SPAN, _page_token, _page_window, _short_window
from healthroam.records.search import parse_search
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet

AGENCY = Principal(
    client_id="t:pages", institution_code="HCP", scopes=ScopeSet.parse("system/*.cruds")
)
ICD = "http://hl7.org/fhir/sid/icd-10"
WEEK_START = datetime(2019, 3, 4, tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _pages(platform: Platform, rtype: str, query: list[tuple[str, str]], count: int) -> list[str]:
    """Every match's id, following the next links page by page."""
    ids: list[str] = []
    params: list[tuple[str, str]] | None = [*query, ("_count", str(count))]
    pages = 0
    while params is not None:
        result = platform.records.search(AGENCY, rtype, params)
        assert len(result.matches) <= count
        ids.extend(m.id for m in result.matches)
        params = result.next_params
        pages += 1
        assert pages < 200
    assert len(ids) == len(set(ids)), "a match repeated across pages"
    return ids


def _order(platform: Platform, rtype: str, ids: set[str]) -> list[str]:
    """The ids in the default order, from the stored resources' lastUpdated."""
    stored = {i: platform.records.read(AGENCY, rtype, i).last_updated for i in ids}
    return sorted(ids, key=lambda i: (stored[i], i))


def _encounter(rid: str, start: datetime, end: datetime | None) -> tuple[str, str, Any]:
    period = {"start": _iso(start)} | ({"end": _iso(end)} if end is not None else {})
    return (
        "Encounter",
        rid,
        {
            "resourceType": "Encounter",
            "id": rid,
            "status": "finished" if end is not None else "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "period": period,
        },
    )


@pytest.fixture
def visits(platform: Platform) -> dict[str, tuple[datetime, datetime | None]]:
    """Visits from 50 days before the week to 10 days after it: short ones every 13 hours,
    long and open-ended stays, and short ones that end just before, at and just after the
    week's start (written in three batches: ties in lastUpdated within each)."""
    platform.institutions.add(code="HCP", name="卫健委", kind="agency", region="460106")
    periods: dict[str, tuple[datetime, datetime | None]] = {}
    moment = WEEK_START - timedelta(days=50)
    n = 0
    while moment < WEEK_START + timedelta(days=17):
        periods[f"v{n:03d}"] = (moment, moment + timedelta(hours=2 + n % 5))
        moment += timedelta(hours=13)
        n += 1
    slack = SHORT_SPAN - timedelta(hours=1)
    periods |= {
        # Short (just under SHORT_SPAN), began before the slack's floor would allow if it were
        # counted from the end: reaches into the week.
        "slack-in": (WEEK_START - slack, WEEK_START + timedelta(minutes=30)),
        "slack-out": (WEEK_START - slack, WEEK_START - timedelta(minutes=30)),
        # Long (over SHORT_SPAN), into and across the week; one ended before it.
        "long-in": (WEEK_START - timedelta(days=45), WEEK_START + timedelta(days=2)),
        "long-across": (WEEK_START - timedelta(days=60), WEEK_START + timedelta(days=20)),
        "long-before": (WEEK_START - timedelta(days=90), WEEK_START - timedelta(days=1)),
        "open": (WEEK_START - timedelta(days=400), None),
        "open-after": (WEEK_START + timedelta(days=8), None),
        "edge-start": (WEEK_START - timedelta(hours=3), WEEK_START),
        "edge-end": (WEEK_START + timedelta(days=7), WEEK_START + timedelta(days=7, hours=1)),
    }
    items = [_encounter(rid, start, end) for rid, (start, end) in periods.items()]
    for part in (items[0::3], items[1::3], items[2::3]):
        with platform.db.transaction() as conn:
            platform.records.create_many_in(conn, AGENCY, part)
    return periods


@pytest.mark.parametrize(
    ("start", "days"),
    [(WEEK_START, 7), (WEEK_START - timedelta(days=20), 1), (WEEK_START, SHORT_SPAN.days)],
)
@pytest.mark.parametrize("count", [1, 4, 50])
def test_a_short_window_finds_what_its_two_bounds_find_in_the_same_order(
    platform: Platform,
    visits: dict[str, tuple[datetime, datetime | None]],
    start: datetime,
    days: int,
    count: int,
) -> None:
    end = start + timedelta(days=days)
    window = [("date", f"ge{start.date().isoformat()}"), ("date", f"lt{end.date().isoformat()}")]
    assert _short_window(parse_search("Encounter", window).clauses)  # the path under test
    found = _pages(platform, "Encounter", window, count)
    after = set(_pages(platform, "Encounter", window[:1], 500))
    before = set(_pages(platform, "Encounter", window[1:], 500))
    assert found == _order(platform, "Encounter", after & before)
    # And by the periods themselves: an overlap with [start, end).
    expected = {
        rid for rid, (low, high) in visits.items() if (high is None or high >= start) and low < end
    }
    assert set(found) == expected
    if start == WEEK_START and days == 7:
        assert {"slack-in", "long-in", "long-across", "open", "edge-start"} <= set(found)
        assert not {"slack-out", "long-before", "open-after", "edge-end"} & set(found)


@pytest.mark.parametrize(
    "window",
    [
        [("date", "gt2019-03-04"), ("date", "le2019-03-10")],
        [("date", "ge2019-03-04T10:00:00Z"), ("date", "le2019-03-11T10:00:00Z")],
        [("date", "gt2019-03-03T23:00:00Z"), ("date", "lt2019-03-11")],
        [("date", "lt2019-03-11"), ("date", "ge2019-03-04"), ("date", "ge2019-03-06")],
    ],
)
def test_other_bounds_read_from_the_date_rows_find_what_their_bounds_find(
    platform: Platform,
    visits: dict[str, tuple[datetime, datetime | None]],
    window: list[tuple[str, str]],
) -> None:
    """``gt``, ``le``, instants and a third bound take the date rows' page too (decision
    0059): the same matches as each bound's own search, in the default order."""
    assert _page_window(parse_search("Encounter", window).clauses) is not None
    found = _pages(platform, "Encounter", window, 3)
    each = [set(_pages(platform, "Encounter", [bound], 500)) for bound in window]
    assert found == _order(platform, "Encounter", set.intersection(*each))
    assert len(found) >= 10


def test_longer_windows_and_single_bounds_keep_the_general_statement() -> None:
    def short(query: list[tuple[str, str]]) -> bool:
        return _short_window(parse_search("Encounter", query).clauses)

    assert short([("date", "ge2019-03-04"), ("date", "le2019-04-04")])
    assert not short([("date", "ge2019-03-04"), ("date", "lt2019-04-06")])
    assert not short([("date", "ge2019-03-04")])
    assert not short([("date", "ge2019-03-04"), ("date", "ge2019-03-05")])
    assert short([("date", "gt2019-03-04"), ("date", "lt2019-03-11T10:00:00Z")])


def _condition(rid: str, codes: list[tuple[str, str]]) -> tuple[str, str, Any]:
    return (
        "Condition",
        rid,
        {
            "resourceType": "Condition",
            "id": rid,
            "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": s, "code": c} for s, c in codes]},
        },
    )


@pytest.fixture
def conditions(platform: Platform) -> None:
    platform.institutions.add(code="HCP", name="卫健委", kind="agency", region="460106")
    batches: list[list[tuple[str, str, Any]]] = []
    for b in range(4):
        batch = []
        for n in range(9):
            rid = f"c{8 - n}-{b}"  # ids not in write order
            codes = [(ICD, "E78.5")] if n % 3 else [(ICD, "I10")]
            if n == 4:
                codes = [(ICD, "E78.5"), (ICD, "E78.5")]  # the code twice
            if n == 5:
                codes = [("http://example.org/local", "E78.5")]  # another system
            batch.append(_condition(rid, codes))
        batches.append(batch)
    for batch in batches:
        with platform.db.transaction() as conn:
            platform.records.create_many_in(conn, AGENCY, batch)
    # An update moves a resource to the end; one changes code, one is deleted.
    first = batches[0][1][1]
    platform.records.update(AGENCY, "Condition", first, _condition(first, [(ICD, "E78.5")])[2])
    platform.records.update(AGENCY, "Condition", batches[1][2][1],
                            _condition(batches[1][2][1], [(ICD, "I10")])[2])  # fmt: skip
    platform.records.delete(AGENCY, "Condition", batches[2][1][1])


@pytest.mark.usefixtures("conditions")
@pytest.mark.parametrize("value", [f"{ICD}|E78.5", "E78.5", f"{ICD}|I10", f"{ICD}|Z99"])
@pytest.mark.parametrize("count", [1, 2, 5, 100])
def test_a_code_alone_pages_as_the_general_statement_orders_it(
    platform: Platform, value: str, count: int
) -> None:
    query = [("code", value)]
    # The path under test, but for a code of any system (the general statement).
    assert (_page_token(parse_search("Condition", query).clauses) is not None) == ("|" in value)
    found = _pages(platform, "Condition", query, count)
    general = _pages(platform, "Condition", [*query, ("_sort", "_lastUpdated")], 500)
    assert found == general
    assert found == _order(platform, "Condition", set(found))
    if value == f"{ICD}|E78.5":
        # 4 batches x 5 with the code (the two-coding one once), less the deleted and the
        # recoded one; the updated one last.
        assert len(found) == 4 * 5 - 1 - 1
        assert found[-1] == "c7-0"
    if value == "E78.5":
        assert len(found) == 4 * 6 - 1 - 1  # the other system's too
    if value == f"{ICD}|I10":
        assert len(found) == 4 * 3 + 1


@pytest.mark.usefixtures("conditions")
def test_a_code_with_other_clauses_or_values_keeps_the_general_statement(
    platform: Platform,
) -> None:
    def driving(query: list[tuple[str, str]]) -> bool:
        return _page_token(parse_search("Condition", query).clauses) is not None

    assert not driving([("code", f"{ICD}|E78.5,{ICD}|I10")])
    assert not driving([("code", f"{ICD}|E78.5"), ("subject", "Patient/p1")])
    assert not driving([("code:not", f"{ICD}|E78.5")])
    assert not driving([("code", f"{ICD}|")])
    assert not driving([("code", "E78.5")])
    assert driving([("code", f"{ICD}|E78.5")])
    both = _pages(platform, "Condition", [("code", f"{ICD}|E78.5,{ICD}|I10")], 3)
    one = _pages(platform, "Condition", [("code", f"{ICD}|E78.5")], 3)
    other = _pages(platform, "Condition", [("code", f"{ICD}|I10")], 3)
    assert both == _order(platform, "Condition", set(one) | set(other))


def test_the_migration_stamps_token_rows_stored_before_it(platform: Platform) -> None:
    """0007_tokenorder down and up again over stored resources: every token row gets its
    resource's lastUpdated, and the one-code pages come out as the general statement's."""
    platform.institutions.add(code="HCP", name="卫健委", kind="agency", region="460106")
    for b in range(3):
        with platform.db.transaction() as conn:
            platform.records.create_many_in(
                conn,
                AGENCY,
                [_condition(f"m{n}-{b}", [(ICD, "E78.5" if n % 2 else "I10")]) for n in range(6)],
            )
    platform.records.update(AGENCY, "Condition", "m1-0", _condition("m1-0", [(ICD, "E78.5")])[2])
    engine = platform.db.engine
    try:
        command.downgrade(alembic_config(engine), "0007_tokenorder-1")
        with engine.connect() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("fhir_idx_token")}
        assert "last_updated" not in columns
    finally:
        upgrade(engine)
    with platform.db.transaction(readonly=True) as conn:
        t, r = fhir_idx_token.c, fhir_resources.c
        rows = conn.execute(
            select(t.last_updated, r.last_updated).join_from(
                fhir_idx_token,
                fhir_resources,
                and_(r.resource_type == t.resource_type, r.id == t.resource_id),
            )
        ).all()
    assert len(rows) >= 18
    assert all(stamped == resource for stamped, resource in rows)
    query = [("code", f"{ICD}|E78.5")]
    found = _pages(platform, "Condition", query, 2)
    assert found == _pages(platform, "Condition", [*query, ("_sort", "_lastUpdated")], 100)
    assert len(found) == 9
    assert found[-1] == "m1-0"
