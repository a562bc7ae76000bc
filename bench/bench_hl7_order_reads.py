"""HL7 v2 gateway (issue 6, decision 0057): client and server CPU per call of the reads an
order and a group commit make, SQLAlchemy Core statement against the psycopg statement of
decision 0057, interleaved in one process on one connection (so that a shared, loaded host
slows both alike).

The simulator's first --visits visits are applied through the gateway's real path into a
fresh PostgreSQL database (kept until the end, then dropped); then for real inputs taken from
it (Patients with results, the recognition table's codes, the person's Patients, stored
control ids, the senders) each read runs --calls times per round in both forms, alternating,
for --rounds rounds; the answers of both forms are compared.

Run: PYTHONPATH=src:bench .venv/bin/python bench/bench_hl7_order_reads.py [--visits 300]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench_hl7_statements
from sqlalchemy import Connection, false, select, text, tuple_

from healthroam.bootstrap import build
from healthroam.config import Settings
from healthroam.db.raw import RawSelect, dbapi
from healthroam.db.schema import fhir_resources, institutions
from healthroam.db.tables_exchange import hl7_messages, hl7_senders
from healthroam.db.tables_records import fhir_idx_reference
from healthroam.exchange.care.repository import _PG_RECORD_KEYS
from healthroam.exchange.hl7.repository import _PG_ACKS, MessageLogRepository, SenderRepository
from healthroam.records.results import _PG_RESULTS_CODED, _results_query, patient_results
from healthroam.security.repository import _INSTITUTION, InstitutionRepository

import benchlib


def record_keys_old(conn: Connection, keys: list[tuple[str, str]]) -> set[tuple[Any, ...]]:
    ref, res = fhir_idx_reference.c, fhir_resources.c
    query = (
        select(res.resource_type, res.id, res.institution_code)
        .select_from(
            fhir_idx_reference.join(
                fhir_resources,
                (res.resource_type == ref.resource_type) & (res.id == ref.resource_id),
            )
        )
        .where(tuple_(ref.target_type, ref.target_id).in_(keys), res.deleted == false())
        .distinct()
    )
    return {tuple(r) for r in conn.execute(query).all()}


def record_keys_new(conn: Connection, keys: list[tuple[str, str]]) -> set[tuple[Any, ...]]:
    rows = _PG_RECORD_KEYS.rows(
        conn, {"target_type": "Patient", "target_ids": [k[1] for k in keys]}
    )
    return {tuple(r) for r in rows}


def acks_old(conn: Connection, keys: set[tuple[str, str, str]]) -> set[tuple[Any, ...]]:
    c = hl7_messages.c
    rows = conn.execute(
        select(c.application, c.facility, c.control_id, c.ack, c.ack_code, c.digest).where(
            tuple_(c.application, c.facility, c.control_id).in_(sorted(keys))
        )
    )
    return {(r.application, r.facility, r.control_id, bytes(r.ack)) for r in rows}


def acks_new(conn: Connection, keys: set[tuple[str, str, str]]) -> set[tuple[Any, ...]]:
    return {(*k, v.ack) for k, v in MessageLogRepository(conn).find_acks(keys).items()}


def senders_old(conn: Connection, keys: set[tuple[str, str]]) -> set[tuple[Any, ...]]:
    rows = conn.execute(
        select(hl7_senders, institutions.c.active.label("institution_active"))
        .join(institutions, institutions.c.code == hl7_senders.c.institution_code)
        .where(tuple_(hl7_senders.c.application, hl7_senders.c.facility).in_(sorted(keys)))
    )
    return {(r.application, r.facility, r.institution_code, r.institution_active) for r in rows}


def senders_new(conn: Connection, keys: set[tuple[str, str]]) -> set[tuple[Any, ...]]:
    found = SenderRepository(conn).find_active_many(keys)
    return {(k[0], k[1], b.institution_code, a) for k, (b, a) in found.items()}


def institution_new(conn: Connection, code: str) -> tuple[Any, ...]:
    i = InstitutionRepository(conn).get(code)
    assert i is not None
    return (i.code, i.name, i.kind.value, i.level, i.region, i.active)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--visits", type=int, default=300)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        benchlib.temporary_database(True, Path(tmp)) as (name, url),
    ):
        bench_hl7_statements.run(url, Path(tmp), args.visits, 20, None, name, 0)
        settings = Settings(
            database_url=url,
            data_dir=Path(tmp),
            token_signing_key_file=Path(tmp) / "signing.pem",
            audit_seal_interval_ms=0,
        )
        with build(settings) as platform, platform.db.transaction() as conn:
            measure(conn, args.calls, args.rounds)


def measure(conn: Connection, calls: int, rounds: int) -> None:
    rng = random.Random(7)
    backend = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    subjects = [
        r[0]
        for r in conn.execute(
            text(
                "SELECT DISTINCT target_id FROM fhir_idx_reference WHERE param = 'subject'"
                " AND target_type = 'Patient' AND resource_type = 'Observation'"
            )
        )
    ]
    codes = [
        (r[0], r[1])
        for r in conn.execute(
            text(
                "SELECT DISTINCT system, code FROM fhir_idx_token WHERE param = 'code'"
                " AND resource_type = 'Observation' LIMIT 12"
            )
        )
    ]
    controls = [
        tuple(r)
        for r in conn.execute(text("SELECT application, facility, control_id FROM hl7_messages"))
    ]
    senders = [
        tuple(r) for r in conn.execute(text("SELECT application, facility FROM hl7_senders"))
    ]
    codes_inst = [r[0] for r in conn.execute(text("SELECT code FROM institutions"))]
    types = ["Observation", "DiagnosticReport"]

    def inputs_results() -> Any:
        ids = rng.sample(subjects, 2)
        return ids, rng.sample(codes, 4)

    def results_old(conn: Connection, arg: Any) -> Any:
        ids, chosen = arg
        keyed = sorted(f"code|{s}|{c}" for s, c in chosen)
        rows = conn.execute(_results_query(list(ids), types, keyed)).all()
        return [(r.resource_type, r.id, r.version, r.content, r.institution_code) for r in rows]

    def results_new(conn: Connection, arg: Any) -> Any:
        ids, chosen = arg
        return [
            (
                x.stored.resource_type,
                x.stored.id,
                x.stored.version,
                x.stored.content,
                x.institution_code,
            )
            for x in patient_results(conn, ids, types, codes=chosen)
        ]

    cases: list[tuple[str, Callable[[], Any], Callable[..., Any], Callable[..., Any]]] = [
        ("order's results (patient_results)", inputs_results, results_old, results_new),
        (
            "care record keys",
            lambda: [("Patient", p) for p in rng.sample(subjects, 2)],
            record_keys_old,
            record_keys_new,
        ),
        (
            "group's stored ACKs (10 keys)",
            lambda: set(rng.sample(controls, 10)),
            acks_old,
            acks_new,
        ),
        ("group's senders (5)", lambda: set(rng.sample(senders, 5)), senders_old, senders_new),
        (
            "institution",
            lambda: rng.choice(codes_inst),
            lambda c, code: tuple(c.execute(_INSTITUTION, {"code": code}).first()),
            institution_new,
        ),
    ]
    print(
        "| read | SQLAlchemy client ms/call | psycopg client ms/call"
        " | SQLAlchemy server ms/call | psycopg server ms/call |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, make, old, new in cases:
        args = [make() for _ in range(calls)]
        for a in args[:5]:  # same answers; warms the statement caches and psycopg's prepare
            o, n = old(conn, a), new(conn, a)
            if label == "institution":  # the SQLAlchemy row has created_at too
                o = o[:6]
            assert sorted(map(repr, o)) == sorted(map(repr, n)), label
        for _ in range(2):
            for a in args:
                old(conn, a)
                new(conn, a)
        spent = {"old": [0.0, 0.0], "new": [0.0, 0.0]}
        for _ in range(rounds):
            for kind, fn in (("old", old), ("new", new)):
                s0, c0 = benchlib.cpu_seconds(backend), time.process_time()
                for a in args:
                    fn(conn, a)
                spent[kind][0] += time.process_time() - c0
                spent[kind][1] += benchlib.cpu_seconds(backend) - s0
        n = calls * rounds
        print(
            f"| {label} | {spent['old'][0] * 1000 / n:.3f} | {spent['new'][0] * 1000 / n:.3f}"
            f" | {spent['old'][1] * 1000 / n:.3f} | {spent['new'][1] * 1000 / n:.3f} |"
        )
    keyed = sorted(f"code|{s}|{c}" for s, c in rng.sample(codes, 4))
    explain(conn, rng.sample(subjects, 2), keyed, rng.sample(controls, 10))


def explain(
    conn: Connection, ids: list[str], keyed: list[str], acks: list[tuple[str, ...]]
) -> None:
    """Planning and execution time of the order's two largest reads (as the gateway sends them)."""
    raw = dbapi(conn)
    for label, statement, params in (
        (
            "order's results",
            _PG_RESULTS_CODED,
            {"patient_ids": ids, "types": ["Observation", "DiagnosticReport"], "codes": keyed},
        ),
        ("care record keys", _PG_RECORD_KEYS, {"target_type": "Patient", "target_ids": ids}),
        (
            "group's stored ACKs",
            RawSelect(_PG_ACKS),
            {
                "apps": [k[0] for k in acks],
                "facs": [k[1] for k in acks],
                "ids": [k[2] for k in acks],
            },
        ),
    ):
        lines = [
            r[0]
            for r in raw.execute(
                "EXPLAIN (ANALYZE, SUMMARY) " + statement.sql, {**statement.defaults, **params}
            )
        ]
        print(f"{label}:")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
