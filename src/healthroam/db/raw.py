"""Statements sent over the raw psycopg connection under a SQLAlchemy ``Connection`` (PostgreSQL).

For the fixed statements run for (almost) every HL7 message, SQLAlchemy Core's work per
execution (cache key, compiled-cache look-up, execution context, result rows) costs more
client CPU than psycopg's; these few are written as SQL text and sent with psycopg directly,
several at a time in a pipeline where they do not depend on each other's results. They run
in the caller's transaction (the same DBAPI connection). Database errors are raised as
SQLAlchemy's, so callers and the HL7 transport's "database failed: no ACK" path see them as
before. Only for tables that no deferred write (records/deferred.py) can be pending for:
statements sent here do not pass SQLAlchemy's ``before_cursor_execute`` listeners.
"""

from __future__ import annotations

import functools
from collections import namedtuple
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Connection,
    DateTime,
    Double,
    Integer,
    LargeBinary,
    Select,
    String,
    Table,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.exc import DBAPIError, IntegrityError

_PG_DIALECT = PGDialect_psycopg()  # type: ignore[no-untyped-call]


def is_postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def dbapi(conn: Connection) -> psycopg.Connection[Any]:
    raw = conn.connection.dbapi_connection
    assert raw is not None
    return raw  # type: ignore[return-value]


@contextmanager
def sqlalchemy_errors(what: str) -> Iterator[None]:
    """psycopg's errors as SQLAlchemy raises them (an integrity error stays one)."""
    try:
        yield
    except psycopg.IntegrityError as error:
        raise IntegrityError(what, None, error) from error
    except psycopg.Error as error:
        raise DBAPIError(what, None, error) from error


@contextmanager
def statements_alone(conn: Connection) -> Iterator[bool]:
    """Inside the block, statements sent on ``conn`` commit each on its own (autocommit) if
    nothing has been sent yet in its transaction (PostgreSQL; yields whether they do).

    A transaction's statements are sent after a ``BEGIN`` and followed by a ``COMMIT``, two
    round trips and two statements for PostgreSQL. Before anything else was sent, a plain
    ``SELECT`` under READ COMMITTED (the isolation this project's transactions use: each
    statement reads its own snapshot, and a plain select takes no lock) reads the same outside
    the transaction as inside it; and a single ``INSERT`` as a transaction's only statement is
    as atomic and as durable committed on its own. Callers use it only for such statements.
    A transaction with nothing sent then commits without a round trip (psycopg sends no
    ``COMMIT`` for it). Elsewhere (SQLite, a transaction already begun, a pipeline, another
    isolation level) the block changes nothing and yields False."""
    if not is_postgres(conn):
        yield False
        return
    raw = dbapi(conn)
    if (
        raw.autocommit
        or raw.isolation_level not in (None, psycopg.IsolationLevel.READ_COMMITTED)
        or raw.pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE
        or raw.pgconn.pipeline_status != psycopg.pq.PipelineStatus.OFF
    ):
        yield False
        return
    raw.autocommit = True
    try:
        yield True
    finally:
        try:
            raw.autocommit = False
        except psycopg.Error:  # a broken connection: never back to the pool in autocommit
            raw.close()


class RawSelect:
    """A SQLAlchemy ``select`` compiled once for PostgreSQL and run through psycopg: rows are
    named tuples of the statement's column names (what the callers read of SQLAlchemy's rows).
    Bound parameters are named (``%(name)s``); no expanding ones (use ``any_`` over an array).
    Or SQL text with the names of its columns, for a shape SQLAlchemy does not write."""

    def __init__(self, statement: Select[Any] | str, names: Sequence[str] = ()) -> None:
        if isinstance(statement, str):  # SQL text (a shape SQLAlchemy does not write)
            self.sql = statement
            self.defaults: dict[str, Any] = {}
        else:
            compiled = statement.compile(dialect=_PG_DIALECT)
            if compiled.positiontup:  # pragma: no cover - a programming error
                raise ValueError("RawSelect needs named parameters")
            self.sql = str(compiled)
            # Values bound in the statement itself (literals, LIMIT 1): sent with every execution.
            self.defaults = {k: v for k, v in compiled.params.items() if v is not None}
            names = [str(c.key) for c in statement.selected_columns]
        self.row: Any = namedtuple("Row", names)  # type: ignore[misc]

    def rows(self, conn: Connection, params: dict[str, Any]) -> list[Any]:
        with sqlalchemy_errors(self.sql[:40]):
            cursor = dbapi(conn).cursor()
            cursor.execute(self.sql, {**self.defaults, **params})
            return [self.row._make(r) for r in cursor.fetchall()]

    def first(self, conn: Connection, params: dict[str, Any]) -> Any:
        found = self.rows(conn, params)
        return found[0] if found else None


# --- many rows in one statement --------------------------------------------------------------

