"""Shared fixtures: the same tests run on SQLite and on PostgreSQL (a fresh database per run).

``HEALTHROAM_TEST_BACKENDS`` chooses backends (default ``sqlite,postgresql``);
``HEALTHROAM_TEST_POSTGRES_URL`` is the server's maintenance database URL. A backend that was
asked for and cannot be reached fails the run; it is never skipped silently.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from healthroam.bootstrap import Platform, build
from healthroam.config import Settings
from healthroam.db.engine import create_database_engine
from healthroam.db.migrate import upgrade
from healthroam.db.schema import metadata

# Property tests assert behaviour, never speed: Hypothesis's per-example deadline (200 ms) is a
# timing assertion that fails on a loaded machine (it did, on a 2-core host at load 10).
hypothesis_settings.register_profile("healthroam", deadline=None)
hypothesis_settings.load_profile("healthroam")

BACKENDS = [
    b.strip()
    for b in os.environ.get("HEALTHROAM_TEST_BACKENDS", "sqlite,postgresql").split(",")
    if b.strip()
]
POSTGRES_ADMIN_URL = os.environ.get(
    "HEALTHROAM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _create_postgres_database() -> tuple[str, str]:
    name = f"healthroam_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name, make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(
        hide_password=False
    )


def _drop_postgres_database(name: str) -> None:
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def migrated_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One migrated database per backend for the whole run (per xdist worker)."""
    urls: dict[str, str] = {}
    created: list[str] = []
    for backend in BACKENDS:
        if backend == "sqlite":
            path = tmp_path_factory.mktemp("sqlite") / "healthroam.db"
            urls[backend] = f"sqlite:///{path}"
        elif backend == "postgresql":
            name, url = _create_postgres_database()
            created.append(name)
            urls[backend] = url
        else:
            raise pytest.UsageError(f"unknown backend {backend}")
        engine = create_database_engine(urls[backend])
        upgrade(engine)
        engine.dispose()
    yield urls
    for name in created:
        _drop_postgres_database(name)


@pytest.fixture(params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, migrated_databases: dict[str, str]
) -> Iterator[str]:
    """A migrated, empty database of each backend in turn; emptied again after the test."""
    url = migrated_databases[request.param]
    yield url
    engine = create_database_engine(url)
    with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
    engine.dispose()


@pytest.fixture(scope="session")
def signing_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys") / "token-signing.pem"


@pytest.fixture
def settings(database_url: str, tmp_path: Path, signing_key_file: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path,
        token_signing_key_file=signing_key_file,
        public_base_url="http://testserver",
        audit_seal_interval_ms=0,  # tests seal explicitly; the e2e server runs the sealer
    )


@pytest.fixture
def platform(settings: Settings) -> Iterator[Platform]:
    the_platform = build(settings)
    yield the_platform
    the_platform.close()
