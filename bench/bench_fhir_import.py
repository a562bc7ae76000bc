"""Bulk `$import` alone, through the real HTTP endpoint: resources/s, CPU per resource, digest.

    PYTHONPATH=src .venv/bin/python bench/bench_fhir_import.py --people 2000 \\
        --database postgresql+psycopg://postgres@127.0.0.1:5432/hr_bench_import \\
        --work /tmp/fi

Generates a synthetic province's clinical histories once (`healthroam synth clinical`'s
generator, one NDJSON file per hospital, kept in ``--work`` for later runs), then per run: a
fresh database (migrated), the 30 hospitals with one `system/*.cruds` client each, one server
(`python -m healthroam serve`), and every hospital's file posted to `POST /fhir/$import` one
after the other. Reports resources/s (wall), the server's CPU per resource (the server process
and all its descendants: the import's worker processes are children of a forkserver) and the
PostgreSQL backends' CPU per resource (from /proc), and a digest of what was stored: every
resource's type, id, version, owner and content, its versions, and every search index row
(row ids and timestamps of the write left out), so two code versions can be compared on the
same input. Run it with ``PYTHONPATH`` pointing at the code to measure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_fhir_store import Clients, bulk_import, env_for, server, write_stage
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from healthroam.bootstrap import build
from healthroam.config import Settings
from healthroam.db.tables_records import INDEX_TABLES
from healthroam.synth.clinical import ClinicalGenerator

import benchlib


def cpu(server_pid: int, database: str) -> tuple[dict[int, float], dict[int, float]]:
    return (
        benchlib.cpu_of(benchlib.with_children(server_pid)),
        benchlib.cpu_of(benchlib.backend_pids(database)) if database else {},
    )


def digest(url: str) -> dict[str, str]:
    """A digest per table of what an import stored (order-independent)."""
    engine = create_engine(url)
    found: dict[str, str] = {}
    queries = {
        "fhir_resources": "SELECT resource_type, id, version, deleted, institution_code, "
        "content FROM fhir_resources",
        "fhir_resource_versions": "SELECT resource_type, id, version, deleted, method, content "
        "FROM fhir_resource_versions",
    }
    for table in INDEX_TABLES:
        # Not the rows' copy of their resource's lastUpdated (the write's time: decisions
        # 0039, 0059), which differs from run to run.
        skip = ("row_id", "last_updated")
        columns = ", ".join(c.name for c in table.columns if c.name not in skip)
        queries[table.name] = f"SELECT {columns} FROM {table.name}"
    with engine.connect() as conn:
        for name, sql in queries.items():
            lines = sorted(repr(tuple(row)) for row in conn.execute(text(sql)))
            found[name] = (
                f"{len(lines)}:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
            )
        # The registry: which Patients share a master person, and how each is linked.
        persons: dict[Any, list[str]] = {}
        for row in conn.execute(
            text("SELECT master_id, institution_code, local_id, link_type FROM source_records")
        ):
            persons.setdefault(row[0], []).append(f"{row[1]}/{row[2]}/{row[3]}")
        groups = sorted(repr(sorted(v)) for v in persons.values())
        found["registry_persons"] = (
            f"{len(groups)}:" + hashlib.sha256("\n".join(groups).encode()).hexdigest()[:16]
        )
        reviews = conn.execute(text("SELECT count(*) FROM mpi_reviews")).scalar_one()
        found["registry_reviews"] = str(reviews)
    engine.dispose()
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--database",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/healthroam_bench_import",
    )
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/healthroam-bench-import"))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-digest", action="store_true", help="skip the stored-data digest")
    parser.add_argument("--json", type=Path, help="append the result as one JSON line")
    parser.add_argument("--label", default="", help="a name for this run in the output")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    args.work.mkdir(parents=True, exist_ok=True)

    generator = ClinicalGenerator(args.seed)
    data = args.work / f"data-{args.seed}-{args.people}"
    listing = data / "files.json"
    if not listing.exists():
        chunks = list(generator.patients(args.people, chunk_size=args.people))
        files, count, _ = write_stage(generator, chunks, data, first=True)
        listing.write_text(
            json.dumps({"count": count, "files": {k: str(v) for k, v in files.items()}})
        )
    meta = json.loads(listing.read_text())
    files = {k: Path(v) for k, v in meta["files"].items()}

    settings = Settings(
        database_url=args.database, data_dir=args.work / "data", token_ttl_seconds=3600
    )
    benchlib.recreate_database(args.database)
    subprocess.run(
        [sys.executable, "-m", "healthroam", "db", "upgrade"], env=env_for(settings), check=True
    )
    platform = build(settings)
    secrets: dict[str, tuple[str, str]] = {}
    for hospital in generator.hospitals:
        platform.institutions.add(
            code=hospital.code, name=hospital.name, kind="hospital",
            region=hospital.region_code, level=hospital.level,
        )  # fmt: skip
        made = platform.clients.add(institution_code=hospital.code, scopes="system/*.cruds")
        assert made.client_secret
        secrets[hospital.code] = (made.client.client_id, made.client_secret)
    platform.close()

    parsed = make_url(args.database)
    database = parsed.database or "" if parsed.get_backend_name() == "postgresql" else ""
    with server(settings, 1, args.work / "server.log") as (base, pid):
        clients = Clients(base, secrets)
        clients.headers(next(iter(secrets)))  # warm up
        before_server, before_db = cpu(pid, database)
        result: dict[str, Any] = bulk_import(clients, files, parallel=1)
        after_server, after_db = cpu(pid, database)
    server_cpu = benchlib.cpu_spent(before_server, after_server)
    main_cpu = after_server.get(pid, 0.0) - before_server.get(pid, 0.0)
    db_cpu = benchlib.cpu_spent(before_db, after_db)
    n = max(result["resources"], 1)
    result |= {
        "label": args.label,
        "people": args.people,
        "lines": meta["count"],
        "server_cpu_ms_per_resource": round(server_cpu / n * 1000, 3),
        "server_main_process_cpu_ms_per_resource": round(main_cpu / n * 1000, 3),
        "db_cpu_ms_per_resource": round(db_cpu / n * 1000, 3),
        "cpu_bound_rate_2_cores": round(2 / ((server_cpu + db_cpu) / n)),
        "load_average": Path("/proc/loadavg").read_text().split()[0],
        "utc": time.strftime("%H:%M:%S", time.gmtime()),
    }
    if not args.no_digest:
        result["digest"] = digest(args.database)
    print(json.dumps(result, indent=1))
    if args.json:
        with args.json.open("a") as out:
            out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
