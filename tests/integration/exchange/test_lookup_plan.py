"""The HL7 gateway's per-message look-up on PostgreSQL (the function ``hl7_lookup``, decision
0049): planned for its values while ``fhir_resources`` is small, and under one generic plan of
primary-key and index look-ups once it is past the threshold. The plans are read with
``auto_explain`` (nested statements), so what is checked is the function as it runs."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from healthroam.bootstrap import Platform
from healthroam.db.raw import dbapi

GENERIC_FROM_BYTES = 64 * 8192  # migration 0010_hl7lookup


@pytest.fixture
def conn(platform: Platform) -> Iterator[Connection]:
    if platform.db.engine.dialect.name != "postgresql":
        pytest.skip("the look-up function is PostgreSQL's (SQLite runs the portable query)")
    connection = platform.db.engine.connect()
    try:
        yield connection
    finally:
        connection.rollback()
        connection.invalidate()  # auto_explain was loaded into this session: not for reuse
        connection.close()


def _plans(conn: Connection, call: Any) -> list[str]:
    """The plans auto_explain reports while ``call`` runs (nested statements included)."""
    raw = dbapi(conn)
    seen: list[str] = []

    def keep(diagnostic: Any) -> None:
        seen.append(diagnostic.message_primary or "")

    raw.add_notice_handler(keep)
    try:
        call()
    finally:
        raw.remove_notice_handler(keep)
    return [message for message in seen if "plan:" in message]


def _lookup(conn: Connection, rid: str) -> Sequence[Any]:
    return conn.execute(
        text(
            "SELECT * FROM hl7_lookup(ARRAY['Observation', 'Patient']::varchar[],"
            " ARRAY[:rid, 'absent']::varchar[], ARRAY['Observation']::varchar[],"
            " ARRAY['urn:test']::varchar[], ARRAY[:rid]::varchar[])"
        ),
        {"rid": rid},
    ).all()


def _add(conn: Connection, first: int, count: int) -> None:
    content = json.dumps({"resourceType": "Observation", "note": "x" * 1500})
    conn.execute(
        text(
            "INSERT INTO fhir_resources (resource_type, id, version, last_updated, deleted,"
            " institution_code, content)"
            " SELECT 'Observation', 'o' || n, 1, now(), false, NULL, CAST(:content AS jsonb)"
            " FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS n"
        ),
        {"content": content, "first": first, "last": first + count - 1},
    )
    conn.execute(
        text(
            "INSERT INTO fhir_idx_token (resource_type, resource_id, param, system, code,"
            " last_updated) SELECT 'Observation', 'o' || n, 'identifier', 'urn:test', 'o' || n,"
            " now() FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS n"
        ),
        {"first": first, "last": first + count - 1},
    )


def test_small_tables_are_planned_per_call_then_one_generic_plan_of_index_look_ups(
    conn: Connection,
) -> None:
    conn.execute(text("TRUNCATE fhir_resources, fhir_idx_token"))  # rolled back at the end
    try:
        with conn.begin_nested():
            conn.execute(text("LOAD 'auto_explain'"))
    except DBAPIError:
        pytest.skip("auto_explain is not installed on this PostgreSQL")
    for setting in (
        "auto_explain.log_min_duration = 0",
        "auto_explain.log_nested_statements = on",
        "client_min_messages = log",
    ):
        conn.execute(text(f"SET LOCAL {setting}"))
    _add(conn, 1, 5)
    size = conn.execute(text("SELECT pg_relation_size('fhir_resources')")).scalar_one()
    assert size < GENERIC_FROM_BYTES

    small = _plans(conn, lambda: _lookup(conn, "o3"))
    # Below the threshold: the EXECUTE form ($1 ...), planned for the call's values.
    assert any("unnest($1, $2)" in plan for plan in small), small
    assert not any("unnest(key_types, key_ids)" in plan for plan in small), small
    rows = _lookup(conn, "o3")
    assert sorted((r.resource_type, r.id, r.system or "") for r in rows) == [
        ("Observation", "o3", ""),
        ("Observation", "o3", "urn:test"),
    ]

    _add(conn, 6, 600)
    size = conn.execute(text("SELECT pg_relation_size('fhir_resources')")).scalar_one()
    assert size >= GENERIC_FROM_BYTES
    for _ in range(3):  # the same generic plan every call
        large = [p for p in _plans(conn, lambda: _lookup(conn, "o500")) if "key_types" in p]
        assert len(large) == 1, large
        plan = large[0]
        assert "pk_fhir_resources" in plan, plan
        for bad in ("Seq Scan", "Hash", "ix_fhir_resources_type_updated", "Bitmap"):
            assert bad not in plan, plan
    rows = _lookup(conn, "o500")
    assert sorted((r.resource_type, r.id, r.system or "") for r in rows) == [
        ("Observation", "o500", ""),
        ("Observation", "o500", "urn:test"),
    ]
