"""The statements run under the generic plan of their prepared statement (db/raw.py,
``fetch_generic``, decision 0047) keep index look-ups in that plan, and the rows inserted in
one ``unnest`` statement are those a row-by-row insert writes.

A generic plan is made once per connection, on the tables as they are then, and kept until
the tables' statistics change (an ANALYZE, autovacuum's) or the connection is recycled. These
tests plan on 5,000 people and their Patients without statistics (autovacuum off, before any
ANALYZE), as the candidate query's test does."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Double,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError

from healthroam.bootstrap import Platform
from healthroam.db.metadata import BigId
from healthroam.db.raw import RawSelect, insert_many, insert_statement
from healthroam.exchange.hl7 import repository as hl7_repository
from healthroam.registry import repository as registry_repository

GENERIC: dict[str, tuple[str | RawSelect, int]] = {
    "the message's look-up query": (hl7_repository._PG_KEYED_AND_IDENTIFIED, 5),
    "the registry's candidates": (registry_repository._PG_CANDIDATES_ANY, 0),
    "the registry's candidates but one": (registry_repository._PG_CANDIDATES_EXCLUDING, 0),
    "a live Patient and its master": (registry_repository._PG_LIVE_PATIENT_AND_MASTER, 0),
}
# The tables these statements read, which grow with the data (a scan of one is the failure)
GROWING = (
    "fhir_resources",
    "fhir_idx_token",
    "source_records",
    "master_persons",
    "mpi_blocking_keys",
)
_PEOPLE = (
    "INSERT INTO institutions (code, name, kind, region, active, created_at)"
    " VALUES ('PLAN', 'plan', 'hospital', '460100', true, now())",
    "INSERT INTO master_persons (id, master_index_id, status, golden, version, created_at,"
    " updated_at) SELECT g, lpad(g::text, 64, '0'), 'active', '{}', 1, now(), now()"
    " FROM generate_series(1, 5000) g",
    "INSERT INTO source_records (id, institution_code, id_system, local_id, master_id,"
    " link_type, data, normalized, content_hash, fhir_patient_id, created_at, updated_at)"
    " SELECT g, 'PLAN', 'mrn', g::text, g, 'auto', '{}', '{}', '', 'p' || g, now(), now()"
    " FROM generate_series(1, 5000) g",
    "INSERT INTO mpi_blocking_keys (key, source_id) SELECT k || ':' || (g % 1000)::text, g"
    " FROM generate_series(1, 5000) g, unnest(ARRAY['n', 'b', 'p']) k",
    "INSERT INTO fhir_resources (resource_type, id, version, last_updated, deleted,"
    " institution_code, content) SELECT t, 'p' || g, 1, now(), false, 'PLAN', '{}'"
    " FROM generate_series(1, 5000) g, unnest(ARRAY['Patient', 'Encounter']) t",
    "INSERT INTO fhir_idx_token (resource_type, resource_id, param, system, code,"
    " last_updated) SELECT t, 'p' || g, 'identifier', 'urn:mrn', g::text, now()"
    " FROM generate_series(1, 5000) g, unnest(ARRAY['Patient', 'Encounter']) t",
)


def _numbered(statement: str | RawSelect, positional: int) -> tuple[str, int]:
    """The statement's text with ``$n`` parameters, and how many."""
    if isinstance(statement, RawSelect):
        names: list[str] = []
        for name in re.findall(r"%\((\w+)\)s", statement.sql):
            if name not in names:
                names.append(name)
        sql = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}", statement.sql)
        return sql, len(names)
    count = iter(range(1, positional + 1))
    return re.sub(r"%s", lambda _m: f"${next(count)}", statement), positional


def _postgres(platform: Platform) -> None:
    if platform.db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite neither prepares generic plans nor runs these statements")


