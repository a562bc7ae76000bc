"""Helpers the benchmark scripts share: fresh databases, a server on a free port and the wait
for it, CPU seconds of processes (Linux /proc), and setup data more than one script loads.

The scripts run as ``python bench/NAME.py``, which puts this folder on ``sys.path``: they
``import benchlib``.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
from sqlalchemy import Connection, create_engine, insert, text
from sqlalchemy.engine import make_url

from healthroam.bootstrap import Platform, build
from healthroam.config import Settings
from healthroam.db.engine import create_database_engine
from healthroam.db.migrate import upgrade
from healthroam.db.tables_registry import master_persons

# The PostgreSQL server the benchmarks create their databases on (the tests' variable).
ADMIN = os.environ.get(
    "HEALTHROAM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- databases ----------------------------------------------------------------------------


def create_database() -> tuple[str, str]:
    """A new empty PostgreSQL database on ADMIN's server: its name and URL."""
    # HEALTHROAM_BENCH_DB_PREFIX: whose runs these are, on a server shared by several people
    prefix = os.environ.get("HEALTHROAM_BENCH_DB_PREFIX", "healthroam_bench")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name, make_url(ADMIN).set(database=name).render_as_string(hide_password=False)


def drop_database(name: str) -> None:
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@contextmanager
def temporary_database(postgres: bool, folder: Path) -> Iterator[tuple[str, str]]:
    """Name and URL of an empty database for one run: a PostgreSQL one (created, and dropped
    afterwards) or the SQLite file ``folder/bench.db`` (name "")."""
    if not postgres:
        yield "", f"sqlite:///{folder / 'bench.db'}"
        return
    name, url = create_database()
    try:
        yield name, url
    finally:
        drop_database(name)


@contextmanager
def work_folder(prefix: str) -> Iterator[Path]:
    """A new folder under the system's temporary folder for one run, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def recreate_database(url: str) -> None:
    """Empty the database at ``url``, which later runs may reuse: an SQLite file is removed, a
    PostgreSQL database dropped and created again."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        Path(parsed.database or "").unlink(missing_ok=True)
        return
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the newest schema."""
    engine = create_database_engine(url)
    upgrade(engine)
    engine.dispose()


# -- servers ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def server_env(**settings: str) -> dict[str, str]:
    """This process's environment without its HEALTHROAM_* variables, plus ``settings``: the
    server gets only the settings the benchmark chose."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHROAM_")}
    env.update(settings)
    return env


def wait_ready(
    url: str, process: subprocess.Popen[bytes], seconds: float = 60, log: Path | None = None
) -> None:
    """Return once ``url`` answers 200. If the process ends first or ``seconds`` pass, stop
    it and exit with its log (or a line saying so)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop_process(process)
    said = log.read_text() if log else ""
    # An empty log said nothing: a loaded host can take longer than ``seconds`` to start.
    raise SystemExit(said or f"the server did not answer {url} within {seconds:.0f} s")


def stop_process(process: subprocess.Popen[bytes], seconds: float = 10) -> None:
    """SIGTERM, and SIGKILL if it has not ended within ``seconds``."""
    process.terminate()
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# -- CPU seconds --------------------------------------------------------------------------
# On a shared machine CPU seconds per unit of work are steadier than wall-clock rates.


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (Linux /proc), 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (uvicorn --workers, gateway --processes)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def with_children(pid: int) -> list[int]:
    """``pid`` and all its descendants: uvicorn's or the gateway's worker processes, and the
    import's worker processes, which are children of a forkserver under the server."""
    found, frontier = [pid], [pid]
    while frontier:
        children = [c for p in frontier for c in child_pids(p)]
        found.extend(children)
        frontier = children
    return found


def backend_pids(database: str, conn: Connection | None = None) -> list[int]:
    """PostgreSQL backend processes connected to ``database`` (none for "", SQLite), asked
    over ``conn`` (to any database of that server) or over a new connection to ADMIN."""
    if not database:
        return []
    if conn is None:
        admin = create_engine(ADMIN)
        try:
            with admin.connect() as new:
                return backend_pids(database, new)
        finally:
            admin.dispose()
    pids = conn.execute(
        text("SELECT pid FROM pg_stat_activity WHERE datname = :d"), {"d": database}
    ).scalars()
    return [int(p) for p in pids]


def cpu_of(pids: list[int]) -> dict[int, float]:
    return {pid: cpu_seconds(pid) for pid in pids}


def cpu_spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two ``cpu_of`` samples; processes that ended meanwhile are missed,
    new ones count in full."""
    return sum(v - before.get(p, 0.0) for p, v in after.items())


# -- setup data ---------------------------------------------------------------------------


def load_people(settings: Settings, people: int) -> None:
    """``people`` active master persons straight into the registry table (cards to issue)."""
    platform = build(settings)
    now = datetime.now(UTC)
    regions = ("460106", "460105", "460108", "460202", "469001")
    with platform.db.transaction() as conn:
        for start in range(0, people, 20_000):
            rows = [
                {
                    "master_index_id": secrets.token_hex(32).upper(),
                    "status": "active",
                    "golden": {
                        "name": "张三丰" if i % 2 else "李小龙",
                        "sex": "1" if i % 2 else "2",
                        "birth_date": "1985-06-15",
                        "national_id": f"{regions[i % 5]}1985{i:08d}"[:17] + "X",
                        "region": regions[i % 5],
                    },
                    "version": 1,
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(start, min(start + 20_000, people))
            ]
            conn.execute(insert(master_persons), rows)
    platform.close()


def hospital_token(platform: Platform, code: str, name: str, scopes: str) -> str:
    """An access token (client credentials, granted in process) for a new API client of a
    new level-3 hospital."""
    platform.institutions.add(code=code, name=name, kind="hospital", region="460106", level=3)
    client = platform.clients.add(institution_code=code, scopes=scopes)
    grant = platform.auth.grant(
        grant_type="client_credentials",
        scope=None,
        basic=(client.client.client_id, client.client_secret or ""),
        assertion_type=None,
        assertion=None,
    )
    return grant.access_token


def fhir_search_paths(
    observations: list[str], patients: list[str], rng: random.Random, n: int = 2000
) -> dict[str, list[str]]:
    """Typical reads and searches with their parameters drawn from the loaded data."""
    loinc = ["718-7", "6690-2", "14647-2", "14749-6", "4548-4", "1742-6", "8867-4"]
    icd = ["I10", "E11.9", "J06.9", "K29.7", "M54.5", "J18.9", "E78.5", "B18.1"]
    days = [date.fromordinal(date(2015, 1, 1).toordinal() + i) for i in range(0, 4300, 7)]
    return {
        "read Observation/<id>": [f"/fhir/Observation/{rng.choice(observations)}"
                                  for _ in range(n)],
        "Observation?subject=&code=": [
            f"/fhir/Observation?subject=Patient/{rng.choice(patients)}"
            f"&code=http://loinc.org|{rng.choice(loinc)}" for _ in range(n)
        ],
        "Encounter?date=ge&date=lt (a week)": [
            f"/fhir/Encounter?date=ge{d.isoformat()}&date=lt"
            f"{date.fromordinal(d.toordinal() + 7).isoformat()}"
            for d in (rng.choice(days) for _ in range(n))
        ],
        "Condition?code=": [
            f"/fhir/Condition?code=http://hl7.org/fhir/sid/icd-10|{rng.choice(icd)}"
            for _ in range(n)
        ],
    }  # fmt: skip
