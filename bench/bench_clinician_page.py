"""Clinician page benchmark (issue 6): card scan -> check-in -> the summary page's HTML, as a
hospital PC sees it, through a real `healthroam serve` on an ephemeral port.

Each scan is one POST /clinician/scan with a fresh dynamic code (verification, card-use log,
Encounter, care relationship) followed by the redirected GET of the summary page (access gate,
records from two hospitals, audit, rendering). The time is measured from sending the scan to
having the whole summary HTML. Sequential requests: the latency one clinician sees.

Run: .venv/bin/python bench/bench_clinician_page.py --backend postgresql --residents 200
PostgreSQL at HEALTHROAM_TEST_POSTGRES_URL (default postgres@127.0.0.1); a fresh database is
created and dropped. Prints a Markdown table row.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx

from healthroam.bootstrap import Platform, build
from healthroam.cards.model import CardAction
from healthroam.config import Settings
from healthroam.registry.idnumber import check_character
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet

import benchlib

PASSWORD = "bench password 1"


def his(institution: str) -> Principal:
    return Principal(
        f"bench-{institution}",
        institution,
        ScopeSet.parse("system/*.cruds system/Card.cruds"),
        end_user="bench",
    )


def setup(platform: Platform, residents: int) -> list[str]:
    """Two hospitals, a clinician, and residents registered at both with a few records each
    and an active card. Returns the card ids."""
    hospitals = (("H001", "海南省人民医院", "460106"), ("H002", "三亚市人民医院", "460202"))
    for code, name, region in hospitals:
        platform.institutions.add(code=code, name=name, kind="hospital", region=region, level=3)
    platform.clinicians.add(
        username="dr.bench", display_name="压测医生", institution_code="H001", password=PASSWORD
    )
    platform.keys.init()
    card_ids = []
    for n in range(residents):
        year, month, day = 1980 + n // 1000 % 20, 1 + n // 100 % 9, 10 + n % 18
        body = f"460106{year}0{month}{day}{n % 1000:03d}"
        id_number = body + check_character(body)
        ids = []
        mid = ""
        for hospital in ("H001", "H002"):
            created = platform.records.create(
                his(hospital),
                "Patient",
                {
                    "resourceType": "Patient",
                    "name": [{"text": f"测试{n}"}],
                    "gender": "female",
                    "birthDate": f"{year}-0{month}-{day}",
                    "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": id_number}],
                },
            )
            assert created.registration is not None
            mid = created.registration.master_index_id
            ids.append(created.stored.id)
        records: list[tuple[str, dict[str, Any]]] = [
            (
                "H002",
                {
                    "resourceType": "Condition",
                    "subject": {"reference": f"Patient/{ids[1]}"},
                    "code": {"text": "2型糖尿病"},
                    "onsetDateTime": "2021-09-10",
                },
            ),
            (
                "H001",
                {
                    "resourceType": "AllergyIntolerance",
                    "patient": {"reference": f"Patient/{ids[0]}"},
                    "code": {"text": "青霉素"},
                },
            ),
        ]
        for k in range(6):
            records.append(
                (
                    ("H001", "H002")[k % 2],
                    {
                        "resourceType": "Observation",
                        "status": "final",
                        "subject": {"reference": f"Patient/{ids[k % 2]}"},
                        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
                        "effectiveDateTime": f"2026-0{1 + k}-15T09:00:00+08:00",
                        "valueQuantity": {"value": 6 + k / 10, "unit": "%"},
                    },
                )
            )
        for hospital, resource in records:
            platform.records.create(his(hospital), resource["resourceType"], resource)
        card = platform.cards.apply(his("H001"), master_index_id=mid, kind="electronic")
        platform.cards.act(his("H001"), card.id, CardAction.ISSUE)
        platform.cards.act(his("H001"), card.id, CardAction.ACTIVATE)
        card_ids.append(card.id)
    return card_ids


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="postgresql")
    parser.add_argument("--residents", type=int, default=200)
    args = parser.parse_args()
    with (
        benchlib.work_folder("hr-bench-page-") as folder,
        benchlib.temporary_database(args.backend == "postgresql", folder) as (_, url),
    ):
        benchlib.migrate(url)
        port = benchlib.free_port()
        base = f"http://127.0.0.1:{port}"
        settings = Settings(
            database_url=url, data_dir=folder, public_base_url=base, audit_seal_interval_ms=0
        )
        platform = build(settings)
        started = time.perf_counter()
        card_ids = setup(platform, args.residents)
        print(f"setup: {args.residents} residents in {time.perf_counter() - started:.0f} s")
        env = benchlib.server_env(
            HEALTHROAM_DATABASE_URL=url,
            HEALTHROAM_DATA_DIR=str(folder),
            HEALTHROAM_PUBLIC_BASE_URL=base,
            HEALTHROAM_LOG_LEVEL="WARNING",
        )
        server = subprocess.Popen(
            [sys.executable, "-m", "healthroam", "serve", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            benchlib.wait_ready(f"{base}/readyz", server)
            with httpx.Client(base_url=base, timeout=30) as http:
                login = http.get("/clinician/login").text
                token = re.search(r'name="csrf" value="([^"]+)"', login)
                assert token
                http.post(
                    "/clinician/login",
                    data={"csrf": token.group(1), "username": "dr.bench", "password": PASSWORD},
                )
                home = http.get("/clinician/").text
                csrf = re.search(r'name="csrf" value="([^"]+)"', home)
                assert csrf
                timings, sizes = [], []
                scans: list[float] = []
                summaries: list[float] = []
                for card_id in card_ids:
                    code = platform.cards.dynamic_code(his("H001"), card_id)
                    t0 = time.perf_counter()
                    scanned = http.post(
                        "/clinician/scan",
                        data={"csrf": csrf.group(1), "code": code, "purpose": "outpatient"},
                    )
                    assert scanned.status_code == 303, scanned.text[:500]
                    t1 = time.perf_counter()
                    page = http.get(scanned.headers["location"])
                    t2 = time.perf_counter()
                    timings.append((t2 - t0) * 1000)
                    scans.append((t1 - t0) * 1000)
                    summaries.append((t2 - t1) * 1000)
                    assert page.status_code == 200, page.text[:500]
                    assert "三亚市人民医院" in page.text
                    sizes.append(len(page.content))
        finally:
            benchlib.stop_process(server)
        platform.close()
        timings.sort()
        q = statistics.quantiles(timings, n=100)
        scan_q = statistics.quantiles(sorted(scans), n=100)
        page_q = statistics.quantiles(sorted(summaries), n=100)
        print(
            "| backend | scans | scan->summary p50 / p95 / p99 ms | scan POST p50 / p95 ms "
            "| summary GET p50 / p95 ms | page KiB |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        print(
            f"| {args.backend} | {len(timings)} | {q[49]:.0f} / {q[94]:.0f} / {q[98]:.0f} "
            f"| {scan_q[49]:.0f} / {scan_q[94]:.0f} | {page_q[49]:.0f} / {page_q[94]:.0f} "
            f"| {statistics.mean(sizes) / 1024:.1f} |"
        )


if __name__ == "__main__":
    main()