@pytest.mark.parametrize("name", sorted(GENERIC))
def test_generic_plans_look_up_by_index_without_statistics(platform: Platform, name: str) -> None:
    _postgres(platform)
    statement, positional = GENERIC[name]
    sql, count = _numbered(statement, positional)
    with platform.db.transaction() as conn:
        for insert in _PEOPLE:
            conn.execute(text(insert))
        conn.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        conn.execute(text(f"PREPARE generic_probe AS {sql}"))
        # The generic plan does not depend on the values; NULLs of the inferred types do.
        args = ", ".join(["NULL"] * count)
        plan = "\n".join(conn.execute(text(f"EXPLAIN EXECUTE generic_probe({args})")).scalars())
        conn.execute(text("DEALLOCATE generic_probe"))
    scanned = [t for t in GROWING if re.search(rf"Seq Scan on {t}\b", plan)]
    assert not scanned, plan


def test_a_generic_read_leaves_the_connection_planning_per_execution(
    platform: Platform,
) -> None:
    _postgres(platform)
    with platform.db.transaction() as conn:
        assert (
            registry_repository._PG_LIVE_PATIENT_AND_MASTER.first(conn, {"patient_id": "x"}) is None
        )
        mode = conn.execute(text("SHOW plan_cache_mode")).scalar_one()
    assert mode == "force_custom_plan"


def _probe_table() -> Table:
    meta = MetaData()
    return Table(
        "unnest_probe",
        meta,
        Column("row_id", BigId, primary_key=True, autoincrement=True),
        Column("name", String(8), nullable=True),
        Column("flag", Boolean, nullable=True),
        Column("count", Integer, nullable=True),
        Column("big", BigId, nullable=True),
        Column("value", Double, nullable=True),
        Column("raw", LargeBinary, nullable=True),
        Column("at", DateTime(timezone=True), nullable=True),
        Column("doc", JSONB, nullable=True),
    )


ROWS: list[dict[str, Any]] = [
    {
        "name": '李"a\\b,{}',
        "flag": True,
        "count": 7,
        "big": 2**40,
        "value": 0.1 + 0.2,
        "raw": b"\x00\x01\xff",
        "at": datetime(2026, 11, 30, 8, 1, 2, 345000, tzinfo=UTC),
        "doc": {"a": [1, 2.5, None, 'x"y'], "b": {"c": "中文"}},
    },
    {
        "name": None,
        "flag": None,
        "count": None,
        "big": None,
        "value": 3,
        "raw": None,
        "at": None,
        "doc": None,
    },
    {
        "name": "",
        "flag": False,
        "count": -1,
        "big": 0,
        "value": -1e-300,
        "raw": b"",
        "at": datetime(1900, 1, 1, tzinfo=UTC),
        "doc": [],
    },
]


def test_rows_inserted_in_one_statement_are_the_rows_inserted_one_by_one(
    platform: Platform,
) -> None:
    _postgres(platform)
    table = _probe_table()
    assert insert_statement(table, ROWS) is not None
    with platform.db.transaction() as conn:
        table.create(conn)
        for row in ROWS:  # one by one, through SQLAlchemy
            insert_many(conn, table, [row])
        insert_many(conn, table, ROWS)  # one statement
        stored = conn.execute(select(table).order_by(table.c.row_id)).all()
        table.drop(conn)
    columns = [c.name for c in table.c if c.name != "row_id"]
    one_by_one = [tuple(r._mapping[c] for c in columns) for r in stored[: len(ROWS)]]
    together = [tuple(r._mapping[c] for c in columns) for r in stored[len(ROWS) :]]
    assert together == one_by_one


def test_a_value_too_long_is_refused_not_cut(platform: Platform) -> None:
    _postgres(platform)
    table = _probe_table()
    with platform.db.transaction() as conn:
        table.create(conn)
    try:
        with pytest.raises(DBAPIError), platform.db.transaction() as conn:
            insert_many(conn, table, [{"name": "short"}, {"name": "much too long"}])
    finally:
        with platform.db.transaction() as conn:
            table.drop(conn)
