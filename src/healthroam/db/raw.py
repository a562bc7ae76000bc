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

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError


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
