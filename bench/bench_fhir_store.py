"""FHIR store benchmarks against a real server: ingest, $import, read, search, $everything.

    .venv/bin/python bench/bench_fhir_store.py \\
        --database postgresql+psycopg://postgres@127.0.0.1:5432/healthroam_bench_fhir \\
        --sizes 2000,20000 --duration 10

Data comes from the synthetic province's clinical histories (`healthroam.synth.clinical`):
people in chunks of the first size, so the first stage's people are the same at every size.
The steps, in order:

1. a fresh database, migrated with `healthroam db upgrade`; the 30 hospitals, one client each
   (`system/*.cruds`) and a reader client; `python -m healthroam serve` (or uvicorn with
   `--workers N`) on a free port;
2. for each size: `POST /fhir/$import` of every hospital's NDJSON for the people not loaded yet
   (one at a time: two at once can deadlock on the registry's name counts) -> resources/s;
   then read and search load with `wrk` (C, one
   thread, `--connections` open connections, `--duration` seconds per run): reads of random
   Observations, and three typical searches, each alone (p50/p99) and mixed (req/s);
3. after the first size: transaction-Bundle ingest (one Bundle per patient, the Patient a
   conditional create matched in the registry, every search index written) -> resources/s;
4. at the end: one person registered at 5 hospitals (same national ID, so the registry links
   the five Patients) with about 1,000 resources; `GET /fhir/Patient/<master id>/$everything`
   one at a time -> p50/p99.

Prints a table and writes the figures as JSON (`--json`). `wrk` must be installed
(`apt-get install wrk`); the bench is not part of CI.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from healthroam.bootstrap import build
from healthroam.config import Settings
from healthroam.errors import InvalidInput
from healthroam.registry import idnumber
from healthroam.synth.clinical import (
    ClinicalGenerator,
    HospitalPatient,
    Resource,
    organization,
    transaction_bundle,
)

import benchlib

NATIONAL_ID = "urn:oid:2.16.156.10011.1.3"
WRK_SCRIPT = r"""
local paths = {}
local header = os.getenv("BENCH_AUTH")
for line in io.lines(os.getenv("BENCH_PATHS")) do paths[#paths + 1] = line end
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", paths[(n % #paths) + 1], {["Authorization"] = header})
end
done = function(summary, latency, requests)
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "errors": %d, "non2xx": %d, ' ..
    '"p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, "mean_ms": %.3f}\n',
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout, summary.errors.status,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.mean / 1000))
end
"""

# Targets (2 cores, PostgreSQL) and the Health Samurai anchors (8 vCPU): Aidbox, HAPI, Medplum.
TARGETS: dict[str, tuple[float, tuple[float, float, float] | None]] = {
    "ingest_resources_per_s": (3000, (2678, 2214, 764)),
    "import_resources_per_s": (20000, None),
    "read_req_per_s": (5000, (5212, 3058, 1420)),
    "search_req_per_s": (1500, (3404, 1005, 1796)),
}


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    return benchlib.server_env(
        HEALTHROAM_DATABASE_URL=settings.database_url,
        HEALTHROAM_DATA_DIR=str(settings.data_dir),
        HEALTHROAM_TOKEN_SIGNING_KEY_FILE=str(settings.signing_key_path),
        HEALTHROAM_LOG_LEVEL="WARNING",
        **extra,
    )


@contextmanager
def server(settings: Settings, workers: int, log: Path) -> Iterator[tuple[str, int]]:
    port = benchlib.free_port()
    base = f"http://127.0.0.1:{port}"
    # Always the number asked for: on PostgreSQL `serve` would otherwise start one process
    # per CPU (decision 0048).
    command = [sys.executable, "-m", "healthroam", "serve", "--port", str(port),
               "--workers", str(workers)]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(
            command,
            env=env_for(settings, HEALTHROAM_PUBLIC_BASE_URL=base),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            benchlib.wait_ready(f"{base}/readyz", process, log=log)
            yield base, process.pid
        finally:
            benchlib.stop_process(process, seconds=20)


class CpuMeter:
    """CPU seconds used by the server (and its worker processes) and by the database's
    backends for our database: the machine is shared, so wall-clock rates understate what
    two dedicated cores would do; CPU per request does not depend on the others' load."""

    def __init__(self, server_pid: int, database_url: str) -> None:
        self.server_pid = server_pid
        parsed = make_url(database_url)
        self.postgres = parsed.get_backend_name() == "postgresql"
        self.database = parsed.database or ""
        self.admin = (
            create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
            if self.postgres
            else None
        )

    def sample(self) -> dict[int, float]:
        """CPU seconds so far per process: the server (negative pid) and each backend."""
        server = benchlib.cpu_of(benchlib.with_children(self.server_pid))
        found = {-p: cpu for p, cpu in server.items()}
        if self.admin is not None:
            with self.admin.connect() as conn:
                found |= benchlib.cpu_of(benchlib.backend_pids(self.database, conn))
        return found

    def measure(self, before: dict[int, float], work: int, workers: int) -> dict[str, Any]:
        after = self.sample()
        # Backends that ended meanwhile are missed (the pool keeps its connections open).
        spent = {p: cpu - before.get(p, 0.0) for p, cpu in after.items()}
        server = sum(v for p, v in spent.items() if p < 0)
        database = sum(v for p, v in spent.items() if p > 0)
        if work <= 0 or server <= 0:
            return {}
        per = (server + database) / work
        # On two dedicated cores: the server's Python is bound to `workers` cores at most,
        # server and database together to two.
        capacity = min(min(workers, 2) / (server / work), 2 / per)
        return {
            "server_cpu_ms_per_unit": round(server / work * 1000, 3),
            "db_cpu_ms_per_unit": round(database / work * 1000, 3),
            "est_rate_2_dedicated_cores": round(capacity),
        }


