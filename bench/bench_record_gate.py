"""What the care rules cost plain FHIR reads and searches (decision 0025), in process.

Run: PYTHONPATH=src .venv/bin/python bench/bench_record_gate.py --people 200 --rounds 200
Needs PostgreSQL (HEALTHROAM_TEST_POSTGRES_URL, default postgres@127.0.0.1); a fresh database
is created and dropped. Setup (not timed): hospital HA registers ``--people`` residents with 10
Observations each; hospital HB registers 50 residents of its own with 5 Observations each and has
a care relationship (check-in row) with a fifth of HA's residents. Timed: the record service
called directly (no HTTP), as HB's clinician (``system/*.rs``), each measure with the gate and
with ``records.gate = None`` (the old behaviour), interleaved, ``--rounds`` times each; the
figure is the median and p95 in milliseconds per call.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from healthroam.bootstrap import build
from healthroam.config import Settings
from healthroam.db.migrate import upgrade
from healthroam.exchange.care.model import RelationshipReason
from healthroam.exchange.care.repository import CareRepository
from healthroam.registry.idnumber import check_character
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet

import benchlib

LOINC = "http://loinc.org"
CODES = ["4548-4", "2345-7", "2093-3", "718-7", "8480-6"]


def patient(n: int) -> dict[str, Any]:
    body = f"460106{19500101 + (n % 28) + 100 * (n % 12) + 10000 * (n % 50)}{n % 1000:03d}"
    return {
        "resourceType": "Patient",
        "identifier": [
            {"system": "urn:oid:2.16.156.10011.1.1", "value": body + check_character(body)}
        ],
        "name": [{"text": f"测试{n:05d}"}],
        "gender": "female" if n % 2 else "male",
        "birthDate": f"{body[6:10]}-{body[10:12]}-{body[12:14]}",
    }


def observation(pid: str, i: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": LOINC, "code": CODES[i % len(CODES)]}]},
        "effectiveDateTime": f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}",
        "valueQuantity": {"value": 5 + i, "unit": "%"},
    }


def principal(code: str) -> Principal:
    return Principal(f"bench-{code}", code, ScopeSet.parse("system/*.cruds"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    name, url = benchlib.create_database()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(database_url=url, data_dir=Path(tmp))
            platform = build(settings)
            upgrade(platform.db.engine)
            for code, level in (("HA", 3), ("HB", 2)):
                platform.institutions.add(
                    code=code, name=f"医院{code}", kind="hospital", region="460106", level=level
                )
            ha, hb = principal("HA"), principal("HB")
            records = platform.records
            ha_people: list[tuple[str, str]] = []  # (patient id, master index id)
            ha_obs: list[str] = []
            for n in range(args.people):
                created = records.create(ha, "Patient", patient(n))
                assert created.registration is not None
                ha_people.append((created.stored.id, created.registration.master_index_id))
                with platform.db.transaction() as conn:
                    for i in range(10):
                        made = records.create_in(
                            conn, ha, "Observation", observation(created.stored.id, i)
                        )
                        ha_obs.append(made.stored.id)
            hb_obs: list[str] = []
            for n in range(50):
                created = records.create(hb, "Patient", patient(100_000 + n))
                with platform.db.transaction() as conn:
                    for i in range(5):
                        made = records.create_in(
                            conn, hb, "Observation", observation(created.stored.id, i)
                        )
                        hb_obs.append(made.stored.id)
            now = datetime.now(UTC)
            related = ha_people[: max(1, args.people // 5)]
            with platform.db.transaction() as conn:
                for _, mii in related:
                    CareRepository(conn).add_relationship(
                        master_index_id=mii,
                        institution_code="HB",
                        since=now - timedelta(hours=1),
                        until=now + timedelta(hours=48),
                        reason=RelationshipReason.CHECK_IN,
                    )
            with platform.db.engine.connect() as conn:
                conn.execute(text("ANALYZE"))
                conn.commit()
            related_obs = ha_obs[: len(related) * 10]
            gate = records.gate
            measures: dict[str, Callable[[int], object]] = {
                "read HB's own Observation": lambda k: records.read(
                    hb, "Observation", hb_obs[k % len(hb_obs)]
                ),
                "read HA's Observation (relationship)": lambda k: records.read(
                    hb, "Observation", related_obs[k % len(related_obs)]
                ),
                "search Observation?subject=<HA's Patient>&code= (relationship)": lambda k: (
                    records.search(
                        hb,
                        "Observation",
                        [
                            ("subject", f"Patient/{related[k % len(related)][0]}"),
                            ("code", f"{LOINC}|{CODES[k % len(CODES)]}"),
                        ],
                    )
                ),
                "search Observation?code=&_count=20 (across residents)": lambda k: records.search(
                    hb, "Observation", [("code", f"{LOINC}|{CODES[k % len(CODES)]}")]
                ),
            }
            rows = []
            for label, call in measures.items():
                times: dict[bool, list[float]] = {True: [], False: []}
                for k in range(args.rounds):
                    for gated in (True, False):
                        records.gate = gate if gated else None
                        start = time.perf_counter()
                        call(k)
                        times[gated].append((time.perf_counter() - start) * 1000)
                records.gate = gate
                on, off = times[True], times[False]
                rows.append(
                    (
                        label,
                        statistics.median(on),
                        statistics.quantiles(on, n=20)[-1],
                        statistics.median(off),
                        statistics.quantiles(off, n=20)[-1],
                    )
                )
            print(
                f"people={args.people} (HA, {len(ha_obs)} Observations) "
                f"HB own={len(hb_obs)} related={len(related)} rounds={args.rounds}"
            )
            print("| call (as HB) | gate p50 ms | gate p95 ms | no gate p50 ms | no gate p95 ms |")
            print("|---|---:|---:|---:|---:|")
            for label, a, b, c, d in rows:
                print(f"| {label} | {a:.1f} | {b:.1f} | {c:.1f} | {d:.1f} |")
            platform.db.engine.dispose()
    finally:
        benchlib.drop_database(name)


if __name__ == "__main__":
    main()
