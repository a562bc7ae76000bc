"""The connection pool replaces a connection that died while idle (no pre-ping round trip)."""

from __future__ import annotations

import select
from typing import Any

from sqlalchemy import text

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