class Clients:
    """One API client per hospital (and a reader); fresh tokens on demand."""

    def __init__(self, base: str, secrets: dict[str, tuple[str, str]]) -> None:
        self.base, self.secrets = base, secrets

    def headers(self, code: str) -> dict[str, str]:
        client_id, secret = self.secrets[code]
        answer = httpx.post(
            f"{self.base}/auth/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, secret),
            timeout=30,
        )
        answer.raise_for_status()
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def dumps(resource: Resource) -> str:
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":"))


def write_stage(
    generator: ClinicalGenerator, chunks: list[list[HospitalPatient]], folder: Path, first: bool
) -> tuple[dict[str, Path], int, list[str]]:
    """NDJSON per hospital for these chunks; returns files, resource count, Observation ids."""
    folder.mkdir(parents=True, exist_ok=True)
    handles: dict[str, Any] = {}
    count = 0
    observations: list[str] = []
    for chunk in chunks:
        for patient in chunk:
            code = patient.hospital.code
            if code not in handles:
                handles[code] = (folder / f"{code}.ndjson").open("w", encoding="utf-8")
                if first:
                    handles[code].write(dumps(organization(patient.hospital)) + "\n")
                    count += 1
            history = generator.history(patient)
            count += len(history)
            observations.extend(r["id"] for r in history if r["resourceType"] == "Observation")
            handles[code].write("".join(dumps(r) + "\n" for r in history))
    for handle in handles.values():
        handle.close()
    return {code: folder / f"{code}.ndjson" for code in handles}, count, observations


def bulk_import(clients: Clients, files: dict[str, Path], parallel: int) -> dict[str, Any]:
    def one(code: str) -> tuple[str, float]:
        headers = clients.headers(code) | {"Content-Type": "application/fhir+ndjson"}
        started = time.perf_counter()
        answer = httpx.post(
            f"{clients.base}/fhir/$import",
            content=files[code].read_bytes(),
            headers=headers,
            timeout=3600,
        )
        answer.raise_for_status()
        return answer.json()["issue"][0]["diagnostics"], time.perf_counter() - started

    started = time.perf_counter()
    created = failed = 0
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        for summary, _ in pool.map(one, sorted(files)):
            parts = dict(p.strip().split(" ") for p in summary.split(","))
            created += int(parts["created"]) + int(parts["updated"])
            failed += int(parts["failed"])
    seconds = time.perf_counter() - started
    return {
        "resources": created,
        "failed": failed,
        "seconds": round(seconds, 1),
        "resources_per_s": round(created / seconds),
    }


