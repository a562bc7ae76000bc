"""Result recognition benchmark (issue 6): what a duplicate-test look-up costs.

Loads PEOPLE residents registered at three hospitals (levels 3, 2, 1) with RESULTS results each
(CBC, HbA1c, chest CT, other codes; dates spread over 200 days), then times through the
services (no HTTP):

- ServiceRequest create at the level-2 hospital for a tabled test (the alert listener runs and
  finds results) against a create for an untabled code (the listener returns at once);
- ``$recent-results`` for one code, and for every tabled test.

Run: .venv/bin/python bench/bench_recognition.py --backend postgresql --people 300
A fresh database (PostgreSQL: created and dropped; SQLite: a temporary file).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import text

from healthroam.bootstrap import build
from healthroam.config import Settings
from healthroam.exchange.recognition.model import CHINA_TIME, LOINC
from healthroam.registry.idnumber import check_character
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet
from healthroam.security.service import utcnow

import benchlib

CODES = ["58410-2", "4548-4", "24627-2", "718-7", "2345-7", "8867-4"]


def patient(n: int) -> dict[str, Any]:
    born = f"{1950 + n % 40}-{1 + n % 12:02d}-{1 + n % 28:02d}"
    body = f"460106{born.replace('-', '')}{n % 1000:03d}"
    return {
        "resourceType": "Patient",
        "name": [{"text": f"测试{n:05d}"}],
        "gender": "female" if n % 2 else "male",
        "birthDate": born,
        "identifier": [
            {"system": "urn:oid:2.16.156.10011.1.3", "value": body + check_character(body)}
        ],
    }


def ms(samples: list[float]) -> str:
    samples = sorted(samples)
    p95 = samples[int(len(samples) * 0.95) - 1]
    return f"{statistics.median(samples) * 1000:.1f} / {p95 * 1000:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--people", type=int, default=300)
    parser.add_argument("--results", type=int, default=20)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    with (
        benchlib.work_folder("hr-bench-recognition-") as tmp,
        benchlib.temporary_database(args.backend == "postgresql", tmp) as (_, url),
    ):
        benchlib.migrate(url)
        run(Settings(database_url=url, data_dir=tmp, audit_seal_interval_ms=0), args)


def run(settings: Settings, args: argparse.Namespace) -> None:
    rng = random.Random(6)
    with build(settings) as platform:
        principals = {}
        for code, level in (("HA", 3), ("HB", 2), ("HC", 1)):
            platform.institutions.add(
                code=code, name=f"医院{code}", kind="hospital", region="460106", level=level
            )
            principals[code] = Principal(f"bench-{code}", code, ScopeSet.parse("system/*.cruds"))
        today = utcnow().astimezone(CHINA_TIME).date()
        started = time.perf_counter()
        people: list[str] = []  # the level-2 hospital's Patient id of each person
        for n in range(args.people):
            ids = {}
            for code, principal in principals.items():
                ids[code] = platform.records.create(principal, "Patient", patient(n)).stored.id
            people.append(ids["HB"])
            for _ in range(args.results):
                at = rng.choice(["HA", "HC"])
                when = today - timedelta(days=rng.randrange(200))
                platform.records.create(
                    principals[at],
                    "Observation",
                    {
                        "resourceType": "Observation",
                        "status": "final",
                        "code": {"coding": [{"system": LOINC, "code": rng.choice(CODES)}]},
                        "subject": {"reference": f"Patient/{ids[at]}"},
                        "effectiveDateTime": when.isoformat(),
                    },
                )
        load = time.perf_counter() - started
        if platform.db.engine.dialect.name == "postgresql":
            with platform.db.engine.connect() as conn:  # as autovacuum would have done
                conn.execute(text("ANALYZE"))
                conn.commit()
        b = principals["HB"]

        def order(pid: str, code: str) -> dict[str, Any]:
            return {
                "resourceType": "ServiceRequest",
                "status": "active",
                "intent": "order",
                "subject": {"reference": f"Patient/{pid}"},
                "code": {"coding": [{"system": LOINC, "code": code}]},
            }

        timings: dict[str, list[float]] = {k: [] for k in ("tabled", "untabled", "one", "all")}
        alerts = 0
        for i in range(args.calls):
            pid = people[i % len(people)]
            for key, code in (("tabled", "57021-8"), ("untabled", "8867-4")):
                t0 = time.perf_counter()
                created = platform.records.create(b, "ServiceRequest", order(pid, code))
                timings[key].append(time.perf_counter() - t0)
                alerts += len(created.notice.issues) if key == "tabled" else 0
            t0 = time.perf_counter()
            platform.recognition.recent_results(b, pid, [f"{LOINC}|58410-2"])
            timings["one"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            platform.recognition.recent_results(b, pid, [])
            timings["all"].append(time.perf_counter() - t0)
        platform.audit.seal()
    backend = "PostgreSQL" if settings.database_url.startswith("postgresql") else "SQLite"
    print(
        f"{backend}: {args.people} people x 3 hospitals, {args.people * args.results} results "
        f"(loaded in {load:.0f} s); {args.calls} calls each; {alerts} alerts given\n"
    )
    print("| measurement | p50 / p95 ms |")
    print("|---|---:|")
    print(f"| ServiceRequest create, tabled code (alerts computed) | {ms(timings['tabled'])} |")
    print(f"| ServiceRequest create, untabled code | {ms(timings['untabled'])} |")
    print(f"| $recent-results, one code | {ms(timings['one'])} |")
    print(f"| $recent-results, every tabled test | {ms(timings['all'])} |")


if __name__ == "__main__":
    main()
