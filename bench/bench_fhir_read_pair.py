"""Reads (and searches) through HTTP, two code trees alternately, each on a fresh copy of one
loaded database: CPU per request of the server and of PostgreSQL, and req/s.

    .venv/bin/python bench/bench_fhir_read_pair.py --work /tmp/healthroam-bench-fhir \\
        --template healthroam_bench_fhir --trees /work/wt-base/src,/work/wt-branch/src \\
        --rounds 2 --duration 8 [--workers 2] [--kinds read,search,week] \\
        [--templates base_db,branch_db]

``--work`` and ``--template`` are a `bench_fhir_store.py` run's folder (its `state.json`: the
reader client, the loaded Observation and Patient ids) and database. Each measurement copies
the template (``CREATE DATABASE ... TEMPLATE``: the same data, no audit entries from earlier
runs), starts ``python -m healthroam serve`` from one tree (``PYTHONPATH``) with ``--workers``
processes, runs `wrk` (1 thread, ``--connections``) over random reads, the three typical
searches mixed or the golden `$everything` of the bench's person of about 1,000 resources,
and reads the CPU seconds of the server (with its worker processes) and of the database's
backends from /proc. The trees take turns (A, B, A, B ...) so contention from other
work hits both alike; the load average is printed beside each figure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from bench_fhir_store import wrk
from sqlalchemy import create_engine, text

import benchlib

ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def copy_database(template: str, name: str) -> None:
    engine = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        # FILE_COPY: a copy of the files after a checkpoint, not every page through the WAL
        # (a 10,000-people store is 2.3 GB: about a minute per run the default way).
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY'))
    engine.dispose()


def drop_database(name: str) -> None:
    engine = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def one_run(
    tree: str,
    args: argparse.Namespace,
    state: dict[str, Any],
    kind: str,
    paths: list[str],
    template: str,
) -> dict[str, Any]:
    name = f"{template}_pair"
    copy_database(template, name)
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    port = benchlib.free_port()
    base = f"http://127.0.0.1:{port}"
    env = benchlib.server_env(
        HEALTHROAM_DATABASE_URL=url,
        HEALTHROAM_DATA_DIR=str(args.work / "data"),
        HEALTHROAM_TOKEN_SIGNING_KEY_FILE=str(args.work / "data" / "keys" / "token-signing.pem"),
        HEALTHROAM_LOG_LEVEL="WARNING",
        HEALTHROAM_PUBLIC_BASE_URL=base,
        HEALTHROAM_TOKEN_TTL_SECONDS="3600",
        PYTHONPATH=tree.split("+")[0],
    )
    # A tree may carry settings: "src+HEALTHROAM_X=1+HEALTHROAM_Y=2".
    env.update(item.partition("=")[::2] for item in tree.split("+")[1:])
    # The copy is brought to the tree's own schema (a tree may add migrations).
    subprocess.run([sys.executable, "-m", "healthroam", "db", "upgrade"], env=env, check=True)
    command = [sys.executable, "-m", "healthroam", "serve", "--port", str(port)]
    if args.workers > 0:  # 0: the server's default (a tree may set HEALTHROAM_SERVER_WORKERS)
        command += ["--workers", str(args.workers)]
    log = args.work / "pair-server.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        # Two processes starting on a shared host at load 20 took over a minute (the run
        # then ended with an empty message).
        benchlib.wait_ready(f"{base}/readyz", process, seconds=300, log=log)
        client_id, secret = state["secrets"]["reader"]
        token = httpx.post(
            f"{base}/auth/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, secret),
        ).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        # Warm: pool connections, caches, the search parameters compiled at startup.
        wrk(base, auth, paths, args.work, 2, args.connections)
        time.sleep(1)
        pids = benchlib.with_children(process.pid)
        before = benchlib.cpu_of(pids)
        database_before = benchlib.cpu_of(benchlib.backend_pids(name))
        load_before = os.getloadavg()[0]
        figures = wrk(base, auth, paths, args.work, args.duration, args.connections)
        server = benchlib.cpu_spent(before, benchlib.cpu_of(pids))
        database = benchlib.cpu_spent(database_before, benchlib.cpu_of(benchlib.backend_pids(name)))
        requests = figures["requests"]
        return {
            "tree": tree,
            "template": template,
            "kind": kind,
            "workers": args.workers,
            "req_per_s": figures["req_per_s"],
            "p50_ms": round(figures["p50_ms"], 1),
            "p99_ms": round(figures["p99_ms"], 1),
            "non2xx": figures["non2xx"],
            "server_cpu_ms": round(server / requests * 1000, 3),
            "db_cpu_ms": round(database / requests * 1000, 3),
            "load": f"{load_before:.2f}-{os.getloadavg()[0]:.2f}",
        }
    finally:
        benchlib.stop_process(process, seconds=20)
        drop_database(name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--template", required=True, help="the loaded database's name")
    parser.add_argument(
        "--trees",
        required=True,
        help="comma-separated src folders, in turn; settings may follow a folder: "
        "src+HEALTHROAM_DATABASE_POOL_SIZE=20",
    )
    parser.add_argument(
        "--templates",
        help="comma-separated databases, one per tree (a tree whose migration rewrites a "
        "table gets a copy migrated and vacuumed beforehand); default: --template for all",
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--workers", type=int, default=1, help="server processes (0: the server's default)"
    )
    parser.add_argument(
        "--kinds",
        default="read",
        help="read, search, week (the date search alone), everything (comma-separated)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    state = json.loads((args.work / "state.json").read_text())
    typical = benchlib.fhir_search_paths(
        state["observations"], state["patient_ids"], random.Random(11)
    )
    listings = {"read": typical["read Observation/<id>"]}
    mixed = [p for name, listing in typical.items() if "?" in name for p in listing]
    random.Random(12).shuffle(mixed)
    listings["search"] = mixed
    listings["week"] = typical["Encounter?date=ge&date=lt (a week)"]
    if "everything" in state:  # the person of about 1,000 resources at 5 hospitals
        master = state["everything"]["master"]
        listings["everything"] = [f"/fhir/Patient/{master}/$everything?_count=5000"]
    trees = args.trees.split(",")
    templates = args.templates.split(",") if args.templates else [args.template] * len(trees)
    if len(templates) != len(trees):
        parser.error("--templates: one database per tree")
    results = []
    for _ in range(args.rounds):
        for kind in args.kinds.split(","):
            for tree, template in zip(trees, templates, strict=True):
                result = one_run(tree, args, state, kind, listings[kind], template)
                print(json.dumps(result), flush=True)
                results.append(result)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
