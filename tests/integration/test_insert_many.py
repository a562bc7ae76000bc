"""Rows inserted in one ``INSERT ... SELECT * FROM unnest(...)`` statement (db/raw.py,
decision 0047) are the rows a row-by-row insert writes, and a value too long for its column is
still refused, not cut."""

from __future__ import annotations

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
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError

from healthroam.bootstrap import Platform
from healthroam.db.metadata import BigId
from healthroam.db.raw import insert_many, insert_statement


def _postgres(platform: Platform) -> None:
    if platform.db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite inserts row by row (no unnest)")


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
        for row in ROWS:  # one by one, each in one statement through psycopg
            insert_many(conn, table, [row], single=True)
        stored = conn.execute(select(table).order_by(table.c.row_id)).all()
        table.drop(conn)
    columns = [c.name for c in table.c if c.name != "row_id"]
    n = len(ROWS)
    one_by_one = [tuple(r._mapping[c] for c in columns) for r in stored[:n]]
    together = [tuple(r._mapping[c] for c in columns) for r in stored[n : 2 * n]]
    single = [tuple(r._mapping[c] for c in columns) for r in stored[2 * n :]]
    assert together == one_by_one
    assert single == one_by_one


def test_a_value_too_long_is_refused_not_cut(platform: Platform) -> None:
    _postgres(platform)
    table = _probe_table()
    with platform.db.transaction() as conn:
        table.create(conn)
    try:
        with pytest.raises(DBAPIError), platform.db.transaction() as conn:
            insert_many(conn, table, [{"name": "short"}, {"name": "much too long"}])
        with pytest.raises(DBAPIError), platform.db.transaction() as conn:
            insert_many(conn, table, [{"name": "much too long"}], single=True)
    finally:
        with platform.db.transaction() as conn:
            table.drop(conn)
