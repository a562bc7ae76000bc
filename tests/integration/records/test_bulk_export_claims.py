"""Export jobs claimed by the workers of several server processes (decision 0048): a worker
skips a job another worker is claiming right now and takes the next one (PostgreSQL)."""

from __future__ import annotations

import functools
import operator
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from healthroam.bootstrap import Platform
from healthroam.db.tables_bulk import bulk_export_jobs
from healthroam.records.bulk_export import ExportRequest
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet


def test_a_worker_takes_the_next_job_while_another_claims_the_oldest(platform: Platform) -> None:
    if platform.db.dialect != "postgresql":
        pytest.skip("SQLite has one writer: claims cannot overlap")
    platform.institutions.add(code="H001", name="医院", kind="hospital", region="460106", level=3)
    who = Principal("client-1", "H001", ScopeSet.parse("system/*.cruds"))
    request = ExportRequest("system", None, ("Patient",), None, "http://testserver/fhir/$export")
    start = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    jobs = []
    for minutes in (0, 1):  # the oldest first
        platform.bulk_export.clock = functools.partial(
            operator.add, start, timedelta(minutes=minutes)
        )
        jobs.append(platform.bulk_export.kick_off(who, request))
    platform.bulk_export.clock = lambda: datetime.now(UTC)

    claimed: list[object] = []
    with platform.db.engine.connect() as other:
        # Another process's worker is in the middle of claiming the oldest job.
        other.execute(
            select(bulk_export_jobs.c.id).where(bulk_export_jobs.c.id == jobs[0]).with_for_update()
        )
        worker = threading.Thread(target=lambda: claimed.append(platform.bulk_export._claim()))
        worker.start()
        worker.join(timeout=20)
        blocked = worker.is_alive()
        other.rollback()  # lets a blocked claim finish
    worker.join()
    assert not blocked, "the claim waited for the other worker's lock"
    assert [row.id for row in claimed] == [jobs[1]]  # type: ignore[attr-defined]
    with platform.db.transaction(readonly=True) as conn:
        rows = conn.execute(select(bulk_export_jobs.c.id, bulk_export_jobs.c.status)).all()
    statuses = {row.id: row.status for row in rows}
    assert statuses == {jobs[0]: "accepted", jobs[1]: "running"}
