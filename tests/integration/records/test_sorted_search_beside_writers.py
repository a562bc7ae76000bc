"""A sorted search saves its result list (the snapshot later pages read from) in its own
transaction. On SQLite that transaction must hold the write lock from its start: a read
transaction that writes later fails at once (SQLITE_BUSY, no waiting) when another
connection committed in between — seen as a rare failure of a sorted search under load."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from sqlalchemy import text

from healthroam.bootstrap import Platform
from healthroam.records.repository import ResourceRepository
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet

AGENCY = Principal(
    client_id="t:sorted", institution_code="HCP", scopes=ScopeSet.parse("system/*.cruds")
)


def _observation(value: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/p"},
        "valueQuantity": {"value": value, "unit": "/min"},
    }


def test_a_sorted_search_pages_while_another_connection_commits(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = [
        platform.records.create(AGENCY, "Observation", _observation(v)).stored.id for v in range(5)
    ]
    find = ResourceRepository.find
    writes = 0

    def find_then_another_writer_commits(self: ResourceRepository, *args: Any) -> Any:
        nonlocal writes
        found = find(self, *args)
        if platform.db.dialect == "sqlite":
            # Another connection commits a write while the search is under way. Waiting on a
            # search that holds the write lock would time out (busy_timeout), so this
            # writer does not wait: it writes only when the search holds no write lock.
            other = sqlite3.connect(platform.db.engine.url.database or "", timeout=0)
            other.isolation_level = None
            try:
                try:
                    other.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError:  # locked: the search holds the write lock
                    return found
                # (a stale row the snapshot's clean-up deletes: a real change to the file)
                other.execute(
                    "INSERT INTO fhir_search_totals (search_id, total, created_at) "
                    "VALUES ('another-writer', 0, '2000-01-01 00:00:00')"
                )
                other.execute("COMMIT")
                writes += 1
            finally:
                other.close()
        return found

    monkeypatch.setattr(ResourceRepository, "find", find_then_another_writer_commits)
    seen: list[str] = []
    params: list[tuple[str, str]] | None = [("_sort", "-value-quantity"), ("_count", "2")]
    while params is not None:
        result = platform.records.search(AGENCY, "Observation", params)
        seen += [m.id for m in result.matches]
        params = result.next_params
    assert len(seen) == len(set(seen)) == 5
    assert set(seen) == set(made)
    with platform.db.engine.connect() as conn:
        saved = conn.execute(text("SELECT count(*) FROM fhir_search_results")).scalar_one()
    assert saved == 5  # the first page saved the whole sorted list
    if platform.db.dialect == "sqlite":
        assert writes == 0  # the sorted search held the write lock from its start
