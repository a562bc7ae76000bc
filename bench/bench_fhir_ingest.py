"""Transaction-Bundle ingest against a real server: resources/s and CPU per resource.

    PYTHONPATH=src .venv/bin/python bench/bench_fhir_ingest.py \\
        --template hr_bench_ingest_tpl --database hr_bench_ingest_run --bundles 300

The ingest step of ``bench_fhir_store.py`` on its own: one transaction Bundle per patient of
the synthetic province (``healthroam.synth.clinical.transaction_bundle``: ``urn:uuid:``
fullUrls, the Patient a conditional create on its MRN, registered in the registry), posted
by ``--concurrency`` threads to ``python -m healthroam serve`` on a fresh PostgreSQL
database. The template database (migrated, the 30 hospitals with one client each; their
secrets kept in ``--work``) is made once (or again with ``--new-template``); each run copies
it (``CREATE DATABASE ... TEMPLATE``), so that runs of two checkouts start from the same
data. The server is started with this process's ``PYTHONPATH``: point it at the checkout to
measure (the script itself may come from another one, as long as the schema is the same).

Reports resources/s (wall clock, on a shared machine only indicative), the server's and the
PostgreSQL backends' CPU per resource (from /proc) and the load averages at start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from bench_fhir_store import Clients, CpuMeter, dumps, post_all, server
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from healthroam.bootstrap import build
from healthroam.config import Settings
from healthroam.synth.clinical import ClinicalGenerator, transaction_bundle

import benchlib

ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def url_of(name: str) -> str:
    return make_url(ADMIN).set(database=name).render_as_string(hide_password=False)


def make_template(name: str, work: Path, seed: int) -> None:
    url = url_of(name)
    benchlib.recreate_database(url)
    benchlib.migrate(url)
    platform = build(Settings(database_url=url, data_dir=work / "data"))
    secrets: dict[str, tuple[str, str]] = {}
    for hospital in ClinicalGenerator(seed).hospitals:
        platform.institutions.add(
            code=hospital.code, name=hospital.name, kind="hospital",
            region=hospital.region_code, level=hospital.level,
        )  # fmt: skip
        made = platform.clients.add(institution_code=hospital.code, scopes="system/*.cruds")
        assert made.client_secret
        secrets[hospital.code] = (made.client.client_id, made.client_secret)
    platform.close()
    (work / "secrets.json").write_text(json.dumps(secrets))


def make_bundles(work: Path, seed: int, count: int) -> list[tuple[str, bytes, int]]:
    """The first ``count`` hospital patients' Bundles (hospital code, body, resources), kept
    in ``work`` for the next runs."""
    cache = work / f"bundles-{seed}-{count}.jsonl"
    if not cache.exists():
        generator = ClinicalGenerator(seed)
        lines = []
        for patient in next(generator.patients(count * 3, chunk_size=count * 3))[:count]:
            history = generator.history(patient)
            bundle = dumps(transaction_bundle(history))
            lines.append(json.dumps([patient.hospital.code, bundle, len(history)]))
        cache.write_text("\n".join(lines) + "\n")
    found = [json.loads(line) for line in cache.read_text().splitlines()]
    if len(found) < count:
        raise SystemExit(f"only {len(found)} hospital patients for {count} Bundles")
    return [(code, body.encode(), n) for code, body, n in found]


def copy_database(template: str, name: str) -> None:
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--template", default="hr_bench_ingest_tpl")
    parser.add_argument("--database", default="hr_bench_ingest_run")
    parser.add_argument("--new-template", action="store_true")
    parser.add_argument("--work", type=Path, default=Path("/tmp/healthroam-bench-ingest"))
    parser.add_argument("--bundles", type=int, default=300, help="measured Bundles")
    parser.add_argument("--warmup", type=int, default=20, help="Bundles posted first, unmeasured")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep", action="store_true", help="keep the run's database")
    parser.add_argument("--label", default="")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    args.work.mkdir(parents=True, exist_ok=True)
    if args.new_template or not (args.work / "secrets.json").exists():
        make_template(args.template, args.work, args.seed)
    secrets = {
        k: (v[0], v[1]) for k, v in json.loads((args.work / "secrets.json").read_text()).items()
    }
    bundles = make_bundles(args.work, args.seed, args.warmup + args.bundles)
    copy_database(args.template, args.database)
    url = url_of(args.database)
    settings = Settings(database_url=url, data_dir=args.work / "data", token_ttl_seconds=3600)
    load_start = os.getloadavg()
    try:
        with server(settings, args.workers, args.work / "server.log") as (base, pid):
            clients = Clients(base, secrets)
            post_all(clients, bundles[: args.warmup], args.concurrency)
            meter = CpuMeter(pid, url)
            before = meter.sample()
            result = post_all(clients, bundles[args.warmup :], args.concurrency)
            result |= meter.measure(before, result["resources"], args.workers)
    finally:
        if not args.keep:
            benchlib.drop_database(args.database)
    result["label"] = args.label
    result["pythonpath"] = os.environ.get("PYTHONPATH", "")
    result["load_start"] = [round(x, 1) for x in load_start]
    result["load_end"] = [round(x, 1) for x in os.getloadavg()]
    print(json.dumps(result))
    if args.json:
        with args.json.open("a") as out:
            out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
