"""CPU per search, and per `$everything`, by the caller that asks: an agency reader (no record
gate) against a hospital's client (its searches pass the record gate of decision 0025: only its
own data and that of residents it has a care relationship with).

`bench_fhir_store.py` measures with the agency reader. Hospitals are most of the platform's
searchers, so this bench runs the same typical searches as each caller in turn, one request at
a time (latency without queueing), and reports matches per request, p50, and CPU per request of
the server process and of PostgreSQL's backends for the database.

    cd bench && PYTHONPATH=../src ../.venv/bin/python bench_fhir_search_cpu.py \\
        --work /tmp/fs1k --database postgresql+psycopg://postgres@127.0.0.1:5432/hr_fs1k

`--work`/`--database`: a store built by `bench_fhir_store.py` (its state.json). `--clients`:
`reader` and/or hospital codes of that store (default: the reader and the first hospital).
`--kinds`: prefixes of the bench's search names, or `everything` (the golden `$everything`
of the bench's person, as the reader). Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import bench_fhir_store as store
import httpx
from sqlalchemy.engine import make_url

from healthroam.config import Settings

import benchlib


def _run(
    http: httpx.Client, paths: list[str], requests: int, pid: int, database: str
) -> dict[str, Any]:
    for path in paths[:20]:  # warm-up: statements prepared, caches filled
        http.get(path).raise_for_status()
    before = benchlib.cpu_of([pid, *benchlib.backend_pids(database)])
    timings, matched = [], 0
    for path in paths[20 : 20 + requests]:
        started = time.perf_counter()
        answer = http.get(path)
        timings.append(time.perf_counter() - started)
        answer.raise_for_status()
        matched += answer.content.count(b'"mode":"match"')
    after = benchlib.cpu_of([pid, *benchlib.backend_pids(database)])
    server = after[pid] - before[pid]
    db = benchlib.cpu_spent({k: v for k, v in before.items() if k != pid},
                            {k: v for k, v in after.items() if k != pid})  # fmt: skip
    timings.sort()
    n = len(timings)
    return {
        "matches": round(matched / n, 1),
        "p50_ms": round(timings[n // 2] * 1000, 2),
        "p95_ms": round(timings[int(n * 0.95)] * 1000, 2),
        "server_cpu_ms": round(server / n * 1000, 2),
        "database_cpu_ms": round(db / n * 1000, 2),
        "load": round(os.getloadavg()[0], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--clients", default="")
    parser.add_argument("--kinds", default="Observation,Encounter,Condition")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    state = json.loads((args.work / "state.json").read_text())
    secrets = {k: (v[0], v[1]) for k, v in state["secrets"].items()}
    clients = args.clients.split(",") if args.clients else [
        "reader", next(k for k in secrets if k != "reader")
    ]  # fmt: skip
    settings = Settings(database_url=args.database, data_dir=args.work / "data",
                        token_ttl_seconds=3600)  # fmt: skip
    database = make_url(args.database).database or ""
    paths = benchlib.fhir_search_paths(
        state["observations"], state["patient_ids"], random.Random(7), n=args.requests + 20
    )
    rows: list[dict[str, Any]] = []
    with store.server(settings, 1, args.work / "server.log") as (base, pid):
        tokens = store.Clients(base, secrets)
        for number in range(args.rounds):
            for kind in args.kinds.split(","):
                if kind == "everything":
                    master = state["everything"]["master"]
                    chosen = ["reader"]
                    listing = [f"/fhir/Patient/{master}/$everything?_count=5000"] * (
                        args.requests + 20
                    )
                    name = "golden $everything"
                else:
                    chosen = clients
                    name = next(k for k in paths if k.startswith(kind))
                    listing = paths[name]
                for client in chosen:
                    headers = tokens.headers(client)
                    with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
                        row = _run(http, listing, args.requests, pid, database)
                    rows.append({"search": name, "client": client, "round": number} | row)
                    print(json.dumps(rows[-1]), flush=True)
    print(f"{'search':42} {'client':10} {'matches':>7} {'p50':>7} {'p95':>7} {'srv ms':>7} "
          f"{'db ms':>6} {'load':>5}")  # fmt: skip
    for r in rows:
        print(f"{r['search'][:42]:42} {r['client']:10} {r['matches']:>7} {r['p50_ms']:>7} "
              f"{r['p95_ms']:>7} {r['server_cpu_ms']:>7} {r['database_cpu_ms']:>6} "
              f"{r['load']:>5}")  # fmt: skip


if __name__ == "__main__":
    main()
