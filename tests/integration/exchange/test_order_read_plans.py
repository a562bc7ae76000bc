"""The reads an HL7 order and a group commit make on PostgreSQL (decision 0057) are index
look-ups by their whole key on tables without statistics (autovacuum off, a new database):
each Patient's references by (target_type, target_id), each stored ACK by its primary key -
never a pass over every reference to any Patient, or over the whole message log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, text

from healthroam.bootstrap import Platform
from healthroam.db.raw import RawSelect, dbapi
from healthroam.exchange.care.repository import _PG_ACTIVE_ENCOUNTERS, _PG_RECORD_KEYS
from healthroam.exchange.hl7.repository import _PG_ACKS
from healthroam.records.results import _PG_RESULTS, _PG_RESULTS_CODED

PATIENTS = 400  # each with an Encounter and 4 Observations referring to it
MESSAGES = 1_000


@pytest.fixture
def conn(platform: Platform) -> Iterator[Connection]:
    if platform.db.engine.dialect.name != "postgresql":
        pytest.skip("these statements are PostgreSQL's (SQLite runs the portable queries)")
    connection = platform.db.engine.connect()
    try:
        _fill(connection)
        yield connection
    finally:
        connection.rollback()
        connection.close()


def _fill(conn: Connection) -> None:
    """Resources referring to many Patients and a long message log, never analysed."""
    n = {"last": PATIENTS}
    conn.execute(
        text(
            "INSERT INTO fhir_resources (resource_type, id, version, last_updated, deleted,"
            " institution_code, content) SELECT t, t || '-' || p || '-' || k, 1, now(), false,"
            " 'H1', CAST(:content AS jsonb) FROM generate_series(1, :last) AS p,"
            " (VALUES ('Encounter', 1), ('Observation', 1), ('Observation', 2),"
            " ('Observation', 3), ('Observation', 4)) AS v(t, k)"
        ),
        {**n, "content": json.dumps({"status": "in-progress"})},
    )
    conn.execute(
        text(
            "INSERT INTO fhir_idx_reference (resource_type, resource_id, param, target_type,"
            " target_id) SELECT r.resource_type, r.id, p.param, 'Patient',"
            " split_part(r.id, '-', 2) FROM fhir_resources r,"
            " (VALUES ('subject'), ('patient')) AS p(param)"
        )
    )
    conn.execute(
        text(
            "INSERT INTO fhir_idx_token (resource_type, resource_id, param, system, code,"
            " last_updated) SELECT resource_type, id, 'code', 'http://loinc.org', '718-7', now()"
            " FROM fhir_resources WHERE resource_type = 'Observation'"
        )
    )
    conn.execute(
        text(
            "INSERT INTO hl7_messages (application, facility, control_id, received_at,"
            " institution_code, message_type, trigger_event, version, charset, size, digest,"
            " written, ack_code, ack) SELECT 'APP', 'FAC', 'c' || n, now(), 'H1', 'ADT', 'A04',"
            " '2.5', 'UNICODE UTF-8', 100, sha256(convert_to('c' || n, 'UTF8')), 1, 'AA',"
            " convert_to(repeat('MSH|^~\\&|HEALTHROAM|', 12) || n, 'UTF8')"
            " FROM generate_series(1, :count) AS n"
        ),
        {"count": MESSAGES},
    )


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _plan(conn: Connection, statement: RawSelect | str, params: dict[str, Any]) -> list[Any]:
    """The executed plan's nodes, the statement sent as the gateway sends it."""
    if isinstance(statement, str):
        statement = RawSelect(statement, ())
    explain = "EXPLAIN (ANALYZE, FORMAT JSON) " + statement.sql
    row = dbapi(conn).execute(explain, {**statement.defaults, **params}).fetchone()
    assert row is not None
    found = row[0] if isinstance(row[0], list) else json.loads(row[0])
    return list(_nodes(found[0]["Plan"]))


def _reads_only_its_keys(nodes: list[Any], table: str, column: str) -> None:
    on_table = [n for n in nodes if n.get("Relation Name") == table]
    assert on_table, nodes
    for node in on_table:
        assert node["Node Type"] in ("Index Scan", "Index Only Scan"), node
        assert column in node.get("Index Cond", ""), node
        assert node.get("Rows Removed by Filter", 0) <= 8, node  # a Patient's own rows


PATIENT_IDS = ["7", "123"]


def test_an_orders_results_read_each_patients_references(conn: Connection) -> None:
    params = {"patient_ids": PATIENT_IDS, "types": ["Observation", "DiagnosticReport"]}
    coded = {**params, "codes": ["code|http://loinc.org|718-7"]}
    for statement, values in ((_PG_RESULTS, params), (_PG_RESULTS_CODED, coded)):
        nodes = _plan(conn, statement, values)
        _reads_only_its_keys(nodes, "fhir_idx_reference", "target_id")
        assert nodes[0]["Actual Rows"] == 8  # 4 Observations per Patient


def test_an_orders_code_check_is_each_results_own_look_up(conn: Connection) -> None:
    """The coded results' EXISTS stays a sub-plan of each result row (decision 0063): a look-up
    of that result's token rows by its key, not a semi-join the planner weighs at every
    execution (the planning was most of the statement's server CPU) and which, on these
    tables without statistics, read the token index by resource type alone."""
    coded = {
        "patient_ids": PATIENT_IDS,
        "types": ["Observation", "DiagnosticReport"],
        "codes": ["code|http://loinc.org|718-7"],
    }
    nodes = _plan(conn, _PG_RESULTS_CODED, coded)
    assert not [n for n in nodes if n.get("Join Type") == "Semi"], nodes
    (check,) = [n for n in nodes if n.get("Parent Relationship") == "SubPlan"]
    assert check["Relation Name"] == "fhir_idx_token", check
    assert check["Node Type"] in ("Index Scan", "Index Only Scan"), check
    assert "resource_id" in check["Index Cond"], check
    assert nodes[0]["Actual Rows"] == 8


def test_the_care_reads_read_each_patients_references(conn: Connection) -> None:
    params = {"target_type": "Patient", "target_ids": PATIENT_IDS}
    keys = _plan(conn, _PG_RECORD_KEYS, params)
    _reads_only_its_keys(keys, "fhir_idx_reference", "target_id")
    assert keys[0]["Actual Rows"] == 10  # an Encounter and 4 Observations per Patient
    visits = _plan(conn, _PG_ACTIVE_ENCOUNTERS, {**params, "institution": "H1"})
    _reads_only_its_keys(visits, "fhir_idx_reference", "target_id")
    assert visits[0]["Actual Rows"] == 2


def test_a_groups_stored_acks_are_primary_key_look_ups(conn: Connection) -> None:
    ids = [f"c{n}" for n in (5, 500, 999)] + ["absent"]
    params = {"apps": ["APP"] * 4, "facs": ["FAC"] * 4, "ids": ids}
    nodes = _plan(conn, _PG_ACKS, params)
    _reads_only_its_keys(nodes, "hl7_messages", "control_id")
    assert nodes[0]["Actual Rows"] == 3
