"""An order's coded results look-up (issue 6, decision 0063): the semi-join form (before) and
the sub-plan form (`records/results.py`) interleaved on one PostgreSQL connection.

A fresh database gets the simulator's first --visits visits through the gateway's real path
(`bench_hl7_statements.run`), optionally ANALYZEd (a gateway's database never is: autovacuum
off); then, per round and per form (the order alternating), the statement runs for 40 Patients
with results of a tabled test and 40 without (the connection planning each execution, as the
platform's do: `force_custom_plan`), and a quarter of them again under `EXPLAIN (ANALYZE,
SUMMARY)`. Prints per form: median planning and execution ms and the backend's CPU per call
(/proc, 10 ms ticks).

Run: HEALTHROAM_BENCH_DB_PREFIX=hr_x PYTHONPATH=src:bench .venv/bin/python \
    bench/bench_hl7_results_forms.py [--visits 600] [--rounds 8] [--analyze]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import psycopg
from bench_hl7_statements import run

from healthroam.records.results import _PG_RESULTS_CODED

import benchlib

SUB_PLAN = _PG_RESULTS_CODED.sql
SEMI_JOIN = SUB_PLAN.replace(" OFFSET 0)", ")")  # the text before decision 0063
TYPES = ["Observation", "DiagnosticReport"]
WITH_RESULTS = """SELECT x.target_id, 'code|' || k.system || '|' || k.code
FROM fhir_idx_reference x JOIN fhir_idx_token k
  ON k.resource_type = x.resource_type AND k.resource_id = x.resource_id AND k.param = 'code'
WHERE x.resource_type = 'Observation' AND x.param = 'subject' AND x.target_type = 'Patient'
LIMIT 40"""


def measure(url: str, rounds: int) -> dict[str, tuple[float, float, float]]:
    conn = psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True)
    conn.execute("SET plan_cache_mode = force_custom_plan")
    conn.execute("SET jit = off")
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    backend = int(row[0])
    cases: list[tuple[str, str]] = [(str(p), str(c)) for p, c in conn.execute(WITH_RESULTS)]
    cases += [
        (str(p), "code|http://loinc.org|0000-0")
        for (p,) in conn.execute(
            "SELECT id FROM fhir_resources WHERE resource_type = 'Patient' LIMIT 40"
        )
    ]
    forms = {"semi-join (before)": SEMI_JOIN, "sub-plan (0063)": SUB_PLAN}
    planning: dict[str, list[float]] = {name: [] for name in forms}
    execution: dict[str, list[float]] = {name: [] for name in forms}
    cpu = dict.fromkeys(forms, 0.0)
    for n in range(rounds):
        order = list(forms.items()) if n % 2 == 0 else list(reversed(forms.items()))
        for name, sql in order:
            before = benchlib.cpu_seconds(backend)
            for patient, code in cases:
                conn.execute(sql, _params(patient, code)).fetchall()
            cpu[name] += benchlib.cpu_seconds(backend) - before
            for patient, code in cases[::4]:
                found = conn.execute(
                    "EXPLAIN (ANALYZE, SUMMARY, FORMAT JSON) " + sql, _params(patient, code)
                ).fetchone()
                assert found is not None
                plan = found[0][0]
                planning[name].append(plan["Planning Time"])
                execution[name].append(plan["Execution Time"])
    conn.close()
    calls = rounds * len(cases)
    return {
        name: (
            statistics.median(planning[name]),
            statistics.median(execution[name]),
            cpu[name] / calls * 1000,
        )
        for name in forms
    }


def _params(patient: str, code: str) -> dict[str, Any]:
    return {"patient_ids": [patient], "types": TYPES, "codes": [code]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visits", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--analyze", action="store_true", help="ANALYZE the store first")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        benchlib.temporary_database(True, Path(tmp)) as (name, url),
    ):
        run(url, Path(tmp), args.visits, 20, database=name)
        if args.analyze:
            with psycopg.connect(
                url.replace("postgresql+psycopg", "postgresql"), autocommit=True
            ) as conn:
                conn.execute("ANALYZE")
        result = measure(url, args.rounds)
    print("| form | planning, median ms | execution, median ms | backend CPU per call ms |")
    print("| --- | ---: | ---: | ---: |")
    for form, (plan, execute, per_call) in result.items():
        print(f"| {form} | {plan:.3f} | {execute:.3f} | {per_call:.3f} |")


if __name__ == "__main__":
    main()