# The element type of each column's array (``unnest``), by SQLAlchemy column type. Strings are
# sent as ``text[]``: an explicit cast to ``varchar(n)`` would cut a longer value where the
# insert's own assignment rejects it, as it does for a row inserted alone.
_ARRAY_TYPES: tuple[tuple[type[Any], str], ...] = (
    (String, "text"),
    (Boolean, "boolean"),
    (BigInteger, "bigint"),
    (Integer, "integer"),
    (Double, "double precision"),
    (LargeBinary, "bytea"),
    (JSON, "jsonb"),
    (JSONB, "jsonb"),
)
_UNNEST_SQL: dict[tuple[str, tuple[str, ...]], tuple[str, tuple[str, ...]] | None] = {}


def _array_type(table: Table, name: str) -> str | None:
    kind = table.c[name].type
    if isinstance(kind, DateTime):
        return "timestamptz" if kind.timezone else "timestamp"
    for python, element in _ARRAY_TYPES:
        if isinstance(kind, python):
            return element
    return None


def _unnest_sql(table: Table, columns: tuple[str, ...]) -> tuple[str, tuple[str, ...]] | None:
    key = (table.name, columns)
    if key not in _UNNEST_SQL:
        types = tuple(_array_type(table, c) for c in columns)
        if any(t is None for t in types):
            _UNNEST_SQL[key] = None
        else:
            names = ", ".join(f'"{c}"' for c in columns)
            arrays = ", ".join(f"%b::{t}[]" for t in types)  # binary: no escaping per value
            # Table and column names come from our metadata, never from input.
            sql = f'INSERT INTO "{table.name}" ({names}) SELECT * FROM unnest({arrays})'  # noqa: S608
            _UNNEST_SQL[key] = (sql, types)  # type: ignore[assignment]
    return _UNNEST_SQL[key]


def insert_statement(table: Table, rows: list[dict[str, Any]]) -> tuple[str, list[Any]] | None:
    """Rows of ``table`` (all with the keys of the first) as one ``INSERT ... SELECT * FROM
    unnest(...)``: one statement to plan and run instead of one per row, the rows inserted in
    the given order. None when a column's type has no array form here (the caller inserts
    row by row). JSON values are sent as ``jsonb``; the rows are the ones a row-by-row insert
    of the same values writes."""
    columns = tuple(rows[0])
    found = _unnest_sql(table, columns)
    if found is None:
        return None
    sql, types = found
    arrays: list[Any] = []
    for name, element in zip(columns, types, strict=True):
        values = [row[name] for row in rows]
        if element == "jsonb":
            values = [None if v is None else Jsonb(v) for v in values]
        elif element == "double precision":
            values = [None if v is None else float(v) for v in values]
        arrays.append(values)
    return sql, arrays


_INSERT_ONE_SQL: dict[tuple[str, tuple[str, ...]], str] = {}


def _insert_one(conn: Connection, table: Table, row: dict[str, Any]) -> None:
    """One row by a plain ``INSERT ... VALUES`` through psycopg: the values bound as
    SQLAlchemy binds them (the same psycopg dumpers; JSON as ``jsonb``), without its
    per-statement work."""
    columns = tuple(row)
    key = (table.name, columns)
    sql = _INSERT_ONE_SQL.get(key)
    if sql is None:
        names = ", ".join(f'"{table.c[c].name}"' for c in columns)  # KeyError: no column
        marks = ", ".join(["%s"] * len(columns))
        # Table and column names come from our metadata, never from input.
        sql = _INSERT_ONE_SQL[key] = f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})'  # noqa: S608
    values = [
        Jsonb(v) if v is not None and json else v
        for v, json in zip(row.values(), _json_columns(table, columns), strict=True)
    ]
    with sqlalchemy_errors(f"INSERT INTO {table.name}"):
        dbapi(conn).cursor().execute(sql, values)


@functools.cache
def _json_columns(table: Table, columns: tuple[str, ...]) -> tuple[bool, ...]:
    return tuple(_array_type(table, c) == "jsonb" for c in columns)


def insert_many(
    conn: Connection, table: Table, rows: list[dict[str, Any]], *, single: bool = False
) -> None:
    """Insert ``rows`` (same keys) in the caller's transaction: on PostgreSQL in one statement
    (:func:`insert_statement`) through psycopg, elsewhere (or for a column type without an
    array form) with SQLAlchemy's executemany. ``single``: a lone row goes through psycopg
    too, as a plain ``INSERT ... VALUES`` (the unnest form's array dumping costs more than
    SQLAlchemy for one row): the audit entry of a read that commits alone. Errors are raised
    as SQLAlchemy's."""
    if not rows:
        return
    if single and len(rows) == 1 and is_postgres(conn):
        _insert_one(conn, table, rows[0])
        return
    statement = insert_statement(table, rows) if is_postgres(conn) and len(rows) > 1 else None
    if statement is None:
        from sqlalchemy import insert

        conn.execute(insert(table), rows)
        return
    with sqlalchemy_errors(f"INSERT INTO {table.name} (unnest)"):
        dbapi(conn).cursor().execute(*statement)
