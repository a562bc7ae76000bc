"""Planner statistics of the FHIR store (db/statistics.py): taken when missing or when the
store grew by a tenth, on both backends; on SQLite they decide whether a search's per-resource
check reads one resource's index rows or every row with the searched code."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text

from healthroam.api.app import create_app
from healthroam.bootstrap import Platform
from healthroam.db.statistics import refresh_statistics
from healthroam.db.tables_records import STORE_TABLES
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet

AGENCY = Principal(
    client_id="t:stats", institution_code="HCA", scopes=ScopeSet.parse("system/*.cruds")
)


def _observations(platform: Platform, count: int) -> None:
    batch: list[tuple[str, str, dict[str, Any]]] = []
    for i in range(count):
        rid = uuid.uuid4().hex
        batch.append(
            (
                "Observation",
                rid,
                {
                    "resourceType": "Observation",
                    "id": rid,
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
                    "valueQuantity": {
                        "value": 100 + i % 40,
                        "unit": "mg/dL",
                        "system": "http://unitsofmeasure.org",
                        "code": "mg/dL",
                    },
                },
            )
        )
    with platform.db.transaction() as conn:
        platform.records.create_many_in(conn, AGENCY, batch)


@pytest.fixture
def store(platform: Platform) -> Platform:
    platform.institutions.add(code="HCA", name="卫健委", kind="agency", region="460106")
    return platform


def _forget_sqlite_statistics(store: Platform) -> None:
    """The suite's databases are emptied between tests, not their statistics: start afresh."""
    with store.db.transaction() as conn:
        if conn.execute(
            text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'")
        ).first():
            conn.exec_driver_sql("DELETE FROM sqlite_stat1")
            conn.exec_driver_sql("ANALYZE sqlite_master")  # reload: there are none now


def _stat_rows(store: Platform, table: str) -> int:
    with store.db.engine.connect() as conn:
        if not conn.execute(
            text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'")
        ).first():
            return 0
        return int(
            conn.execute(
                text("SELECT count(*) FROM sqlite_stat1 WHERE tbl = :t"), {"t": table}
            ).scalar_one()
        )


def test_statistics_are_taken_again_after_the_store_grew_by_a_tenth(store: Platform) -> None:
    _observations(store, 200)
    assert refresh_statistics(store.db, STORE_TABLES, force=True) is True
    assert refresh_statistics(store.db, STORE_TABLES) is False  # nothing changed since
    _observations(store, 10)  # 5 %: not yet
    assert refresh_statistics(store.db, STORE_TABLES) is False
    _observations(store, 30)  # 20 % in all
    assert refresh_statistics(store.db, STORE_TABLES) is True
    assert refresh_statistics(store.db, STORE_TABLES) is False


def test_sqlite_statistics_are_taken_when_there_are_none(store: Platform) -> None:
    if store.db.dialect != "sqlite":
        pytest.skip("PostgreSQL keeps an estimate per table from its first VACUUM or ANALYZE")
    _forget_sqlite_statistics(store)
    _observations(store, 20)
    assert refresh_statistics(store.db, STORE_TABLES) is True
    assert refresh_statistics(store.db, STORE_TABLES) is False


def _token_check_plan(store: Platform) -> str:
    """SQLite's plan for the search the statements of ``Observation?code=&value-quantity=``."""
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "fhir_idx_token" in statement and "fhir_idx_quantity" in statement:
            captured.append((statement, parameters))

    event.listen(store.db.engine, "before_cursor_execute", capture)
    try:
        result = store.records.search(
            AGENCY, "Observation", [("code", "2339-0"), ("value-quantity", "gt118")]
        )
    finally:
        event.remove(store.db.engine, "before_cursor_execute", capture)
    assert result.matches, "the search finds the Observations above 118"
    statement, parameters = captured[0]
    with store.db.engine.connect() as conn:
        rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
    return "\n".join(str(row[-1]) for row in rows)


def test_sqlite_checks_each_resource_through_its_own_index_rows_once_analysed(
    store: Platform,
) -> None:
    if store.db.dialect != "sqlite":
        pytest.skip("the plan without statistics is SQLite's concern (PostgreSQL: autovacuum)")
    _forget_sqlite_statistics(store)
    _observations(store, 300)
    before = _token_check_plan(store)
    # Without statistics the per-resource check seeks by code: every Observation's row.
    assert "ix_fhir_idx_token_owner" not in before
    assert refresh_statistics(store.db, STORE_TABLES)
    after = _token_check_plan(store)
    assert "ix_fhir_idx_token_owner" in after, after
    assert _stat_rows(store, "fhir_idx_token")


def test_the_api_server_takes_sqlite_statistics_at_start(store: Platform) -> None:
    if store.db.dialect != "sqlite":
        pytest.skip("the API server refreshes statistics on SQLite only")
    _forget_sqlite_statistics(store)
    _observations(store, 50)
    with TestClient(create_app(store)):
        deadline = time.monotonic() + 20
        rows = 0
        while time.monotonic() < deadline and not rows:
            rows = _stat_rows(store, "fhir_resources")
            time.sleep(0.05)
    assert rows, "the server's statistics thread analysed the store"