def ingest(
    clients: Clients,
    generator: ClinicalGenerator,
    patients: list[HospitalPatient],
    concurrency: int,
) -> dict[str, Any]:
    bundles: list[tuple[str, bytes, int]] = []
    for patient in patients:
        history = generator.history(patient)
        bundle = transaction_bundle(history)
        bundles.append((patient.hospital.code, dumps(bundle).encode(), len(history)))
    return post_all(clients, bundles, concurrency)


def post_all(
    clients: Clients, bundles: list[tuple[str, bytes, int]], concurrency: int
) -> dict[str, Any]:
    # Tokens of the server's default lifetime: a new one after two minutes (a slow run on a
    # loaded host outlives the first).
    tokens: dict[str, tuple[float, dict[str, str]]] = {}

    def auth(code: str) -> dict[str, str]:
        if code not in tokens or time.monotonic() - tokens[code][0] > 120:
            tokens[code] = (time.monotonic(), clients.headers(code))
        return tokens[code][1]

    for code in {b[0] for b in bundles}:
        auth(code)
    timings: list[float] = []
    failures: list[str] = []

    def send(item: tuple[str, bytes, int]) -> int:
        code, body, n = item
        headers = auth(code)
        started = time.perf_counter()
        answer = httpx.post(
            f"{clients.base}/fhir",
            content=body,
            headers=headers | {"Content-Type": "application/fhir+json",
                               "Prefer": "return=minimal"},
            timeout=300,
        )  # fmt: skip
        timings.append(time.perf_counter() - started)
        if answer.status_code != 200:
            failures.append(answer.text[:300])
            return 0
        return n

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        stored = sum(pool.map(send, bundles))
    seconds = time.perf_counter() - started
    return {
        "bundles": len(bundles),
        "resources": stored,
        "failed_bundles": len(failures),
        "first_failure": failures[0] if failures else None,
        "seconds": round(seconds, 1),
        "resources_per_s": round(stored / seconds) if seconds else 0,
        "bundle_p50_ms": round(statistics.median(timings) * 1000, 1) if timings else None,
    }


def wrk(
    base: str, auth: dict[str, str], paths: list[str], work: Path, duration: int, connections: int
) -> dict[str, Any]:
    script = work / "paths.lua"
    script.write_text(WRK_SCRIPT)
    with tempfile.NamedTemporaryFile("w", dir=work, suffix=".txt", delete=False) as listing:
        listing.write("\n".join(paths) + "\n")
    env = dict(os.environ, BENCH_PATHS=listing.name, BENCH_AUTH=auth["Authorization"])
    result = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "-s", str(script),
         base],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    line = next(x for x in result.stdout.splitlines() if x.startswith("{"))
    figures: dict[str, Any] = json.loads(line)
    figures["req_per_s"] = round(figures["requests"] / figures["seconds"])
    os.unlink(listing.name)
    return figures


def heavy_person(generator: ClinicalGenerator, pool: list[HospitalPatient]) -> list[Resource]:
    """One person registered at 5 hospitals (same national ID) with about 1,000 resources."""

    def valid(number: str | None) -> bool:
        try:
            idnumber.parse(number or "")
        except InvalidInput:
            return False
        return True

    person = next(p for p in pool if p.id_type == "01" and valid(p.id_number))
    hospitals = [h for h in generator.hospitals if h.level == 3][:5]
    visits = 5
    while True:
        resources: list[Resource] = []
        for k, hospital in enumerate(hospitals):
            record = replace(
                person, hospital=hospital, mrn=f"E{k}{person.mrn}",
                registered_on=date(2015, 1, 1), death_date=None,
            )  # fmt: skip
            resources.extend(generator.history(record, visits=visits))
        if len(resources) >= 1000:
            return resources
        visits += 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--database", default="postgresql+psycopg://postgres@127.0.0.1:5432/healthroam_bench_fhir"
    )
    parser.add_argument("--sizes", default="2000,20000", help="people, comma-separated, growing")
    parser.add_argument("--work", type=Path, default=Path("/tmp/healthroam-bench-fhir"))
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--ingest-patients", type=int, default=300)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--latency-connections",
        type=int,
        default=2,
        help="also run each query with this few connections (latency without queueing; 0: no)",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the database and the data loaded by an earlier run with the same --work "
        "(its state.json): no fresh database, no ingest, only the stages not yet loaded",
    )
    args = parser.parse_args()

    # A terminated bench still stops its server (the `finally` blocks run).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sizes = [int(s) for s in args.sizes.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    result: dict[str, Any] = {
        "database": make_url(args.database).get_backend_name(),
        "workers": args.workers,
        "connections": args.connections,
        "duration_s": args.duration,
        "stages": [],
    }
    settings = Settings(
        database_url=args.database,
        data_dir=args.work / "data",
        token_ttl_seconds=3600,
    )
    generator = ClinicalGenerator(args.seed)
    state_file = args.work / "state.json"
    state: dict[str, Any] = json.loads(state_file.read_text()) if args.reuse else {}
    if state:
        subprocess.run(
            [sys.executable, "-m", "healthroam", "db", "upgrade"], env=env_for(settings), check=True
        )
        run_stages(args, settings, generator, sizes, rng, result, state, state_file)
        return
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
    platform.institutions.add(code="RHIN", name="全民健康信息平台", kind="agency", region="460000")
    reader = platform.clients.add(institution_code="RHIN", scopes="system/*.rs")
    assert reader.client_secret
    secrets["reader"] = (reader.client.client_id, reader.client_secret)
    platform.close()
    state = {"secrets": secrets, "step": sizes[0], "loaded_people": 0, "observations": [],
             "patient_ids": []}  # fmt: skip
    run_stages(args, settings, generator, sizes, rng, result, state, state_file)


