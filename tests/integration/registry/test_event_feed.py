"""The registry's event feed is read in commit order: a poller never steps past an event that
commits after a later-numbered one (decision 0044)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from healthroam.bootstrap import Platform
from healthroam.db.tables_registry import master_persons, mpi_events
from healthroam.registry.repository import RegistryRepository

from helpers import Province, patient


@pytest.fixture
def steward(province: Province) -> dict[str, str]:
    province.institution("HNWJW", kind="agency")
    return {
        **province.headers("system/Patient.r system/MasterPerson.cruds", institution="HNWJW"),
        "X-End-User": "steward-wang",
    }


def _poll(http: TestClient, headers: dict[str, str], after: int) -> tuple[list[int], int]:
    response = http.get(f"/registry/events?after={after}", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    return [e["seq"] for e in body["events"]], body["next_after"]


def _register(http: TestClient, headers: dict[str, str], sequence: int) -> None:
    response = http.post("/fhir/Patient", json=patient("林芳", sequence=sequence), headers=headers)
    assert response.status_code == 201, response.text


def test_polling_from_the_cursor_sees_each_event_once(
    province: Province, http: TestClient, steward: dict[str, str]
) -> None:
    hospital = province.headers("system/Patient.cruds")
    _register(http, hospital, 201)
    _register(http, hospital, 202)
    first, cursor = _poll(http, steward, 0)
    assert len(first) >= 2
    assert _poll(http, steward, cursor) == ([], cursor)
    _register(http, hospital, 203)
    second, later = _poll(http, steward, cursor)
    assert second
    assert later > cursor
    assert not set(first) & set(second)
    # The hospital sees the events of its own records, in the same order.
    own, _ = _poll(http, hospital, 0)
    assert own == first + second


def test_an_event_committed_after_a_later_numbered_one_is_still_delivered(
    platform: Platform, province: Province, http: TestClient, steward: dict[str, str]
) -> None:
    if platform.db.engine.dialect.name == "sqlite":
        pytest.skip("SQLite lets one writer at a time: events cannot commit out of seq order")
    _register(http, province.headers("system/Patient.cruds"), 211)
    _, cursor = _poll(http, steward, 0)
    with platform.db.transaction(readonly=True) as conn:
        master = conn.execute(select(master_persons.c.id)).scalar_one()
    now = datetime.now(UTC)
    with platform.db.transaction() as slow:
        early = RegistryRepository(slow).add_event("update", master, now, recipients=["X"])
        with platform.db.transaction() as quick:
            late = RegistryRepository(quick).add_event("update", master, now, recipients=["X"])
        assert late > early
        seen, cursor = _poll(http, steward, cursor)
        assert seen == [late]  # the earlier-numbered event is not committed yet
    seen, cursor = _poll(http, steward, cursor)
    assert seen == [early]
    with platform.db.transaction(readonly=True) as conn:
        positions = dict(conn.execute(select(mpi_events.c.seq, mpi_events.c.position)).all())
    assert positions[early] > positions[late]
