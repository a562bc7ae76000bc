"""Registry benchmarks: bulk-loading a population feed, and real-time matching against it.

    .venv/bin/python bench/bench_registry.py --people 1000000 \\
        --database postgresql+psycopg://postgres@127.0.0.1:5432/healthroam_bench --samples 2000

Generates a synthetic province (healthroam synth) under --work, bulk-loads its population base
(`BulkLoader`, the path of `healthroam registry load --bulk`), then matches --samples hospital
records that were not loaded, one at a time: the matching engine alone (normalise, blocking
index lookup, scoring; `RegistryService.rank`) and a full registration (the same plus the
writes and the commit). Prints latencies (p50/p95/p99), throughput and peak memory as JSON.

The load also reports CPU seconds per 1,000 rows: the loader (main process and its worker
processes) and PostgreSQL (the backends connected to the bench database, sampled from /proc,
so only when the server runs on this machine). On a shared machine these are steadier than
rows/s. `rows_per_s_by_tenth` is the rows phase's rate over each tenth of the file (from the
committed chunks; fewer entries when the file has fewer than ten chunks): a load that slows
down as the registry grows shows it there.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from healthroam.bootstrap import build
from healthroam.config import Settings
from healthroam.db.migrate import upgrade
from healthroam.registry.bulk import BulkLoader
from healthroam.registry.loader import Mapping
from healthroam.registry.normalize import normalize_record
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet
from healthroam.synth.writer import write_province

import benchlib


class ServerCpu:
    """CPU seconds of the PostgreSQL backends serving one database, sampled while running."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.database = parsed.database or ""
        self.admin = create_engine(parsed.set(database="postgres"))
        self.seen: dict[int, float] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.admin.connect() as conn:
            while not self.done.is_set():
                pids = benchlib.backend_pids(self.database, conn)
                for pid, used in benchlib.cpu_of(pids).items():
                    self.seen[pid] = max(self.seen.get(pid, 0.0), used)
                conn.rollback()
                self.done.wait(0.25)

    def __enter__(self) -> ServerCpu:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()
        self.admin.dispose()

    @property
    def seconds(self) -> float | None:
        return round(sum(self.seen.values()), 1) if self.seen else None


class RateMarks:
    """When each committed chunk's rows were done: the rows phase's rate over each tenth of
    the file, to see whether a load slows down as the registry grows."""

    def __init__(self, started: float, rows: int) -> None:
        self.started, self.rows = started, rows
        self.marks: list[tuple[float, int]] = [(started, 0)]

    def chunk(self, size: int) -> None:
        self.marks.append((time.perf_counter(), self.marks[-1][1] + size))

    def rows_phase_seconds(self) -> float:
        return round(self.marks[-1][0] - self.started, 1)

    def by_tenth(self) -> list[int]:
        rates: list[int] = []
        last_time, last_rows = self.marks[0]
        for moment, done in self.marks[1:]:
            if done >= self.rows * (len(rates) + 1) / 10 and moment > last_time:
                rates.append(round((done - last_rows) / (moment - last_time)))
                last_time, last_rows = moment, done
        return rates


# What a load stored, table by table, for --digest: every column but the timestamps and the
# master index ID's value (random), in a fixed order. Two loads of one file store the same
# registry exactly when these agree (JSONB documents compare as PostgreSQL stores them).
DIGESTS = {
    "source_records": (
        "id, institution_code, id_system, local_id, master_id, link_type, data, normalized,"
        " content_hash, fhir_patient_id",
        "id",
    ),
    "master_persons": (
        "id, status, merged_into, golden, name, birth_date, sex, version, length(master_index_id)",
        "id",
    ),
    "mpi_blocking_keys": ("key, source_id", "source_id, key"),
    "mpi_events": (
        "seq, position, event_type, master_id, other_master_id, source_id, actor_institution,"
        " actor_user, actor_client, reason, institutions, detail",
        "seq",
    ),
    "mpi_event_recipients": ("institution_code, seq", "seq, institution_code"),
    "mpi_name_counts": ("name, count", "name"),
}


def table_digests(url: str) -> dict[str, str]:
    """md5 over each registry table's rows (see ``DIGESTS``), with the row count."""
    engine = create_engine(url)
    found: dict[str, str] = {}
    with engine.connect() as conn:
        for table, (columns, order) in DIGESTS.items():
            digest, count = conn.exec_driver_sql(
                f"SELECT md5(string_agg(md5(ROW({columns})::text), '' ORDER BY {order})),"
                f" count(*) FROM {table}"
            ).one()
            found[table] = f"{digest} {count}"
    engine.dispose()
    return found


def process_cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

    return {
        "p50_ms": at(0.50),
        "p95_ms": at(0.95),
        "p99_ms": at(0.99),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
    }