def run_stages(
    args: argparse.Namespace,
    settings: Settings,
    generator: ClinicalGenerator,
    sizes: list[int],
    rng: random.Random,
    result: dict[str, Any],
    state: dict[str, Any],
    state_file: Path,
) -> None:
    secrets = {k: (v[0], v[1]) for k, v in state["secrets"].items()}
    step = state["step"]
    chunks = generator.patients(max(sizes[-1], state["loaded_people"]) + 2 * step, chunk_size=step)
    loaded_people = state["loaded_people"]
    for _ in range(loaded_people // step):
        next(chunks)
    observations: list[str] = state["observations"]
    patient_ids: list[str] = state["patient_ids"]
    with server(settings, args.workers, args.work / "server.log") as (base, pid):
        clients = Clients(base, secrets)
        meter = CpuMeter(pid, args.database)
        for number, size in enumerate(sizes):
            stage: dict[str, Any] = {"people": size}
            these = [next(chunks) for _ in range(max(0, size - loaded_people) // step)]
            started = time.perf_counter()
            files, count, obs = write_stage(
                generator, these, args.work / f"stage-{size}", first=number == 0
            )
            stage["generate_s"] = round(time.perf_counter() - started, 1)
            observations.extend(obs)
            patient_ids.extend(p.patient_id for chunk in these for p in chunk)
            if these:
                print(f"[{size}] importing {count} resources", flush=True)
                before = meter.sample()
                stage["import"] = bulk_import(clients, files, parallel=1)
                stage["import"] |= meter.measure(before, stage["import"]["resources"], args.workers)
                loaded_people = max(loaded_people, size)
                state["loaded_people"] = loaded_people
                state_file.write_text(json.dumps(state))
            stage["patients"] = len(patient_ids)
            auth = clients.headers("reader")
            paths = benchlib.fhir_search_paths(observations, patient_ids, rng)
            stage["queries"] = {}
            for name, listing in paths.items():
                print(f"[{size}] wrk {name}", flush=True)
                before = meter.sample()
                figures = wrk(base, auth, listing, args.work, args.duration, args.connections)
                stage["queries"][name] = figures | meter.measure(
                    before, figures["requests"], args.workers
                )
                if args.latency_connections > 0:
                    low = wrk(
                        base, auth, listing, args.work, args.duration, args.latency_connections
                    )
                    stage["queries"][name]["low_concurrency"] = {
                        k: low[k] for k in ("req_per_s", "p50_ms", "p90_ms", "p99_ms", "non2xx")
                    }
            mixed = [p for name, listing in paths.items() if "?" in name for p in listing]
            rng.shuffle(mixed)
            before = meter.sample()
            figures = wrk(base, auth, mixed, args.work, args.duration, args.connections)
            stage["search_mixed"] = figures | meter.measure(
                before, figures["requests"], args.workers
            )
            if number == 0 and "ingested" not in state:
                state["ingested"] = True
                print("ingesting transaction bundles", flush=True)
                extra = [p for p in next(chunks)][: args.ingest_patients]
                before = meter.sample()
                result["ingest"] = ingest(clients, generator, extra, concurrency=4)
                result["ingest"] |= meter.measure(
                    before, result["ingest"]["resources"], args.workers
                )
            result["stages"].append(stage)
            print(json.dumps(stage, indent=1), flush=True)

        print("$everything", flush=True)
        auth = clients.headers("reader")
        if "everything" not in state:
            pool = [p for chunk in [next(chunks)] for p in chunk]
            resources = heavy_person(generator, pool)
            by_hospital: dict[str, list[str]] = {}
            for r in resources:
                code = r["id"].split("-", 1)[0]
                by_hospital.setdefault(code, []).append(dumps(r))
            files = {}
            for code, lines in by_hospital.items():
                files[code] = args.work / f"heavy-{code}.ndjson"
                files[code].write_text("\n".join(lines) + "\n")
            imported = bulk_import(clients, files, parallel=1)
            national = next(
                i["value"] for i in resources[0]["identifier"] if i["system"] == NATIONAL_ID
            )
            found = httpx.get(
                f"{base}/fhir/Patient", params={"identifier": f"{NATIONAL_ID}|{national}"},
                headers=auth, timeout=30,
            ).json()  # fmt: skip
            state["everything"] = {
                "master": found["entry"][0]["resource"]["id"],
                "resources": imported["resources"],
                "hospitals": len(files),
            }
            state_file.write_text(json.dumps(state))
        master = state["everything"]["master"]
        timings = []
        total = None
        with httpx.Client(base_url=base, headers=auth, timeout=60) as http:
            for k in range(40):
                started = time.perf_counter()
                answer = http.get(f"/fhir/Patient/{master}/$everything", params={"_count": 5000})
                elapsed = time.perf_counter() - started
                answer.raise_for_status()
                if k >= 5:
                    timings.append(elapsed)
                if total is None:
                    total = answer.json()["total"]
        timings.sort()
        result["everything"] = {
            "resources_loaded": state["everything"]["resources"],
            "hospitals": state["everything"]["hospitals"],
            "bundle_total": total,
            "p50_ms": round(timings[len(timings) // 2] * 1000, 1),
            "p99_ms": round(timings[-1] * 1000, 1),
        }
    print(json.dumps(result, indent=1))
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


def _row(name: str, figures: dict[str, Any], value: str, target: str) -> list[str]:
    estimate = figures.get("est_rate_2_dedicated_cores")
    return [name, value, f"{estimate:,}" if estimate else "-", target]


def report(result: dict[str, Any]) -> None:
    rows = [["measure", "measured (wall)", "est. 2 free cores", "target"]]
    if "ingest" in result:
        ingest = result["ingest"]
        rows.append(_row("transaction-bundle ingest, resources/s", ingest,
                         f"{ingest['resources_per_s']:,}", ">= 3,000"))  # fmt: skip
    for stage in result["stages"]:
        people = f"{stage['people']:,} people"
        if "import" in stage:
            imported = stage["import"]
            rows.append(_row(f"$import, resources/s ({people})", imported,
                             f"{imported['resources_per_s']:,}", ">= 20,000"))  # fmt: skip
        for name, f in [*stage["queries"].items(), ("search mixed", stage["search_mixed"])]:
            value = f"{f['req_per_s']:,} req/s, {f['p50_ms']:.1f}/{f['p99_ms']:.1f} ms"
            if "low_concurrency" in f:
                low = f["low_concurrency"]
                value += f"; low conc. {low['p50_ms']:.1f}/{low['p99_ms']:.1f} ms"
            target = ">= 5,000 req/s" if name.startswith("read") else "p50 <= 10, p99 <= 50"
            if name == "search mixed":
                target = ">= 1,500 req/s"
            rows.append(_row(f"{name} ({people})", f, value, target))
    everything = result["everything"]
    rows.append(["$everything p50/p99 ms", f"{everything['p50_ms']}/{everything['p99_ms']}",
                 "-", "p50 <= 50"])  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)))


if __name__ == "__main__":
    main()
