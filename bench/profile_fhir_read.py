"""CPU per FHIR read, search and `$everything`, in-process, one request at a time.

    PYTHONPATH=src .venv/bin/python bench/profile_fhir_read.py --work /tmp/healthroam-bench-fhir \\
        --database postgresql+psycopg://postgres@127.0.0.1:5432/healthroam_bench_fhir

Runs against a database that `bench_fhir_store.py` loaded (it reads that run's `state.json`
for the client secret and the loaded ids). The real ASGI app is driven through httpx's ASGI
transport, one request at a time, and the process CPU time is divided by the requests; the
audit entries are sealed at the end of each measure and counted in it. On a shared machine CPU
time per request is steadier than any rate (other processes do not add to it, although cache
and scheduler effects still inflate it somewhat), so it compares code versions run minutes
apart. `--profile FILE` writes a cProfile of the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from healthroam.api.app import create_app
from healthroam.bootstrap import build
from healthroam.config import Settings
from healthroam.records.search_params import search_index

import benchlib


async def measure(
    client: httpx.AsyncClient,
    paths: list[str],
    headers: dict[str, str],
    seal: Any,
    database_cpu: Any = None,
) -> dict[str, float]:
    """``database_cpu``: a callable giving the CPU seconds of the database's backends so far
    (PostgreSQL), to report the database's CPU per request beside the process's."""
    for path in paths[:20]:  # warm: pool connections, caches
        (await client.get(path, headers=headers)).raise_for_status()
    seal()
    wall: list[float] = []
    sealing = 0.0
    database_start = database_cpu() if database_cpu else 0.0
    cpu_start = time.process_time()
    for path in paths:
        started = time.perf_counter()
        answer = await client.get(path, headers=headers)
        wall.append(time.perf_counter() - started)
        answer.raise_for_status()
    seal_start = time.process_time()
    seal()
    cpu = time.process_time() - cpu_start
    sealing = time.process_time() - seal_start
    wall.sort()
    result = {
        "requests": len(paths),
        "cpu_ms_per_request": round(cpu / len(paths) * 1000, 3),
        "seal_cpu_ms_per_request": round(sealing / len(paths) * 1000, 3),
        "p50_ms": round(statistics.median(wall) * 1000, 2),
        "p99_ms": round(wall[int(len(wall) * 0.99) - 1] * 1000, 2),
    }
    if database_cpu:
        spent = database_cpu() - database_start
        result["database_cpu_ms_per_request"] = round(spent / len(paths) * 1000, 3)
    return result


def _database_cpu(url: str) -> Any:
    """CPU seconds of the PostgreSQL backends connected to the database of ``url`` (None for
    SQLite); backends that ended meanwhile are missed."""
    if not url.startswith("postgresql"):
        return None
    name = url.rsplit("/", 1)[1].split("?", 1)[0]
    return lambda: sum(benchlib.cpu_of(benchlib.backend_pids(name)).values())


async def run(args: argparse.Namespace) -> dict[str, Any]:
    state = json.loads((args.work / "state.json").read_text())
    settings = Settings(
        database_url=args.database,
        data_dir=args.work / "data",
        audit_seal_interval_ms=0,
        public_base_url="http://bench",
    )
    platform = build(settings)
    search_index()
    app = create_app(platform)
    rng = random.Random(7)
    transport = httpx.ASGITransport(app=app)
    results: dict[str, Any] = {}
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        client_id, secret = state["secrets"]["reader"]
        token = await client.post(
            "/auth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
        )
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        n = args.requests
        typical = benchlib.fhir_search_paths(state["observations"], state["patient_ids"], rng, n)
        # bench_fhir_store.py's searches, under this script's shorter names
        names = (
            "read",
            "Observation?subject=&code=",
            "Encounter?date=ge&date=lt",
            "Condition?code=",
        )
        paths = dict(zip(names, typical.values(), strict=True))
        if "everything" in state:
            master = state["everything"]["master"]
            paths["$everything"] = [f"/fhir/Patient/{master}/$everything?_count=5000"] * max(
                n // 20, 25
            )
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        database_cpu = _database_cpu(args.database)
        for name, listing in paths.items():
            if args.only and name not in args.only.split(","):
                continue
            results[name] = await measure(
                client, listing, headers, platform.audit.seal, database_cpu
            )
            print(name, results[name], flush=True)
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.profile)
    platform.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path("/tmp/healthroam-bench-fhir"))
    parser.add_argument(
        "--database", default="postgresql+psycopg://postgres@127.0.0.1:5432/healthroam_bench_fhir"
    )
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--profile", type=Path)
    parser.add_argument(
        "--only", help="comma-separated request names (read, Condition?code=, $everything ...)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = asyncio.run(run(args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
