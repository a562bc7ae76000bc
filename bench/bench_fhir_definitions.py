"""FHIR R4 validation and search-index extraction benchmark (issue 4).

Run: .venv/bin/python bench/bench_fhir_definitions.py [--examples DIR] [--seconds 3]
(about half a minute; prints a Markdown table). One process, one core. Measures
``validate_resource`` and ``extract_index_values`` separately and together on a typical Patient,
a typical Observation (vital sign with a LOINC code and a UCUM quantity) and every official example
in DIR (default: the committed subset tests/data/fhir-examples; pass the unpacked
``hl7.fhir.r4.examples@4.0.1`` package for all 5,306), plus the one-off compile time.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from healthroam.records.definitions import load
from healthroam.records.search_params import extract_index_values, search_index
from healthroam.records.validation import _checkers, issues, validate_resource

ROOT = Path(__file__).resolve().parent.parent

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "3c1d9f0e-6f8a-4c52-9a1b-2f7e8d4c5b6a",
    "meta": {"lastUpdated": "2026-11-25T09:30:00.000+08:00", "source": "urn:his:hk-people-1"},
    "identifier": [
        {
            "use": "official",
            "system": "urn:oid:1.2.156.101.1.1",
            "value": "460106199001011234",
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NI"}
                ]
            },
        },
        {"system": "urn:healthroam:ehc", "value": "EHC4601000012345678"},
    ],
    "active": True,
    "name": [{"use": "official", "text": "王小明", "family": "王", "given": ["小明"]}],
    "telecom": [{"system": "phone", "value": "13800138000", "use": "mobile"}],
    "gender": "male",
    "birthDate": "1990-01-01",
    "address": [
        {
            "use": "home",
            "line": ["海秀路1号"],
            "city": "海口市",
            "district": "龙华区",
            "state": "海南省",
            "postalCode": "570100",
            "country": "CN",
        }
    ],
    "managingOrganization": {"reference": "Organization/hn-people-hospital"},
}

OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
    "meta": {"lastUpdated": "2026-11-25T09:30:00.000+08:00"},
    "status": "final",
    "category": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "vital-signs",
                }
            ]
        }
    ],
    "code": {
        "coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}],
        "text": "体重",
    },
    "subject": {"reference": "Patient/3c1d9f0e-6f8a-4c52-9a1b-2f7e8d4c5b6a"},
    "encounter": {"reference": "Encounter/5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a"},
    "effectiveDateTime": "2026-11-25T09:12:00+08:00",
    "performer": [{"reference": "Practitioner/dr-li"}],
    "valueQuantity": {
        "value": 72.5,
        "unit": "kg",
        "system": "http://unitsofmeasure.org",
        "code": "kg",
    },
}


def rate(fn: Callable[[], object], seconds: float, batch: int = 100) -> float:
    # CPU time of this process, not wall time: the machine is shared, and a single-threaded
    # loop's CPU time is what one dedicated core would take.
    n, start = 0, time.process_time()
    while (elapsed := time.process_time() - start) < seconds:
        for _ in range(batch):
            fn()
        n += batch
    return n / elapsed


def over(
    resources: list[dict[str, Any]], fn: Callable[[dict[str, Any]], object]
) -> Callable[[], None]:
    def run() -> None:
        for r in resources:
            fn(r)

    return run


def both(resource: dict[str, Any]) -> None:
    validate_resource(resource)
    extract_index_values(resource)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=Path, default=ROOT / "tests/data/fhir-examples")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    start = time.perf_counter()
    load()
    loaded = time.perf_counter()
    _checkers()
    checked = time.perf_counter()
    search_index()
    compiled = time.perf_counter()
    print(
        f"load {loaded - start:.2f} s, validators {checked - loaded:.2f} s, "
        f"search parameters {compiled - checked:.2f} s"
    )

    examples = []
    for path in sorted(args.examples.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "resourceType" in data and not issues(data):
            examples.append(data)
    assert issues(PATIENT) == []
    assert issues(OBSERVATION) == []

    print("| resources | validate /s | extract /s | validate + extract /s | rows each |")
    print("|---|---:|---:|---:|---:|")
    cases = [("typical Patient", [PATIENT]), ("typical Observation", [OBSERVATION])]
    cases.append((f"official examples ({len(examples)})", examples))
    for label, resources in cases:
        k = len(resources)
        batch = max(1, 100 // k)
        v = rate(over(resources, validate_resource), args.seconds, batch) * k
        e = rate(over(resources, extract_index_values), args.seconds, batch) * k
        b = rate(over(resources, both), args.seconds, batch) * k
        n_rows = sum(len(extract_index_values(r)) for r in resources) / k
        print(f"| {label} | {v:,.0f} | {e:,.0f} | {b:,.0f} | {n_rows:.0f} |")


if __name__ == "__main__":
    main()