def _sample_rows(files: list[Path], count: int, seed: int) -> list[tuple[str, dict[str, object]]]:
    """``count`` rows drawn at random (without replacement) from all the files, in random
    order, reading one file at a time: a 10-million-person province's hospital files hold
    about 9.5 million rows, too many to hold as Python objects."""
    sizes = [pq.ParquetFile(path).metadata.num_rows for path in files]
    rng = random.Random(seed)
    chosen = rng.sample(range(sum(sizes)), min(count, sum(sizes)))
    order = {index: place for place, index in enumerate(chosen)}
    picked: list[tuple[int, str, dict[str, object]]] = []
    start = 0
    for path, size in zip(files, sizes, strict=True):
        wanted = sorted(i - start for i in chosen if start <= i < start + size)
        if wanted:
            rows = pq.read_table(path).take(wanted).to_pylist()
            code = path.stem.removeprefix("hospital-")
            for i, row in zip(wanted, rows, strict=True):
                picked.append((order[start + i], code, row))
        start += size
    return [(code, row) for _, code, row in sorted(picked, key=lambda item: item[0])]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--database", required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/healthroam-bench-registry"))
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--reuse", action="store_true", help="Keep an already loaded database.")
    parser.add_argument("--workers", type=int, default=2, help="Bulk-load worker processes.")
    parser.add_argument("--load-only", action="store_true", help="Measure the load only.")
    parser.add_argument(
        "--initial", action="store_true", help="Load as an initial load (decision 0038)."
    )
    parser.add_argument(
        "--digest",
        action="store_true",
        help="After the load (not timed), digest what it stored, table by table (PostgreSQL).",
    )
    args = parser.parse_args()

    province = args.work / f"province-{args.people}"
    result: dict[str, object] = {
        "people": args.people,
        "database": make_url(args.database).get_backend_name(),
    }
    if not (province / "manifest.json").exists():
        started = time.perf_counter()
        write_province(province, args.people, "parquet", seed=args.seed)
        result["synth_s"] = round(time.perf_counter() - started, 1)

    settings = Settings(database_url=args.database, data_dir=args.work / "data")
    population = province / "sources" / "population.parquet"
    rows = pq.ParquetFile(population).metadata.num_rows
    if not args.reuse:
        benchlib.recreate_database(args.database)
    platform = build(settings)
    upgrade(platform.db.engine)
    if not args.reuse:
        platform.institutions.add(code="POP", name="人口库", kind="agency", region="460000")
        postgres = make_url(args.database).get_backend_name() == "postgresql"
        server = ServerCpu(args.database) if postgres else None
        if server:
            server.__enter__()
        cpu = process_cpu()
        load_average = os.getloadavg()[0]
        started = time.perf_counter()
        marks = RateMarks(started, rows)
        summary = BulkLoader(platform.db, platform.registry, workers=args.workers).load(
            population,
            source="POP",
            mapping=Mapping.load("population"),
            reject_file=args.work / "rejects.csv",
            initial=args.initial,
            progress=marks.chunk,
        )
        elapsed = time.perf_counter() - started
        cpu = process_cpu() - cpu
        if server:
            server.__exit__()
        server_cpu = server.seconds if server else None
        result["load"] = {
            "rows": rows,
            "seconds": round(elapsed, 1),
            "rows_per_s": round(rows / elapsed),
            "loader_cpu_s": round(cpu, 1),
            "loader_cpu_s_per_1000_rows": round(cpu / rows * 1000, 3),
            "postgres_cpu_s": server_cpu,
            "postgres_cpu_s_per_1000_rows": (
                round(server_cpu / rows * 1000, 3) if server_cpu is not None else None
            ),
            "load_average_1min": [round(load_average, 1), round(os.getloadavg()[0], 1)],
            "rows_phase_s": marks.rows_phase_seconds(),
            "rows_per_s_by_tenth": marks.by_tenth(),
            **summary.as_dict(),
        }
        if args.digest and postgres:
            result["digests"] = table_digests(args.database)
        if args.load_only:
            platform.close()
            print(json.dumps(result, indent=2))
            return

    # Hospital records: the persons are (mostly) in the registry under other keys.
    hospital_files = sorted((province / "sources").glob("hospital-*.parquet"))
    mapping = Mapping.load("hospital")
    candidates = _sample_rows(hospital_files, args.samples * 2, args.seed)
    codes = {code for code, _ in candidates}
    for code in codes:
        try:
            platform.institutions.add(
                code=code, name=code, kind="hospital", region="460106", level=3
            )
        except Exception:
            continue
    samples = []
    for code, row in candidates:
        try:
            record = mapping.record(row, code)
            samples.append((record, normalize_record(record)))
        except Exception:
            continue
        if len(samples) >= args.samples:
            break
    for _record, normalized in samples[:50]:  # warm caches and connections
        platform.registry.rank(normalized)
    timings = []
    linked = 0
    for record, _ in samples:
        started = time.perf_counter()
        ranked = platform.registry.rank(normalize_record(record))
        timings.append(time.perf_counter() - started)
        linked += bool(ranked and ranked[0].score.weight >= platform.registry.model.thresholds.link)
    result["match"] = {
        "samples": len(samples),
        **percentiles(timings),
        "share_with_link_candidate": round(linked / len(samples), 4),
    }
    who = Principal("bench", "POP", ScopeSet.parse("system/Patient.cu"))
    timings = []
    for record, _ in samples:
        started = time.perf_counter()
        platform.registry.register(who, record)
        timings.append(time.perf_counter() - started)
    result["register"] = {"samples": len(samples), **percentiles(timings)}
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    platform.close()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
