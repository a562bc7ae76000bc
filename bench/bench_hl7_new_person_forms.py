"""Registry (issue 6, decision 0060): client and server CPU per new person of two ways to
write its rows on PostgreSQL, interleaved on one connection (so that a shared, loaded host
slows both alike), 20 new persons per transaction.

- "main": ``RegistryRepository.add_person`` as it is (decision 0043): the ids drawn first (one
  round trip), then the master, source, keys, name counts, both events and their recipients
  in one pipeline;
- "one pipeline" (tried in session 13 and not kept): the master, source and keys in one
  statement that draws their ids (the golden record's provenance completed in SQL), the name
  counts, then each event with its recipients, their ids taken by ``currval``: one round trip.

Each form runs 100 new persons per turn, the forms alternating, for --rounds rounds; server
CPU is the backend's, from /proc.

Run: PYTHONPATH=src:bench .venv/bin/python bench/bench_hl7_new_person_forms.py [--rounds 16]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from healthroam.registry.repository import _PG_COUNT_NAMES

import benchlib

_IDS = (
    "SELECT nextval(pg_get_serial_sequence('master_persons', 'id')),"
    " nextval(pg_get_serial_sequence('source_records', 'id')),"
    " ARRAY(SELECT nextval(pg_get_serial_sequence('mpi_events', 'seq'))"
    " FROM generate_series(1, %s))"
)
_MASTER = (
    "INSERT INTO master_persons (id, master_index_id, status, merged_into, golden, name,"
    " birth_date, sex, version, created_at, updated_at)"
    " VALUES (%s, %s, 'active', NULL, %s, %s, %s, %s, 1, %s, %s)"
)
_SOURCE = (
    "INSERT INTO source_records (id, institution_code, id_system, local_id, master_id,"
    " link_type, data, normalized, content_hash, fhir_patient_id, created_at, updated_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_KEYS = "INSERT INTO mpi_blocking_keys (key, source_id) SELECT k, %s FROM unnest(%s::text[]) AS k"
_EVENT = (
    "INSERT INTO mpi_events (seq, occurred_at, event_type, master_id, other_master_id,"
    " source_id, actor_institution, actor_user, actor_client, reason, institutions, detail)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_RECIPIENTS = (
    "INSERT INTO mpi_event_recipients (institution_code, seq)"
    " SELECT * FROM unnest(%s::text[], %s::bigint[])"
)
_ONE_PERSON = (
    "WITH ids AS MATERIALIZED (SELECT nextval(pg_get_serial_sequence('master_persons', 'id')) AS m,"
    " nextval(pg_get_serial_sequence('source_records', 'id')) AS s),"
    " mp AS (INSERT INTO master_persons (id, master_index_id, status, merged_into, golden, name,"
    " birth_date, sex, version, created_at, updated_at)"
    " SELECT ids.m, %s, 'active', NULL, %s::jsonb || jsonb_build_object('provenance',"
    " COALESCE((SELECT jsonb_object_agg(f, ids.s) FROM unnest(%s::text[]) AS f), '{}'::jsonb)),"
    " %s, %s, %s, 1, %s, %s FROM ids),"
    " sr AS (INSERT INTO source_records (id, institution_code, id_system, local_id, master_id,"
    " link_type, data, normalized, content_hash, fhir_patient_id, created_at, updated_at)"
    " SELECT ids.s, %s, %s, %s, ids.m, %s, %s, %s, %s, %s, %s, %s FROM ids),"
    " k AS (INSERT INTO mpi_blocking_keys (key, source_id)"
    " SELECT k.key, ids.s FROM ids, unnest(%s::text[]) WITH ORDINALITY AS k(key, i) ORDER BY k.i)"
    " SELECT ids.m, ids.s FROM ids"
)
_ONE_EVENT = (
    "WITH e AS (INSERT INTO mpi_events (occurred_at, event_type, master_id, other_master_id,"
    " source_id, actor_institution, actor_user, actor_client, reason, institutions, detail)"
    " VALUES (%s, %s, currval(pg_get_serial_sequence('master_persons', 'id')), %s,"
    " CASE WHEN %s THEN currval(pg_get_serial_sequence('source_records', 'id')) END,"
    " %s, %s, %s, %s, %s, %s) RETURNING seq)"
    " INSERT INTO mpi_event_recipients (institution_code, seq)"
    " SELECT c.code, e.seq FROM e, unnest(%s::text[]) WITH ORDINALITY AS c(code, i) ORDER BY c.i"
)
GOLDEN = {
    "sex": "2",
    "name": "黎阿妹",
    "phone": "13907550002",
    "sources": 1,
    "birth_date": "1961-03-09",
    "identifiers": [],
}
FIELDS = ["sex", "name", "phone", "birth_date"]
DATA = {"name": "黎阿妹", "phones": ["13907550002"], "sex": "female"}
NORMALIZED = {"name": "黎阿妹", "pinyin": "li a mei", "birth_date": "1961-03-09"}


def main_form(conn: psycopg.Connection[Any], i: int, now: datetime) -> None:
    cursor = conn.cursor()
    row = cursor.execute(_IDS, (2,)).fetchone()
    assert row is not None
    master, source, seqs = row[0], row[1], sorted(row[2])
    golden = {**GOLDEN, "provenance": dict.fromkeys(FIELDS, source)}
    with conn.pipeline():
        cursor.execute(
            _MASTER, (master, f"M{i}", Jsonb(golden), "黎阿妹", "1961-03-09", "2", now, now)
        )
        cursor.execute(
            _SOURCE,
            (
                source,
                "H1",
                "urn:mrn",
                f"M{i}",
                master,
                "auto",
                Jsonb(DATA),
                Jsonb(NORMALIZED),
                "hash",
                f"m{i}",
                now,
                now,
            ),
        )
        cursor.execute(_KEYS, (source, [f"m{i}a", f"m{i}b", f"m{i}c"]))
        cursor.execute(_PG_COUNT_NAMES, (["", "黎阿妹"],))
        cursor.executemany(
            _EVENT,
            [
                (
                    seqs[0],
                    now,
                    "create",
                    master,
                    None,
                    None,
                    "H1",
                    "clerk",
                    "his",
                    None,
                    Jsonb(["H1"]),
                    None,
                ),
                (
                    seqs[1],
                    now,
                    "link",
                    master,
                    None,
                    source,
                    "H1",
                    "clerk",
                    "his",
                    None,
                    Jsonb(["H1"]),
                    None,
                ),
            ],
        )
        cursor.execute(_RECIPIENTS, (["H1", "H1"], seqs))


def one_pipeline(conn: psycopg.Connection[Any], i: int, now: datetime) -> None:
    added = conn.cursor()
    with conn.pipeline():
        added.execute(
            _ONE_PERSON,
            (
                f"O{i}",
                Jsonb(GOLDEN),
                FIELDS,
                "黎阿妹",
                "1961-03-09",
                "2",
                now,
                now,
                "H1",
                "urn:mrn",
                f"O{i}",
                "auto",
                Jsonb(DATA),
                Jsonb(NORMALIZED),
                "hash",
                f"o{i}",
                now,
                now,
                [f"o{i}a", f"o{i}b", f"o{i}c"],
            ),
        )
        conn.cursor().execute(_PG_COUNT_NAMES, (["", "黎阿妹"],))
        for event in ("create", "link"):
            conn.cursor().execute(
                _ONE_EVENT,
                (
                    now,
                    event,
                    None,
                    event == "link",
                    "H1",
                    "clerk",
                    "his",
                    None,
                    Jsonb(["H1"]),
                    None,
                    ["H1"],
                ),
            )
    added.fetchone()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=16)
    args = parser.parse_args()
    name, url = benchlib.create_database()
    try:
        benchlib.migrate(url)
        conn = psycopg.connect(url.replace("postgresql+psycopg", "postgresql"))
        conn.execute("SET plan_cache_mode = force_custom_plan")  # as the gateway's connections
        conn.execute(
            "INSERT INTO institutions (code, name, kind, level, region, active, created_at)"
            " VALUES ('H1', 'h', 'hospital', 3, '460106', true, now())"
        )
        conn.commit()
        pid = conn.info.backend_pid

        def server() -> float:
            return benchlib.cpu_seconds(pid)

        forms: dict[str, Callable[[psycopg.Connection[Any], int, datetime], None]] = {
            "main": main_form,
            "one pipeline": one_pipeline,
        }
        spent = {form: [0.0, 0.0, 0] for form in forms}
        now, i = datetime.now(UTC), 0
        for turn in range(args.rounds):
            order = list(forms) if turn % 2 == 0 else list(forms)[::-1]
            for form in order:
                server0, client0 = server(), time.process_time()
                for _ in range(5):
                    for _ in range(20):
                        forms[form](conn, i, now)
                        i += 1
                    conn.commit()
                spent[form][0] += time.process_time() - client0
                spent[form][1] += server() - server0
                spent[form][2] += 100
        conn.close()
    finally:
        benchlib.drop_database(name)
    print("| form | client CPU ms per new person | server CPU ms | both |")
    print("| --- | ---: | ---: | ---: |")
    for form, (client, backend, count) in spent.items():
        print(
            f"| {form} | {client * 1000 / count:.3f} | {backend * 1000 / count:.3f} | "
            f"{(client + backend) * 1000 / count:.3f} |"
        )


if __name__ == "__main__":
    main()
