"""Export claims are leases held for as long as their runner lives (decision 0052): with the
workers of several server processes, a slow but alive runner keeps its job; a runner whose
heartbeat stopped (its process frozen or gone) loses the job to another worker, and when it
comes back it cannot overwrite or delete the new owner's output."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, select

from healthroam.bootstrap import Platform
from healthroam.db.tables_bulk import bulk_export_jobs
from healthroam.records.bulk_export import BulkExportService, ExportRequest, ExportWorker
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet

AGENCY = Principal("t:export", "HCP", ScopeSet.parse("system/*.cruds"))


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


class SlowExport(BulkExportService):
    """The worker of another server process whose reads are slow: after each chunk it waits
    until ``go`` is set (its heartbeat runs on, every ``heartbeat_every`` seconds)."""

    def __init__(self, platform: Platform, clock: Clock, heartbeat_every: float) -> None:
        base = platform.bulk_export
        super().__init__(
            base.db,
            base.audit,
            base.registry,
            base.directory,
            clock=clock,
            heartbeat_every=heartbeat_every,
        )
        self.paused, self.go = threading.Event(), threading.Event()

    def _chunks(self, *args: Any) -> Iterator[list[tuple[str, int, datetime, dict[str, Any]]]]:
        for chunk in super()._chunks(*args):
            yield chunk
            self.paused.set()
            assert self.go.wait(60)


def _setup(platform: Platform) -> tuple[str, Clock, BulkExportService]:
    platform.institutions.add(code="HCP", name="卫健委", kind="agency", region="460000")
    for n in range(3):
        patient = {
            "resourceType": "Patient",
            "name": [{"family": "符", "given": ["海燕"]}],
            "gender": "female",
            "birthDate": f"199{n}-01-01",
        }
        made = platform.records.create(AGENCY, "Patient", patient).stored.id
        observation = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/{made}"},
            "valueQuantity": {"value": 60 + n, "unit": "/min"},
        }
        platform.records.create(AGENCY, "Observation", observation)
    clock = Clock()
    request = ExportRequest(
        "system", None, ("Patient", "Observation"), None, "http://testserver/fhir/$export"
    )
    platform.bulk_export.clock = clock
    job = platform.bulk_export.kick_off(AGENCY, request)
    return job, clock, platform.bulk_export


def _row(platform: Platform, job: str) -> Any:
    with platform.db.transaction(readonly=True) as conn:
        return conn.execute(select(bulk_export_jobs).where(bulk_export_jobs.c.id == job)).one()


def _files(service: BulkExportService, job: str) -> dict[str, str]:
    manifest = service.status(AGENCY, job).manifest
    assert manifest is not None
    return {
        o["file"]: service.file(AGENCY, job, o["file"]).read_text(encoding="utf-8")
        for o in manifest["output"]
    }


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def test_a_slow_runner_keeps_its_job_while_it_lives(platform: Platform) -> None:
    job, clock, other = _setup(platform)
    slow = SlowExport(platform, clock, heartbeat_every=0.05)
    runner = threading.Thread(target=slow.run_pending)
    runner.start()
    try:
        assert slow.paused.wait(30)
        clock.now += timedelta(minutes=3)  # no chunk for longer than the stale time
        deadline = time.monotonic() + 10  # the slow runner's heartbeat refreshes its claim
        while _aware(_row(platform, job).heartbeat_at) < clock.now:
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert other.run_pending() is None  # not stale: nobody else runs it
    finally:
        slow.go.set()
        runner.join(60)
    row = _row(platform, job)
    assert row.status == "completed"
    files = _files(other, job)
    assert sorted(files) == ["Observation-1.ndjson", "Patient-1.ndjson"]
    assert [len(text.splitlines()) for text in files.values()] == [3, 3]


def test_a_runner_that_comes_back_cannot_overwrite_the_new_owners_output(
    platform: Platform,
) -> None:
    job, clock, other = _setup(platform)
    frozen = SlowExport(platform, clock, heartbeat_every=3600)  # its heartbeat never comes
    runner = threading.Thread(target=frozen.run_pending)
    runner.start()
    try:
        assert frozen.paused.wait(30)
        first = _row(platform, job).owner
        clock.now += timedelta(minutes=3)
        assert other.run_pending() == job  # taken over and run to the end by another worker
        taken = _row(platform, job)
        assert (taken.status, taken.progress) == ("completed", "done")
        assert taken.owner != first
        output = _files(other, job)
    finally:
        frozen.go.set()  # the first runner comes back
        runner.join(60)
    assert not runner.is_alive()
    row = _row(platform, job)
    assert (row.status, row.owner, row.manifest) == ("completed", taken.owner, taken.manifest)
    assert _files(other, job) == output  # the new owner's files, untouched
    job_dir = Path(other.directory) / job
    assert sorted(p.name for p in job_dir.iterdir()) == [taken.owner]  # the old one's removed


def test_has_work_sees_accepted_and_orphaned_jobs_only(platform: Platform) -> None:
    job, clock, service = _setup(platform)
    assert service.has_work()  # accepted
    slow = SlowExport(platform, clock, heartbeat_every=3600)
    runner = threading.Thread(target=slow.run_pending)
    runner.start()
    try:
        assert slow.paused.wait(30)
        assert not service.has_work()  # running, its heartbeat fresh
        clock.now += timedelta(minutes=3)
        assert service.has_work()  # running, its runner silent past the stale time
    finally:
        slow.go.set()
        runner.join(60)
    assert _row(platform, job).status == "completed"
    assert not service.has_work()


def test_an_idle_worker_writes_nothing_and_still_takes_up_an_orphaned_job(
    platform: Platform,
) -> None:
    """The worker's idle tick is one read: an idle server takes no write lock (SQLite's is the
    whole database's) and updates no rows; a job whose runner died is still run."""
    job, clock, service = _setup(platform)
    frozen = SlowExport(platform, clock, heartbeat_every=3600)
    runner = threading.Thread(target=frozen.run_pending)
    runner.start()
    assert frozen.paused.wait(30)
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if threading.current_thread().name == "bulk-export":
            statements.append(statement.lstrip().split(None, 1)[0].upper())

    engine = platform.db.engine
    event.listen(engine, "before_cursor_execute", seen)
    worker = ExportWorker(service, interval_ms=10)
    worker.start()
    try:
        time.sleep(0.5)  # about 50 idle ticks: the job is running and its runner alive
        idle = list(statements)
        assert idle
        assert set(idle) <= {"PRAGMA", "BEGIN", "SELECT", "COMMIT", "ROLLBACK"}, idle
        clock.now += timedelta(minutes=3)  # the runner is now silent past the stale time
        deadline = time.monotonic() + 30
        while _row(platform, job).status != "completed":
            assert time.monotonic() < deadline, "the orphaned job was not taken up"
            time.sleep(0.02)
    finally:
        worker.stop()
        event.remove(engine, "before_cursor_execute", seen)
        frozen.go.set()
        runner.join(60)
    assert "UPDATE" in statements  # the claim, once there was work
    assert _row(platform, job).status == "completed"
