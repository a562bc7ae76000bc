"""HL7 v2 gateway without sockets (issue 6): SQL statements and CPU per message, by type.

The simulator's messages (`healthroam simulate hospitals`: per visit an ADT^A04, an ORM^O01 and
its ORU^R01, for some visits an A01, A08 and A03; 20 hospitals, a shared pool of people) go
through the gateway's real path - `GatewayService.apply_batch` with the platform dispatcher
(FHIR mapping, registry, recognition alerts, message log) - in group-commit batches, without
MLLP. Statements and CPU time per message are the figures least moved by other load on the
machine; wall time is printed too.

Run: PYTHONPATH=src .venv/bin/python bench/bench_hl7_statements.py --visits 300 [--sqlite]
    [--warmup 20] [--digest]
Needs PostgreSQL (HEALTHROAM_TEST_POSTGRES_URL) unless --sqlite; a fresh database is created
and dropped. Prints a Markdown table. ``--warmup N`` applies the first N visits' messages before
the measured window (the one-time costs of a process - search parameters compiled, the pinyin
dictionary loaded - then fall outside it; a gateway pays them once per process). ``--digest``
prints a digest per table of what was stored (resources, versions, search index, message log,
audit trail, registry), with the random master ids, the clock's values and the ACKs' control ids
left out, so two code versions can be compared on the same input: run it with ``PYTHONPATH``
pointing at each.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import random
import re
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text

from healthroam.bootstrap import build
from healthroam.config import Settings
from healthroam.exchange.hl7.handlers import platform_dispatcher
from healthroam.exchange.hl7.service import GatewayService, Outcome
from healthroam.exchange.simulator import MessageFactory, hospitals, people, setup_senders

import benchlib


def simulated(visits: int, count: int, seed: int) -> list[tuple[str, bytes]]:
    """(label, encoded message) in the order a round-robin of hospitals would send them."""
    population = people(seed, 2_000)
    factories = [
        (MessageFactory(h, random.Random(seed * 1_000 + n)), h)
        for n, h in enumerate(hospitals(count))
    ]
    rng = random.Random(seed)
    clock = datetime(2026, 11, 1, 8, tzinfo=UTC)
    out: list[tuple[str, bytes]] = []
    for v in range(visits):
        factory, hospital = factories[v % len(factories)]
        clock += timedelta(minutes=rng.randint(1, 5))
        person = population[rng.randrange(len(population))]
        codec = "gb18030" if hospital.charset.startswith("GB") else "utf-8"
        for label, er7 in factory.visit(person, clock):
            out.append((label, (er7 + "\r").encode(codec)))
    return out


def run(
    url: str,
    data_dir: Path,
    visits: int,
    batch: int,
    profile: Path | None = None,
    database: str = "",
    warmup: int = 0,
) -> dict[str, Any]:
    settings = Settings(
        database_url=url,
        data_dir=data_dir,
        token_signing_key_file=data_dir / "signing.pem",
        audit_seal_interval_ms=0,
    )
    benchlib.migrate(url)
    with build(settings) as platform:
        setup_senders(platform, 20)
        service = GatewayService(
            platform.db,
            platform_dispatcher(platform.records, platform.registry, platform.recognition),
        )
        messages = simulated(visits, 20, seed=2026)
        early = len(simulated(warmup, 20, seed=2026)) if warmup else 0  # the first visits'
        for start in range(0, early, batch):
            jobs = [service.prepare(raw, "bench") for _, raw in messages[start:early][:batch]]
            with platform.db.transaction() as conn:
                service.apply_batch(conn, jobs, savepoints=False)
        warm, messages = messages[:early], messages[early:]
        statements = [0]

        def count(*_args: object) -> None:
            statements[0] += 1

        event.listen(platform.db.engine, "before_cursor_execute", count)
        per_type: dict[str, list[int]] = defaultdict(list)
        cpu_type: dict[str, list[float]] = defaultdict(list)
        handler = service.handler

        def counted(conn: Any, context: Any, message: Any) -> Any:
            before, started = statements[0], time.process_time()
            try:
                return handler(conn, context, message)
            finally:
                label = f"{context.message_type}^{context.trigger_event}"
                per_type[label].append(statements[0] - before)
                cpu_type[label].append(time.process_time() - started)

        service.handler = counted
        codes: dict[str, int] = defaultdict(int)
        first = statements[0]
        # CPU time, not wall time: waits for the server are not this process's work
        profiler = cProfile.Profile(time.process_time) if profile else None
        if profiler is not None:
            profiler.enable()
        with platform.db.engine.connect() as probe:  # warm the pool; find its backends
            pids = benchlib.backend_pids(database, probe)
        server0 = benchlib.cpu_of(pids)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for start in range(0, len(messages), batch):
            chunk = messages[start : start + batch]
            jobs = [service.prepare(raw, "bench") for _, raw in chunk]
            with platform.db.transaction() as conn:
                results, _view = service.apply_batch(conn, jobs, savepoints=False)
            for result in results:
                codes[result.code.value if isinstance(result, Outcome) else "none"] += 1
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        with platform.db.engine.connect() as probe:  # backends opened meanwhile count in full
            pids = sorted({*pids, *benchlib.backend_pids(database, probe)})
        server = benchlib.cpu_spent(server0, benchlib.cpu_of(pids))
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(profile))
        total = statements[0] - first
    return {
        "warmup": len(warm),
        "messages": len(messages),
        "cpu_ms": cpu * 1000 / len(messages),
        "server_ms": server * 1000 / len(messages),
        "wall_ms": wall * 1000 / len(messages),
        "statements": total / len(messages),
        "codes": dict(codes),
        "per_type": {k: sum(v) / len(v) for k, v in sorted(per_type.items())},
        "cpu_type": {k: sum(v) * 1000 / len(v) for k, v in sorted(cpu_type.items())},
    }


def digest(url: str) -> dict[str, str]:
    """A digest per table of what the run stored (order-independent). Left out: the registry's
    random master ids and master index ids (replaced by a placeholder wherever they appear),
    the clock's values (when a row was written or received, the ACK's MSH-7), the ACKs' random
    control ids, the audit chain's hashes and sequence numbers, surrogate row ids."""
    skip = {"row_id", "seq", "prev_hash", "hash", "recorded_at", "received_at", "occurred_at"}
    skip |= {"created_at", "updated_at", "last_updated", "master_id", "merged_into"}
    skip |= {"since", "until"}  # a care relationship runs from the clock's now
    serial = {"master_persons", "source_records", "mpi_reviews", "care_relationships"}
    tables = [
        "fhir_resources", "fhir_resource_versions", "fhir_idx_token", "fhir_idx_string",
        "fhir_idx_date", "fhir_idx_reference", "fhir_idx_quantity", "fhir_idx_uri",
        "fhir_idx_number", "fhir_idx_composite", "fhir_idx_text", "hl7_messages",
        "hl7_rejections", "audit_events", "audit_inbox", "master_persons", "source_records",
        "mpi_blocking_keys", "mpi_name_counts", "mpi_reviews", "mpi_events",
        "recognition_alerts", "care_relationships",
    ]  # fmt: skip
    # Rows whose meaning is in generated keys: who is told of which event, and each
    # person's events in sequence order.
    queries = {name: f"SELECT * FROM {name}" for name in tables}
    queries["mpi_event_recipients"] = (
        "SELECT e.event_type, e.occurred_at IS NOT NULL, r.institution_code, s.institution_code,"
        " s.local_id FROM mpi_event_recipients r JOIN mpi_events e ON e.seq = r.seq"
        " LEFT JOIN source_records s ON s.id = e.source_id"
    )
    # Each person's events in sequence order: gathered here, not by an ordered aggregate
    # (SQLite before 3.44 has none).
    per_person = (
        "SELECT e.master_id, s.local_id, e.event_type FROM mpi_events e"
        " LEFT JOIN source_records s ON s.id = e.source_id ORDER BY e.master_id, e.seq"
    )
    engine = create_engine(url)
    found: dict[str, str] = {}
    with engine.connect() as conn:
        randoms = {
            str(v)
            for v in conn.execute(text("SELECT master_index_id FROM master_persons")).scalars()
        }
        pattern = re.compile("|".join(re.escape(v) for v in sorted(randoms, key=len)[::-1]))
        clock = re.compile(r"\|20\d{12}[+-]\d{4}\|\|ACK\^[A-Z0-9]*\^ACK\|[0-9A-F]{20}\|")
        for name, query in queries.items():
            result = conn.execute(text(query))
            keep = [
                i
                for i, c in enumerate(result.keys())
                if c not in skip and not (c == "id" and name in serial)
            ]
            lines = []
            for row in result:
                line = repr(tuple(row[i] for i in keep))
                line = clock.sub("|<now>||ACK|<id>|", line)
                lines.append(pattern.sub("<mid>", line) if randoms else line)
            lines.sort()
            found[name] = (
                f"{len(lines)}:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
            )
        events: dict[Any, tuple[list[str], list[str]]] = {}
        for master, local_id, event_type in conn.execute(text(per_person)):
            ids, types = events.setdefault(master, ([], []))
            if local_id is not None:
                ids.append(local_id)
            types.append(event_type)
        lines = sorted(
            repr((min(ids, default=None), ",".join(types))) for ids, types in events.values()
        )
        found["mpi_events (order per person)"] = (
            f"{len(lines)}:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
        )
    engine.dispose()
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--visits", type=int, default=300)
    parser.add_argument("--batch", type=int, default=20, help="messages per group commit")
    parser.add_argument("--sqlite", action="store_true")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the applying loop here")
    parser.add_argument("--warmup", type=int, default=0, help="visits applied before measuring")
    parser.add_argument("--digest", action="store_true", help="print digests of what is stored")
    args = parser.parse_args()
    stored: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        backend = "SQLite" if args.sqlite else "PostgreSQL"
        with benchlib.temporary_database(not args.sqlite, Path(tmp)) as (name, url):
            result = run(url, Path(tmp), args.visits, args.batch, args.profile, name, args.warmup)
            if args.digest:
                stored = digest(url)
    print(f"| measurement ({backend}, {args.visits} visits, batches of {args.batch}) | value |")
    print("| --- | --- |")
    print(f"| messages measured | {result['messages']} ({result['codes']}) |")
    if result["warmup"]:
        print(f"| messages applied before measuring | {result['warmup']} |")
    print(f"| CPU of the applying process per message | {result['cpu_ms']:.2f} ms |")
    print(f"| PostgreSQL backend CPU per message | {result['server_ms']:.2f} ms |")
    print(f"| wall time per message, one writer | {result['wall_ms']:.2f} ms |")
    print(f"| SQL statements per message (mean, in batches) | {result['statements']:.1f} |")
    for label, mean in result["per_type"].items():
        print(f"| statements in the handler, {label} | {mean:.1f} |")
    for label, ms in result["cpu_type"].items():
        print(f"| CPU in the handler, {label} | {ms:.2f} ms |")
    for table, value in stored.items():
        print(f"| digest {table} | {value} |")


if __name__ == "__main__":
    main()
