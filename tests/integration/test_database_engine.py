"""The connection pool replaces a connection that died while idle (no pre-ping round trip);
on SQLite a read transaction cannot write."""

from __future__ import annotations

import select
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from healthroam.db.engine import Database, create_database_engine


def _kill(database: Database, raw: Any) -> None:
    """End a pooled connection the way its server (or a bug) would."""
    if database.dialect == "postgresql":
        pid = raw.info.backend_pid
        admin = create_database_engine(database.engine.url.render_as_string(False))
        with admin.begin() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
        admin.dispose()
    else:
        raw.close()


def test_a_connection_killed_while_idle_is_replaced_at_checkout(database_url: str) -> None:
    database = Database(create_database_engine(database_url, pool_size=1))
    try:
        with database.transaction() as conn:
            raw = conn.connection.dbapi_connection
            first = conn.execute(text("SELECT 1")).scalar()
        _kill(database, raw)
        # Let the server's goodbye reach the socket (PostgreSQL ends the backend at once).
        for _ in range(50):
            if database.dialect != "postgresql":
                break
            poller = select.poll()
            poller.register(raw.pgconn.socket, select.POLLIN)  # type: ignore[union-attr]
            if poller.poll(100):
                break
        with database.transaction() as conn:
            again = conn.execute(text("SELECT 2")).scalar()
            assert conn.connection.dbapi_connection is not raw
        with database.transaction(readonly=True) as conn:
            assert conn.execute(text("SELECT 3")).scalar() == 3
        assert (first, again) == (1, 2)
    finally:
        database.dispose()


def test_on_sqlite_a_read_transaction_cannot_write_and_the_next_writer_can(
    database_url: str,
) -> None:
    database = Database(create_database_engine(database_url, pool_size=1))
    insert = text(
        "INSERT INTO fhir_search_totals (search_id, total, created_at) "
        "VALUES (:id, 0, CURRENT_TIMESTAMP)"
    )
    try:
        if database.dialect == "sqlite":
            with (
                pytest.raises(OperationalError, match="readonly"),
                database.transaction(readonly=True) as conn,
            ):
                conn.execute(insert, {"id": "from-a-reader"})
        # The same pooled connection writes again in an ordinary transaction.
        with database.transaction() as conn:
            conn.execute(insert, {"id": "from-a-writer"})
        with database.transaction(readonly=True) as conn:
            kept = conn.execute(text("SELECT search_id FROM fhir_search_totals")).scalars().all()
        assert kept == ["from-a-writer"]
    finally:
        database.dispose()


@pytest.mark.parametrize(
    ("statement", "value"),
    [
        ("SELECT CAST(:v AS jsonb)", '{"text": "a\\u0000b"}'),  # the jsonb escape
        ("SELECT CAST(:v AS text)", "a\x00b"),  # the character itself, refused by psycopg
    ],
)
def test_a_write_holding_nul_is_invalid_input_not_a_database_error(
    database_url: str, statement: str, value: str
) -> None:
    """A backstop behind the validators: PostgreSQL cannot store U+0000, and its error became
    a 500; the unit of work turns it into InvalidInput (400 over HTTP, AE over HL7)."""
    from healthroam.errors import InvalidInput

    database = Database(create_database_engine(database_url, pool_size=1))
    try:
        if database.dialect != "postgresql":
            with database.transaction() as conn:  # SQLite keeps it: nothing to translate
                assert conn.execute(text("SELECT :v"), {"v": value}).scalar() == value
            return
        with pytest.raises(InvalidInput, match="U\\+0000"), database.transaction() as conn:
            conn.execute(text(statement), {"v": value})
        with database.transaction() as conn:  # the connection is usable afterwards
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        database.dispose()


def test_postgresql_connections_do_not_jit_compile(database_url: str) -> None:
    """A statement whose estimate passes ``jit_above_cost`` is run without compiling it: a
    search's compilation cost 30-200 ms for a few rows (decision 0062)."""
    database = Database(create_database_engine(database_url, pool_size=1))
    try:
        if database.dialect != "postgresql":
            pytest.skip("PostgreSQL's JIT")
        with database.transaction() as conn:
            assert conn.execute(text("SHOW jit")).scalar() == "off"
            conn.execute(text("SET LOCAL jit_above_cost = 0"))  # every statement qualifies
            plan = conn.execute(
                text("EXPLAIN (ANALYZE, FORMAT JSON) SELECT sum(g) FROM generate_series(1, 10) g")
            ).scalar()
        assert plan is not None
        assert "JIT" not in plan[0]
    finally:
        database.dispose()
