"""`healthroam serve --workers 2` on PostgreSQL over real sockets (decision 0048): the two
processes share the work, the once-only background job (the audit sealer) runs in the one
process holding the leader lock, export jobs run once, and when the leader is killed another
process takes over. On SQLite the server refuses more than one process."""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from healthroam.bootstrap import Platform
from healthroam.config import Settings
from healthroam.db.leader import APPLICATION_NAME_PREFIX
from healthroam.db.schema import audit_events, audit_inbox
from healthroam.db.tables_bulk import bulk_export_jobs

from helpers import patient
from servers import bearer_token, running_server, server_env

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
ACCESS = re.compile(r"^\S+ \S+ (\d+) INFO healthroam\.access GET /fhir/Observation/")


@pytest.fixture
def two_workers(settings: Settings, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("several server processes need PostgreSQL (SQLite: one, tested below)")
    log = tmp_path / "server.log"
    with running_server(
        settings,
        log,
        workers=2,
        HEALTHROAM_AUDIT_SEAL_INTERVAL_MS="50",
        HEALTHROAM_SERVER_LEADER_POLL_MS="100",
        HEALTHROAM_BULK_EXPORT_INTERVAL_MS="50",
        HEALTHROAM_LOG_LEVEL="INFO",
    ) as base:
        yield base, log
    assert "460106" not in log.read_text()  # no personal data in the log


def _eventually(check: Callable[[], Any], what: str, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _leaders(platform: Platform) -> list[int]:
    """Process ids of the server processes holding the leader lock (from pg_stat_activity)."""
    with platform.db.transaction(readonly=True) as conn:
        names = conn.execute(
            text(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                "WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE :p "
                # (this test's database: other tests' servers lead in theirs at the same time)
                "AND a.datname = current_database()"
            ),
            {"p": APPLICATION_NAME_PREFIX + "%"},
        ).scalars()
        return [int(n.removeprefix(APPLICATION_NAME_PREFIX)) for n in names]


def _one_leader(platform: Platform, other_than: int | None = None) -> int:
    def check() -> int | None:
        leaders = _leaders(platform)
        assert len(leaders) <= 1, leaders  # never two at once
        return leaders[0] if leaders and leaders[0] != other_than else None

    leader: int = _eventually(check, "a leader")
    return leader


def _count(platform: Platform, query: Any) -> int:
    with platform.db.transaction(readonly=True) as conn:
        return int(conn.execute(query).scalar_one())


def _sealed(platform: Platform) -> bool:
    return _count(platform, select(func.count()).select_from(audit_inbox)) == 0


def _reads_of(platform: Platform, patient_id: str) -> int:
    return _count(
        platform,
        select(func.count())
        .select_from(audit_events)
        .where(audit_events.c.patient_ref == f"Patient/{patient_id}", audit_events.c.action == "R"),
    )


def _read_many(base: str, headers: dict[str, str], path: str, n: int) -> None:
    def one(_: int) -> int:
        # A connection per request: the kernel hands each to whichever process accepts first.
        read = httpx.get(base + path, headers=headers | {"Connection": "close"}, timeout=30)
        return read.status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(one, range(n))) == {200}


def _serving_pids(log: Path) -> set[int]:
    return {int(m.group(1)) for line in log.read_text().splitlines() if (m := ACCESS.match(line))}


def test_two_processes_share_reads_and_one_leader_seals_them(
    platform: Platform, settings: Settings, two_workers: tuple[str, Path]
) -> None:
    base, log = two_workers
    platform.institutions.add(
        code="H001", name="海南省人民医院", kind="hospital", region="460106", level=3
    )
    client = platform.clients.add(institution_code="H001", scopes="system/*.cruds")
    assert client.client_secret
    h = bearer_token(base, client.client.client_id, client.client_secret)
    created = httpx.post(f"{base}/fhir/Patient", json=patient(), headers=h, timeout=30)
    assert created.status_code == 201, created.text
    patient_id = created.json()["id"]
    observation = httpx.post(
        f"{base}/fhir/Observation",
        json={
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
            "subject": {"reference": f"Patient/{patient_id}"},
            "valueQuantity": {"value": 120, "unit": "g/L"},
        },
        headers=h,
        timeout=30,
    )
    assert observation.status_code == 201, observation.text
    path = f"/fhir/Observation/{observation.json()['id']}"

    leader = _one_leader(platform)
    reads = 0
    while len(_serving_pids(log)) < 2 and reads < 2000:  # until both processes have served
        _read_many(base, h, path, 40)
        reads += 40
    assert len(_serving_pids(log)) == 2, "the reads all went to one process"
    assert leader in _serving_pids(log)

    # Every read's entry is sealed into the chain exactly once, by whichever process leads.
    _eventually(lambda: _sealed(platform), "the sealer")
    assert _reads_of(platform, patient_id) == reads
    report = platform.audit.verify()
    assert report.ok, report.problems
    assert _one_leader(platform) == leader  # the leader did not change meanwhile

    # Kill the leader outright: its session ends, and another process takes the lock (the
    # surviving one, or the one Uvicorn starts in the dead one's place).
    os.kill(leader, signal.SIGKILL)
    successor = _one_leader(platform, other_than=leader)
    assert successor != leader
    _read_many(base, h, path, 40)
    _eventually(lambda: _sealed(platform), "the new leader's sealer")
    assert _reads_of(platform, patient_id) == reads + 40
    report = platform.audit.verify()
    assert report.ok, report.problems


def test_each_export_job_runs_once_across_processes(
    platform: Platform, two_workers: tuple[str, Path]
) -> None:
    base, _log = two_workers
    platform.institutions.add(
        code="H001", name="海南省人民医院", kind="hospital", region="460106", level=3
    )
    client = platform.clients.add(institution_code="H001", scopes="system/*.cruds")
    assert client.client_secret
    h = bearer_token(base, client.client.client_id, client.client_secret)
    people = []
    for n, name in enumerate(("黎阿妹", "王大明", "陈小红")):
        made = httpx.post(
            f"{base}/fhir/Patient", json=patient(name, sequence=124 + 7 * n), headers=h, timeout=30
        )
        assert made.status_code == 201, made.text
        people.append(made.json()["id"])

    def kick(_: int) -> str:
        kicked = httpx.get(
            f"{base}/fhir/$export?_type=Patient",
            headers=h | ASYNC | {"Connection": "close"},
            timeout=30,
        )
        assert kicked.status_code == 202, kicked.text
        return str(kicked.headers["Content-Location"])

    with ThreadPoolExecutor(6) as pool:
        locations = list(pool.map(kick, range(6)))

    def manifest(location: str) -> dict[str, Any] | None:
        status = httpx.get(location, headers=h, timeout=30)
        assert status.status_code in (200, 202), status.text
        if status.status_code != 200:
            return None
        body: dict[str, Any] = status.json()
        return body

    for location in locations:
        done = _eventually(functools.partial(manifest, location), "the export")
        assert [(o["type"], o["count"]) for o in done["output"]] == [("Patient", 3)]
        job_id = location.rsplit("/", 1)[1]
        # One run audits each exported person once for the job; a second run would again.
        entries = _count(
            platform,
            select(func.count())
            .select_from(audit_events)
            .where(audit_events.c.detail == f"bulk export {job_id}"),
        )
        pending = _count(
            platform,
            select(func.count())
            .select_from(audit_inbox)
            .where(audit_inbox.c.detail == f"bulk export {job_id}"),
        )
        assert entries + pending == 3
    with platform.db.transaction(readonly=True) as conn:
        statuses = conn.execute(select(bulk_export_jobs.c.status)).scalars().all()
    assert sorted(statuses) == ["completed"] * 6


def test_sqlite_serves_from_one_process(settings: Settings) -> None:
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("the SQLite rule")
    refused = subprocess.run(
        [sys.executable, "-m", "healthroam", "serve", "--workers", "2"],
        env=server_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 2
    assert "SQLite storage serves from one process" in refused.stderr
    assert settings.serve_processes == 1
