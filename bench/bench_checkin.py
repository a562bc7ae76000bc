"""Card check-in to visible summary (issue 6): target p95 <= 200 ms on PostgreSQL.

Run: PYTHONPATH=src .venv/bin/python bench/bench_checkin.py --people 200 --rounds 300
Needs PostgreSQL (HEALTHROAM_TEST_POSTGRES_URL, default postgres@127.0.0.1); a fresh database
is created and dropped. Starts a real ``healthroam serve`` on a free port and talks real HTTP.

Setup (not timed): hospital A registers ``--people`` residents through the FHIR API with a
record each (problems, allergy, medication, encounter, results, immunisation, document), the
health authority issues each an electronic card. Timed, per round: one dynamic QR code (made
beforehand from the card, as the resident's phone would) is posted by hospital B's terminal
to ``POST /care/check-in``; then hospital B's clinician asks ``GET /care/patients/{mii}/summary``
and gets hospital A's record. The figure is the time from sending the check-in to having the
summary's body. Rounds run one after another (``--clients 1``) or from several threads.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from healthroam.bootstrap import build
from healthroam.config import Settings
from healthroam.db.migrate import upgrade
from healthroam.registry.idnumber import check_character

import benchlib

SNOMED, LOINC = "http://snomed.info/sct", "http://loinc.org"


def concept(code: str, display: str, system: str = SNOMED) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def record(pid: str, i: int) -> list[dict[str, Any]]:
    subject = {"reference": f"Patient/{pid}"}
    return [
        {"resourceType": "Condition", "subject": subject, "code": concept("38341003", "高血压")},
        {"resourceType": "Condition", "subject": subject, "code": concept("44054006", "糖尿病")},
        {
            "resourceType": "AllergyIntolerance",
            "patient": subject,
            "code": concept("91936005", "青霉素过敏"),
        },
        {
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "order",
            "subject": subject,
            "medicationCodeableConcept": concept("MET", "二甲双胍"),
            "authoredOn": "2026-10-01",
        },
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": subject,
            "period": {"start": "2026-11-01"},
        },
        *[
            {
                "resourceType": "Observation",
                "status": "final",
                "subject": subject,
                "code": concept(code, name, LOINC),
                "effectiveDateTime": f"2026-11-{10 + k:02d}",
                "valueQuantity": {"value": 5 + k + i % 3, "unit": "mmol/L"},
            }
            for k, (code, name) in enumerate(
                [("2345-7", "葡萄糖"), ("2093-3", "胆固醇"), ("4548-4", "糖化血红蛋白")]
            )
        ],
        {
            "resourceType": "Immunization",
            "status": "completed",
            "patient": subject,
            "vaccineCode": concept("HepB", "乙肝疫苗", "urn:oid:2.16.156.vaccine"),
            "occurrenceDateTime": "2020-01-05",
        },
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "subject": subject,
            "description": "门诊病历",
            "content": [{"attachment": {"contentType": "text/plain", "data": "6Zeo6K+K"}}],
        },
    ]


def patient(i: int) -> dict[str, Any]:
    born = f"19{50 + i % 40:02d}0{1 + i % 9}1{i % 9}"
    body = f"460106{born}{i % 1000:03d}"
    return {
        "resourceType": "Patient",
        "name": [{"text": f"测试{'甲乙丙丁戊己庚辛'[i % 8]}{'一二三四五六七八九十'[i // 8 % 10]}"}],
        "gender": "female" if i % 2 else "male",
        "birthDate": f"{born[:4]}-{born[4:6]}-{born[6:]}",
        "identifier": [
            {"system": "urn:oid:2.16.156.10011.1.3", "value": body + check_character(body)}
        ],
    }


def token(base: str, client_id: str, secret: str) -> dict[str, str]:
    response = httpx.post(
        f"{base}/auth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--clients", type=int, default=1)
    args = parser.parse_args()
    name, url = benchlib.create_database()
    tmp = Path(tempfile.mkdtemp(prefix="hr-bench-checkin-"))
    server: subprocess.Popen[bytes] | None = None
    try:
        port = benchlib.free_port()
        base = f"http://127.0.0.1:{port}"
        settings = Settings(
            database_url=url,
            data_dir=tmp,
            public_base_url=base,
            card_dynamic_code_window_seconds=600,
        )
        platform = build(settings)
        upgrade(platform.db.engine)
        platform.keys.init()
        platform.institutions.add(
            code="HA", name="省人民医院", kind="hospital", region="460106", level=3
        )
        platform.institutions.add(
            code="HB", name="县人民医院", kind="hospital", region="460106", level=2
        )
        platform.institutions.add(code="HNWJW", name="卫健委", kind="agency", region="460000")
        clients = {
            "writer": ("HA", "system/*.cruds"),
            "clerk": ("HNWJW", "system/Card.cruds system/Patient.r"),
            "terminal": ("HB", "system/Card.r system/Encounter.c"),
            "clinician": ("HB", "system/*.rs"),
        }
        creds = {}
        for label, (institution, scopes) in clients.items():
            client = platform.clients.add(institution_code=institution, scopes=scopes)
            assert client.client_secret
            creds[label] = (client.client.client_id, client.client_secret)
        platform.close()
        env = benchlib.server_env(
            HEALTHROAM_DATABASE_URL=url,
            HEALTHROAM_DATA_DIR=str(tmp),
            HEALTHROAM_PUBLIC_BASE_URL=base,
            HEALTHROAM_LOG_LEVEL="WARNING",
            HEALTHROAM_CARD_DYNAMIC_CODE_WINDOW_SECONDS="600",
        )
        server = subprocess.Popen(
            [sys.executable, "-m", "healthroam", "serve", "--port", str(port), "--workers", "1"],
            env=env,
        )
        benchlib.wait_ready(f"{base}/healthz", server, seconds=20)
        headers = {label: token(base, *pair) for label, pair in creds.items()}
        print(f"setup: registering {args.people} residents with records and cards ...")
        people: list[tuple[str, str]] = []
        with httpx.Client(base_url=base, timeout=30) as http:
            for i in range(args.people):
                if i and i % 100 == 0:  # tokens live 5 minutes
                    headers = {label: token(base, *pair) for label, pair in creds.items()}
                made = http.post("/fhir/Patient", json=patient(i), headers=headers["writer"])
                made.raise_for_status()
                pid, mii = made.json()["id"], made.headers["x-master-index-id"]
                for resource in record(pid, i):
                    http.post(
                        f"/fhir/{resource['resourceType']}",
                        json=resource,
                        headers=headers["writer"],
                    ).raise_for_status()
                card = http.post(
                    "/cards",
                    json={"masterIndexId": mii, "kind": "electronic"},
                    headers=headers["clerk"],
                )
                card.raise_for_status()
                card_id = card.json()["id"]
                http.post(f"/cards/{card_id}/$issue", headers=headers["clerk"]).raise_for_status()
                http.post(
                    f"/cards/{card_id}/$activate", json={}, headers=headers["clerk"]
                ).raise_for_status()
                people.append((card_id, mii))
        headers = {label: token(base, *pair) for label, pair in creds.items()}
        timings: list[float] = []
        parts: list[tuple[float, float]] = []
        errors: list[str] = []
        lock = threading.Lock()

        last_code_second: dict[str, int] = {}

        def wait_for_fresh_second(card_id: str) -> None:
            # A dynamic code has one-second resolution: two codes made for the same card in the
            # same second are identical, and the platform rightly refuses the second as a
            # replay. A resident cannot be at two terminals at once, so the bench waits until
            # the second in which the card's last code came back has passed.
            while True:
                with lock:
                    last = last_code_second.get(card_id)
                    if last is None or int(time.time()) > last:
                        # Reserved until this code comes back: no other thread makes one.
                        last_code_second[card_id] = 2**62
                        return
                time.sleep(1.0 - (time.time() % 1.0) + 0.001)

        def worker(part: list[tuple[str, str]]) -> None:
            with httpx.Client(base_url=base, timeout=30) as http:
                for card_id, mii in part:
                    wait_for_fresh_second(card_id)
                    # The resident's phone shows a fresh code (not timed).
                    made = http.post(f"/cards/{card_id}/$dynamic-code", headers=headers["clerk"])
                    code = made.json()["text"]
                    with lock:
                        last_code_second[card_id] = int(time.time())
                    started = time.perf_counter()
                    checked = http.post(
                        "/care/check-in",
                        json={"text": code, "terminal": "BENCH-1", "purpose": "outpatient"},
                        headers=headers["terminal"],
                    )
                    middle = time.perf_counter()
                    summary = http.get(
                        f"/care/patients/{mii}/summary", headers=headers["clinician"]
                    )
                    elapsed = (time.perf_counter() - started) * 1000
                    ok = (
                        checked.status_code == 201
                        and summary.status_code == 200
                        and summary.json()["sections"][0]["items"]
                    )
                    with lock:
                        if ok:
                            timings.append(elapsed)
                            parts.append(((middle - started) * 1000, elapsed))
                        else:
                            errors.append(
                                f"{checked.status_code}/{summary.status_code} {checked.text[:200]}"
                            )

        rounds = [people[r % len(people)] for r in range(args.rounds)]
        threads = [
            threading.Thread(target=worker, args=(rounds[k :: args.clients],))
            for k in range(args.clients)
        ]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        print(f"| measurement (clients={args.clients}, people={args.people}) | value |")
        print("|---|---:|")
        print(f"| rounds ok / failed | {len(timings)} / {len(errors)} |")
        if timings:
            print(f"| check-in -> summary p50 | {statistics.median(timings):.1f} ms |")
            print(f"| check-in -> summary p95 | {percentile(timings, 0.95):.1f} ms |")
            print(f"| check-in -> summary p99 | {percentile(timings, 0.99):.1f} ms |")
            print(f"| max | {max(timings):.1f} ms |")
            check_ins = [p[0] for p in parts]
            summaries = [p[1] - p[0] for p in parts]
            print(
                f"| of which check-in p50 / p95 | {statistics.median(check_ins):.1f} / "
                f"{percentile(check_ins, 0.95):.1f} ms |"
            )
            print(
                f"| of which summary p50 / p95 | {statistics.median(summaries):.1f} / "
                f"{percentile(summaries, 0.95):.1f} ms |"
            )
            print(f"| rounds per second | {len(timings) / wall:.1f} |")
        if errors:
            print("errors:", sorted(set(errors)))
    finally:
        if server is not None:
            benchlib.stop_process(server)
        benchlib.drop_database(name)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
