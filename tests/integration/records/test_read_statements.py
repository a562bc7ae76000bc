"""A FHIR read without gate writes sends its select and its group's audit insert outside a
transaction on PostgreSQL (db/raw.py ``statements_alone``): no BEGIN and no COMMIT, and the
entry is committed before the read returns. SQLite and a read whose transaction already
began are unchanged."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select, text

from healthroam.bootstrap import Platform
from healthroam.db.raw import dbapi, statements_alone
from healthroam.db.schema import audit_events, audit_inbox
from healthroam.errors import NotFound
from healthroam.security.model import Principal

from helpers import Province, make_observation


@contextmanager
def traced(platform: Platform) -> Iterator[list[str]]:
    """The simple and extended queries sent by every connection checked out inside the block
    (libpq's protocol trace), as their SQL texts' first words."""
    handle, path = tempfile.mkstemp(suffix=".trace")
    sent: list[str] = []
    connections: list[Any] = []

    def checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        dbapi_connection.pgconn.trace(handle)
        dbapi_connection.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        connections.append(dbapi_connection)

    event.listen(platform.db.engine, "checkout", checkout)
    try:
        yield sent
    finally:
        event.remove(platform.db.engine, "checkout", checkout)
        for conn in connections:
            conn.pgconn.untrace()
        os.close(handle)
        with open(path, encoding="utf-8", errors="replace") as trace:
            logged = trace.read()
        # Frontend messages: simple queries ("BEGIN", "COMMIT") and extended ones (Parse of
        # a new statement or Bind of a prepared one, each with its Execute).
        named: dict[str, str] = {}
        for kind, rest in re.findall(r"^F\t\d+\t(Query|Parse|Bind)\t(.*)$", logged, re.M):
            fields = rest.split('"')
            if kind == "Query":
                sent.append(fields[1].split()[0].upper())
            elif kind == "Parse":  # "<statement name>" "<sql>"
                named[fields[1]] = fields[3].split()[0].upper()
                sent.append(named[fields[1]])
            elif fields[3]:  # Bind "<portal>" "<prepared statement>": no Parse before it
                sent.append(named.get(fields[3], "PREPARED"))
        os.unlink(path)


def _entries(platform: Platform, resource_id: str) -> int:
    with platform.db.transaction(readonly=True) as conn:
        waiting = conn.execute(
            select(func.count()).where(audit_inbox.c.resource_id == resource_id)
        ).scalar_one()
        sealed = conn.execute(
            select(func.count()).where(audit_events.c.resource_id == resource_id)
        ).scalar_one()
    return int(waiting) + int(sealed)


def test_a_lone_read_sends_its_select_and_its_audit_insert_without_begin_or_commit(
    http: TestClient, platform: Platform, province: Province
) -> None:
    if platform.db.dialect != "postgresql":
        pytest.skip("PostgreSQL's round trips")
    headers = province.headers("system/*.cruds")
    _pid, obs = make_observation(http, headers)
    principal: Principal = platform.auth.principal(
        platform.auth.token(headers["Authorization"].split()[1])
    )
    before = _entries(platform, obs)
    with traced(platform) as sent:
        stored = platform.records.read(principal, "Observation", obs)
        with pytest.raises(NotFound):  # audited too
            platform.records.read(principal, "Observation", "nothere")
    assert stored.id == obs
    # Before: BEGIN, SELECT, INSERT, COMMIT for each.
    assert len(sent) == 4, sent
    assert not {"BEGIN", "COMMIT"} & set(sent), sent
    # Committed before read returned (seen from another connection).
    assert _entries(platform, obs) == before + 1
    assert _entries(platform, "nothere") >= 1


def test_statements_alone_changes_nothing_once_the_transaction_began(
    platform: Platform,
) -> None:
    with platform.db.transaction() as conn:
        with statements_alone(conn) as alone:
            conn.execute(text("SELECT 1"))
        if platform.db.dialect != "postgresql":
            assert not alone
            return
        assert alone
        assert dbapi(conn).pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
        conn.execute(text("SELECT 1"))  # begins the transaction
        with statements_alone(conn) as alone:
            assert not alone
            assert not dbapi(conn).autocommit
        assert dbapi(conn).pgconn.transaction_status == psycopg.pq.TransactionStatus.INTRANS
