"""Deferred history and index rows (records/deferred.py, decision 0037): inside the block a
resource's current row is written at once and its version and index rows later, yet every
read on the connection sees every write; what is stored at the end is what an immediate write
stores. On SQLite the block defers nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, func, select

from healthroam.bootstrap import Platform
from healthroam.db.schema import fhir_resource_versions, fhir_resources
from healthroam.db.tables_records import fhir_idx_token
from healthroam.records.deferred import deferring
from healthroam.records.repository import ResourceRepository

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def _patient(family: str, mrn: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test:mrn", "value": mrn}],
        "name": [{"family": family}],
    }


def _tokens(conn: Connection, rid: str, param: str) -> list[str]:
    rows = conn.execute(
        select(fhir_idx_token.c.code).where(
            fhir_idx_token.c.resource_id == rid, fhir_idx_token.c.param == param
        )
    )
    return sorted(r.code for r in rows)


def _stored(platform: Platform) -> list[tuple[Any, ...]]:
    """The index and history rows, without their generated ids."""
    t = fhir_idx_token.c
    with platform.db.transaction() as conn:
        tokens = conn.execute(
            select(t.resource_id, t.param, t.system, t.code).order_by(
                t.resource_id, t.param, t.system, t.code
            )
        ).all()
        versions = conn.execute(
            select(fhir_resource_versions.c.id, fhir_resource_versions.c.version).order_by(
                fhir_resource_versions.c.id, fhir_resource_versions.c.version
            )
        ).all()
    return [("token", *r) for r in tokens] + [("version", r[0], str(r[1])) for r in versions]


def test_reads_inside_the_block_see_deferred_writes(platform: Platform) -> None:
    with platform.db.transaction() as conn, deferring(conn) as deferred:
        repo = ResourceRepository(conn)
        repo.create_many([("Patient", "p-1", _patient("Wang", "M1"))], NOW, None, "PUT")
        if platform.db.dialect == "postgresql":
            assert deferred  # the index and version rows wait
            assert deferred.flushes == 0
        # a read naming an index table flushes first: it sees the new rows
        assert _tokens(conn, "p-1", "identifier") == ["M1"]
        current = repo.current("Patient", "p-1", lock=True)
        repo.replace(current, _patient("Wang", "M2"), NOW, "PUT")
        # the stale index rows are gone and the new version's are seen
        assert _tokens(conn, "p-1", "identifier") == ["M2"]
        count = conn.execute(select(func.count()).select_from(fhir_resource_versions))
        assert count.scalar_one() == 2
        if platform.db.dialect == "postgresql":
            assert deferred.flushes == 2
    with platform.db.transaction() as conn:
        assert _tokens(conn, "p-1", "identifier") == ["M2"]


def test_a_block_stores_what_immediate_writes_store(platform: Platform) -> None:
    def write(conn: Connection, prefix: str) -> None:
        repo = ResourceRepository(conn)
        repo.create_many(
            [
                ("Patient", f"{prefix}-1", _patient("Li", "A")),
                ("Patient", f"{prefix}-2", _patient("Zhao", "B")),
            ],
            NOW,
            None,
            "PUT",
        )
        current = repo.current("Patient", f"{prefix}-1", lock=True)
        repo.replace(current, _patient("Li", "C"), NOW, "PUT")
        current = repo.current("Patient", f"{prefix}-1", lock=True)
        repo.replace(current, _patient("Li", "D"), NOW, "PUT")

    with platform.db.transaction() as conn:
        write(conn, "now")
    with platform.db.transaction() as conn, deferring(conn) as deferred:
        write(conn, "later")
        if platform.db.dialect == "postgresql":
            assert deferred.flushes == 0  # no read of the deferred tables in between
    rows = _stored(platform)
    immediate = sorted(
        (r[0], str(r[1]).removeprefix("now-"), *map(str, r[2:]))
        for r in rows
        if str(r[1]).startswith("now-")
    )
    batched = sorted(
        (r[0], str(r[1]).removeprefix("later-"), *map(str, r[2:]))
        for r in rows
        if str(r[1]).startswith("later-")
    )
    assert batched == immediate
    assert len(batched) > 4
    with platform.db.transaction() as conn:
        assert _tokens(conn, "later-1", "identifier") == ["D"]
        body = conn.execute(
            select(fhir_resources.c.content).where(fhir_resources.c.id == "later-1")
        ).scalar_one()
    assert body["identifier"][0]["value"] == "D"


def test_an_error_in_the_block_writes_nothing_deferred(platform: Platform) -> None:
    def fail() -> None:
        with platform.db.transaction() as conn, deferring(conn):
            ResourceRepository(conn).create_many(
                [("Patient", "gone-1", _patient("Sun", "X"))], NOW, None, "PUT"
            )
            raise RuntimeError("the caller fails")

    with pytest.raises(RuntimeError):
        fail()
    with platform.db.transaction() as conn:
        assert _tokens(conn, "gone-1", "identifier") == []
        assert (
            conn.execute(select(func.count()).where(fhir_resources.c.id == "gone-1")).scalar_one()
            == 0
        )
