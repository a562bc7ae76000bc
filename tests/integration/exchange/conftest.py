"""HL7 v2 handler fixtures: a registered sending hospital and its gateway."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import event

from healthroam.bootstrap import Platform
from healthroam.exchange.hl7.contract import Handled

from hl7_helpers import HOSPITAL, Gateway, add_hospital, sample


@pytest.fixture
def gateway(platform: Platform) -> Gateway:
    add_hospital(platform, HOSPITAL, "海口市人民医院")
    return Gateway(platform)


@pytest.fixture
def send(gateway: Gateway) -> Callable[[str], Handled]:
    return lambda name: gateway.send(sample(name))


@pytest.fixture
def statements(platform: Platform) -> Iterator[list[str]]:
    """Every statement sent to the database. On PostgreSQL, counted at psycopg's cursors, so
    the statements sent beside SQLAlchemy (db/raw.py, pipelines) count as well; on SQLite at
    SQLAlchemy's execution event (everything goes through it there)."""
    seen: list[str] = []
    engine = platform.db.engine
    if engine.dialect.name != "postgresql":

        def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
            seen.append(statement)

        event.listen(engine, "before_cursor_execute", count)
        yield seen
        event.remove(engine, "before_cursor_execute", count)
        return

    def text_of(cursor: psycopg.Cursor[Any], query: Any) -> str:
        if isinstance(query, bytes):
            return query.decode()
        return query if isinstance(query, str) else str(query.as_string(cursor.connection))

    class Counting(psycopg.Cursor[Any]):
        def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(text_of(self, query))
            return super().execute(query, *args, **kwargs)

        def executemany(self, query: Any, *args: Any, **kwargs: Any) -> None:
            seen.append(text_of(self, query))
            super().executemany(query, *args, **kwargs)

    def counting(dbapi_connection: Any, *_args: object) -> None:
        dbapi_connection.cursor_factory = Counting

    def plain(dbapi_connection: Any, *_args: object) -> None:
        dbapi_connection.cursor_factory = psycopg.Cursor

    event.listen(engine, "checkout", counting)
    event.listen(engine, "checkin", plain)
    yield seen
    event.remove(engine, "checkout", counting)
    event.remove(engine, "checkin", plain)
