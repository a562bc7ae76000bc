"""Date searches over short, long and open-ended intervals (migration 0006_datespan): the bound
that lets a date range be sought from both ends must never drop a long or open-ended match."""

from __future__ import annotations

from typing import Any

import pytest

from healthroam.bootstrap import Platform
from healthroam.records.repository import SHORT_SPAN
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet

AGENCY = Principal(
    client_id="t:spans", institution_code="HCA", scopes=ScopeSet.parse("system/*.cruds")
)
PERIODS = {
    "inside": {"start": "2019-03-05T08:00:00Z", "end": "2019-03-05T09:00:00Z"},
    "before": {"start": "2019-02-01T08:00:00Z", "end": "2019-02-03T09:00:00Z"},
    "after": {"start": "2019-03-12T08:00:00Z", "end": "2019-03-13T09:00:00Z"},
    # Began 40 days before the week (longer than SHORT_SPAN) and ended inside it.
    "long-stay": {"start": "2019-01-24T08:00:00Z", "end": "2019-03-06T09:00:00Z"},
    # Began years before and has no end: an inpatient still in hospital.
    "open-ended": {"start": "2016-05-01T08:00:00Z"},
    # Long and ended before the week.
    "long-before": {"start": "2018-01-01T08:00:00Z", "end": "2019-03-01T09:00:00Z"},
    # Short, began just under SHORT_SPAN before the week and reaches into it.
    "edge": {"start": "2019-02-02T01:00:00Z", "end": "2019-03-04T00:30:00Z"},
}


@pytest.fixture
def encounters(platform: Platform) -> dict[str, str]:
    assert SHORT_SPAN.days == 32  # PERIODS above are chosen around it
    platform.institutions.add(code="HCA", name="卫健委", kind="agency", region="460106")
    ids: dict[str, str] = {}
    batch: list[tuple[str, str, dict[str, Any]]] = []
    for label, period in PERIODS.items():
        rid = f"enc-{label}"
        ids[rid] = label
        batch.append(
            (
                "Encounter",
                rid,
                {
                    "resourceType": "Encounter",
                    "id": rid,
                    "status": "in-progress" if "end" not in period else "finished",
                    "class": {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                        "code": "IMP",
                    },
                    "period": period,
                },
            )
        )
    with platform.db.transaction() as conn:
        platform.records.create_many_in(conn, AGENCY, batch)
    return ids


def _found(platform: Platform, ids: dict[str, str], query: list[tuple[str, str]]) -> set[str]:
    result = platform.records.search(AGENCY, "Encounter", [*query, ("_count", "50")])
    return {ids[m.id] for m in result.matches}


def test_a_week_finds_short_long_and_open_ended_visits_that_overlap_it(
    platform: Platform, encounters: dict[str, str]
) -> None:
    week = [("date", "ge2019-03-04"), ("date", "lt2019-03-11")]
    assert _found(platform, encounters, week) == {"inside", "long-stay", "open-ended", "edge"}


def test_one_bound_alone(platform: Platform, encounters: dict[str, str]) -> None:
    assert _found(platform, encounters, [("date", "ge2019-03-04")]) == {
        "inside",
        "after",
        "long-stay",
        "open-ended",
        "edge",
    }
    assert _found(platform, encounters, [("date", "gt2019-03-05")]) == {
        "after",
        "long-stay",
        "open-ended",
    }
    assert _found(platform, encounters, [("date", "lt2019-02-02")]) == {
        "before",
        "long-stay",
        "open-ended",
        "long-before",
    }
