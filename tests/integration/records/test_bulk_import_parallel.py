"""A large import's parallel path (worker processes, COPY text, the Patient lane) stores exactly
what the in-process path stores, keeps input order per resource, and reports every bad line."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select

from healthroam.bootstrap import Platform
from healthroam.db.schema import fhir_resource_versions, fhir_resources
from healthroam.db.tables_records import INDEX_TABLES
from healthroam.errors import Unavailable
from healthroam.records.bulk_import import BulkImporter
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet
from processes import descendants, kill_new_workers, within

from helpers import patient


def _history(prefix: str) -> list[dict[str, Any]]:
    """Index-heavy resources of several types, with awkward text (tabs, newlines,
    backslashes, quotes, Han characters) that COPY text must escape."""
    lines: list[dict[str, Any]] = []
    for n in range(12):
        subject = {"reference": f"Patient/{prefix}p{n % 3}"}
        lines.append(
            {
                "resourceType": "Observation",
                "id": f"{prefix}o{n}",
                "status": "final",
                "code": {
                    "coding": [{"system": "http://loinc.org", "code": "718-7", "display": "Hb"}],
                    "text": '血红蛋白\tline\nbreak \\ back"slash',
                },
                "subject": subject,
                "effectiveDateTime": f"2024-03-{n + 1:02d}T08:30:00+08:00",
                "valueQuantity": {
                    "value": 120.5 + n,
                    "unit": "g/L",
                    "system": "http://unitsofmeasure.org",
                    "code": "g/L",
                },
                "component": [
                    {
                        "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                        "valueQuantity": {"value": 120, "unit": "mm[Hg]"},
                    }
                ],
            }
        )
        lines.append(
            {
                "resourceType": "Condition",
                "id": f"{prefix}c{n}",
                "subject": subject,
                "code": {
                    "coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "E11.9"}],
                    "text": "2型糖尿病",
                },
                "recordedDate": "2023-11-02",
                "note": [{"text": "tab\there"}],
            }
        )
    return lines


def _snapshot(platform: Platform, prefix: str) -> dict[str, Any]:
    """Every row this prefix wrote, ids with the prefix removed, server stamps left out (the
    token rows' copy of the resource's lastUpdated as whether it is the same)."""

    def strip(value: Any) -> Any:
        return value.replace(prefix, "", 1) if isinstance(value, str) else value

    out: dict[str, Any] = {}
    with platform.db.transaction(readonly=True) as conn:
        for table in (fhir_resources, fhir_resource_versions):
            rows = conn.execute(select(table).where(table.c.id.like(f"{prefix}%"))).mappings()
            out[table.name] = sorted(
                json.dumps(
                    {k: strip(v) for k, v in row.items() if k != "last_updated"},
                    sort_keys=True,
                    default=str,
                    ensure_ascii=False,
                ).replace(prefix, "")
                for row in rows
            )
        times = {
            (row.resource_type, row.id): row.last_updated
            for row in conn.execute(
                select(fhir_resources).where(fhir_resources.c.id.like(f"{prefix}%"))
            )
        }
        for table in INDEX_TABLES:
            rows = conn.execute(
                select(table).where(table.c.resource_id.like(f"{prefix}%"))
            ).mappings()
            out[table.name] = sorted(
                json.dumps(
                    {
                        k: (v == times[(row["resource_type"], row["resource_id"])])
                        if k == "last_updated"
                        else strip(v)
                        for k, v in row.items()
                        if k != "row_id"
                    },
                    sort_keys=True,
                    default=str,
                    ensure_ascii=False,
                ).replace(prefix, "")
                for row in rows
            )
    return out


def _principal() -> Principal:
    return Principal(
        client_id="test:import", institution_code="H001", scopes=ScopeSet.parse("system/*.cu")
    )


def _lines(resources: list[Any]) -> list[bytes]:
    return [
        (r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)).encode() for r in resources
    ]


def test_worker_processes_store_exactly_what_the_importing_process_stores(
    platform: Platform,
) -> None:
    platform.institutions.add(code="H001", name="医院", kind="hospital", region="460106", level=3)
    serial = BulkImporter(platform.db, platform.audit, platform.records, chunk_size=5)
    parallel = BulkImporter(
        platform.db, platform.audit, platform.records, chunk_size=5, processes=2
    )
    try:
        one = serial.import_lines(_principal(), _lines(_history("a-")))
        two = parallel.import_lines(_principal(), _lines(_history("b-")))
        assert parallel._pool is not None  # the worker processes did the preparing
    finally:
        parallel.close()
    assert (one.created, one.failed) == (two.created, two.failed) == (24, 0)
    a, b = _snapshot(platform, "a-"), _snapshot(platform, "b-")
    assert set(a) == set(b)
    for table, rows in a.items():
        assert rows == b[table], table
    assert len(a["fhir_idx_token"]) > 24
    assert all('"last_updated": true' in row for row in a["fhir_idx_token"])
    assert len(a["fhir_idx_date"]) >= 12  # the date rows are stamped too (decision 0059)
    assert all('"last_updated": true' in row for row in a["fhir_idx_date"])
    assert len(a["fhir_idx_composite"]) >= 12


def test_parallel_import_keeps_order_registers_patients_and_reports_bad_lines(
    platform: Platform,
) -> None:
    platform.institutions.add(code="H001", name="医院", kind="hospital", region="460106", level=3)
    first = patient(id="p1", sequence=124)
    resources: list[Any] = [
        first,
        patient("王小明", id="p2", gender="male", sequence=135),
        "{not json",
        *(_history("x-")[:6]),
        {"resourceType": "Observation", "id": "bad", "code": {"text": "Hb"}},  # no status
        *(_history("x-")[6:12]),
        # the same Patient again, changed: a second version, after the first
        {**first, "telecom": [{"system": "phone", "value": "13907550001"}]},
        b"\xff\xfe not utf-8",
    ]
    importer = BulkImporter(
        platform.db, platform.audit, platform.records, chunk_size=4, processes=2
    )
    try:
        report = importer.import_lines(_principal(), [*_lines(resources[:-1]), resources[-1]])
    finally:
        importer.close()
    assert (report.created, report.updated, report.failed) == (14, 1, 3)
    assert [e.line for e in report.errors] == [3, 10, 18]
    assert report.errors[1].expression == "Observation.status"
    with platform.db.transaction(readonly=True) as conn:
        c = fhir_resources.c
        p1 = conn.execute(
            select(c.version, c.content).where(c.resource_type == "Patient", c.id == "p1")
        ).one()
    assert p1.version == 2
    assert p1.content["telecom"][0]["value"] == "13907550001"
    for pid in ("p1", "p2"):  # matched into the registry like a FHIR create
        assert platform.registry.source_patient(pid) is not None


def test_a_lost_worker_fails_the_import_clearly_and_the_next_import_starts_new_workers(
    platform: Platform,
) -> None:
    platform.institutions.add(code="H001", name="医院", kind="hospital", region="460106", level=3)
    lines = _lines([r for prefix in ("k1-", "k2-", "k3-", "k4-") for r in _history(prefix)])
    importer = BulkImporter(
        platform.db, platform.audit, platform.records, chunk_size=5, processes=2
    )
    before = set(descendants())
    killed: list[int] = []

    def kill_workers_once(report: Any) -> None:
        if not killed:
            killed.append(kill_new_workers(before))

    try:
        outcome = within(
            120, lambda: importer.import_lines(_principal(), lines, progress=kill_workers_once)
        )
        assert killed
        assert killed[0] > 0
        error = outcome.get("error")
        assert isinstance(error, Unavailable), outcome
        assert "send the import again" in error.detail
        with platform.db.transaction(readonly=True) as conn:
            kept = conn.execute(select(func.count()).select_from(fhir_resources)).scalar_one()
        assert 0 < kept < len(lines)  # the chunks stored before the loss stay stored
        again = within(120, lambda: importer.import_lines(_principal(), lines))
        assert "error" not in again, again
        report = again["value"]
        assert (report.created, report.unchanged, report.failed) == (
            len(lines) - kept,
            kept,
            0,
        )
    finally:
        importer.close()
