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

from collections import namedtuple
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import Connection, Select
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


class RawSelect:
    """A SQLAlchemy ``select`` compiled once for PostgreSQL and run through psycopg: rows are
    named tuples of the statement's column names (what the callers read of SQLAlchemy's rows).
    Bound parameters are named (``%(name)s``); no expanding ones (use ``any_`` over an array)."""

    def __init__(self, statement: Select[Any]) -> None:
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
