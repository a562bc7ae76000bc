"""``fhir_resources.body_tail`` (decision 0055): reads, search pages and `$everything` serve
the JSON text the database stored with each row; every answer is the one the old read path
gave, which wrote the document as text at every read (``(content - 'meta')::text`` on
PostgreSQL, ``json_remove(content, '$.meta')`` on SQLite). The migration fills the text of the
rows a store already has."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import Connection, String, create_engine, literal_column, select, text

from healthroam.bootstrap import Platform
from healthroam.db.engine import create_database_engine
from healthroam.db.migrate import alembic_config, upgrade
from healthroam.db.schema import fhir_resources
from healthroam.records.everything import everything
from healthroam.records.model import StoredResource
from healthroam.records.repository import ResourceRepository
from healthroam.records.searchset import entry_json
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet

from helpers import Province, make_patient, post_created

ALL = "system/*.cruds"
POSTGRES_ADMIN_URL = os.environ.get(
    "HEALTHROAM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)

# The old read path's body text (before decision 0055), per backend.
_OLD_BODY = {
    "postgresql": "CASE WHEN deleted THEN NULL ELSE (content - 'meta')::text END",
    "sqlite": "CASE WHEN deleted THEN NULL ELSE json_remove(content, '$.meta') END",
}
_OLD_META = {
    "postgresql": "(content -> 'meta')::text",
    "sqlite": "json_extract(content, '$.meta')",
}


def _old_rows(conn: Connection) -> dict[tuple[str, str], Any]:
    dialect = conn.dialect.name
    r = fhir_resources.c
    rows = conn.execute(
        select(
            r.resource_type,
            r.id,
            r.version,
            r.last_updated,
            r.deleted,
            r.institution_code,
            literal_column(_OLD_BODY[dialect], String()).label("body"),
            literal_column(_OLD_META[dialect], String()).label("meta"),
            r.body_tail,
        )
    ).all()
    return {(row.resource_type, row.id): row for row in rows}


def _old_stored(row: Any) -> StoredResource:
    """The resource as the old read path built it from the database's text."""
    return StoredResource(
        row.resource_type,
        row.id,
        row.version,
        row.last_updated,
        None,
        row.institution_code,
        raw=row.body,
        meta=json.loads(row.meta) if row.meta else None,
    )


def _observation(pid: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}], "text": "心率"},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": "2024-03-01",
        **extra,
    }


def test_every_answer_is_the_text_the_old_read_path_served(
    platform: Platform, province: Province, http: TestClient
) -> None:
    h = province.headers(ALL)
    pid = make_patient(http, h)
    bare = post_created(http, h, {"resourceType": "Organization"})  # stored body: {}
    named = post_created(http, h, {"resourceType": "Organization", "name": '琼海 "Clinic" \\'})
    plain = post_created(http, h, _observation(pid, valueQuantity={"value": 72.50, "unit": "/min"}))
    tagged = post_created(
        http,
        h,
        _observation(
            pid,
            meta={"tag": [{"system": "urn:t", "code": "x"}], "profile": ["urn:p"]},
            note=[{"text": '引号 " and \\ 斜杠\n\ttab \u2028 😀'}],
            performer=[{"reference": f"Organization/{named['id']}"}],
        ),
    )
    # Versions: meta added, meta removed, a deletion.
    later = post_created(http, h, _observation(pid, valueString="é ü ß"))
    changed = http.put(
        f"/fhir/Observation/{later['id']}",
        headers=h,
        json=_observation(pid, id=later["id"], meta={"source": "urn:src"}),
    )
    assert changed.status_code == 200, changed.text
    unmeta = http.put(
        f"/fhir/Observation/{tagged['id']}",
        headers=h,
        json=_observation(pid, id=tagged["id"], performer=[{"reference": "Organization/x"}]),
    )
    assert unmeta.status_code == 200, unmeta.text
    gone = post_created(http, h, _observation(pid))
    assert http.delete(f"/fhir/Observation/{gone['id']}", headers=h).status_code in (200, 204)
    # Many at once (PostgreSQL: by COPY).
    with platform.db.transaction() as conn:
        repo = ResourceRepository(conn)
        ours = repo.current("Observation", plain["id"]).institution_code
        many = repo.create_many(
            [
                ("Observation", f"many-{n}", _observation(pid, valueInteger=n, id=f"many-{n}"))
                for n in range(60)
            ],
            datetime.now(UTC),
            ours,
        )
    assert len(many) == 60

    with platform.db.transaction() as conn:
        old = _old_rows(conn)
    assert len(old) == 1 + 2 + 4 + 60  # Patient, 2 Organizations, 4 Observations, 60
    for key, row in old.items():
        if row.deleted:
            assert row.body_tail is None, key
            continue
        # The stored text is the old text, byte for byte, after its opening brace.
        assert "{" + row.body_tail == row.body, key
        served = http.get(f"/fhir/{key[0]}/{key[1]}", headers=h)
        assert served.status_code == 200, served.text
        assert served.text == _old_stored(row).served_json(), key
    assert http.get(f"/fhir/Observation/{gone['id']}", headers=h).status_code == 410
    # The documents are the ones sent.
    read = http.get(f"/fhir/Organization/{named['id']}", headers=h).json()
    assert read["name"] == '琼海 "Clinic" \\'
    assert http.get(f"/fhir/Organization/{bare['id']}", headers=h).json()["meta"]["versionId"]
    source = http.get(f"/fhir/Observation/{later['id']}", headers=h).json()["meta"]["source"]
    assert source == "urn:src"
    plain_meta = http.get(f"/fhir/Observation/{plain['id']}", headers=h).json()["meta"]
    assert set(plain_meta) == {"versionId", "lastUpdated"}

    # A search page: the old texts, in the page's order.
    page = http.get(f"/fhir/Observation?subject=Patient/{pid}&_count=100", headers=h)
    assert page.status_code == 200
    entries = page.json()["entry"]
    assert len(entries) == 4 + 60 - 1  # the deleted one is not found
    for entry in entries:
        resource = entry["resource"]
        row = old[(resource["resourceType"], resource["id"])]
        assert json.dumps(resource) == json.dumps(json.loads(_old_stored(row).served_json()))
    assert f'"resource":{_old_stored(old[("Observation", plain["id"])]).served_json()}' in (
        page.text
    )

    # $everything: every entry is the old path's entry, byte for byte.
    base = "http://testserver/fhir"
    principal = Principal(client_id="t", institution_code="H901", scopes=ScopeSet.parse(ALL))
    result = everything(
        platform.db, platform.audit, principal, [pid], audit_refs=[f"Patient/{pid}"], base=base
    )
    # The Patient and the live Observations (none refers to an Organization any more).
    assert result.total == len(result.entries) == 1 + 3 + 60
    for entry in result.entries:
        resource = json.loads(entry)["resource"]
        row = old[(resource["resourceType"], resource["id"])]
        text = entry.decode() if isinstance(entry, bytes) else entry
        assert text == entry_json(_old_stored(row), base, "match", None)


def _fresh_database(backend: str, tmp_path: Path) -> tuple[str, str | None]:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'old-store.db'}", None
    name = f"healthroam_test_bodytail_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}", name


def test_the_migration_fills_the_text_of_existing_rows(database_url: str, tmp_path: Path) -> None:
    backend = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    url, name = _fresh_database(backend, tmp_path)
    engine = create_database_engine(url)
    try:
        upgrade(engine)
        config = alembic_config(engine)
        command.downgrade(config, "bodytail@-1")  # a store from before the column
        with engine.begin() as conn:
            columns = {
                row[0] if backend == "postgresql" else row[1]
                for row in conn.execute(
                    text(
                        "SELECT column_name FROM information_schema.columns "
                        "WHERE table_name = 'fhir_resources'"
                        if backend == "postgresql"
                        else "PRAGMA table_xinfo(fhir_resources)"
                    )
                )
            }
            assert "body_tail" not in columns
            documents: dict[str, dict[str, Any] | None] = {
                "a": {"status": "final", "code": {"text": "血压"}, "valueInteger": 1},
                "b": {"meta": {"tag": [{"code": "x"}]}, "text": 'q " \\ \n'},
                "c": {},
                "d": None,  # a deletion
            }
            cast = "CAST(:content AS jsonb)" if backend == "postgresql" else ":content"
            for rid, document in documents.items():
                conn.execute(
                    text(
                        "INSERT INTO fhir_resources (resource_type, id, version, last_updated,"
                        " deleted, institution_code, content) VALUES ('Basic', :id, 1, :now,"
                        f" :deleted, NULL, {cast})"
                    ),
                    {
                        "id": rid,
                        "now": datetime(2026, 12, 1, tzinfo=UTC),
                        "deleted": document is None,
                        "content": None if document is None else json.dumps(document),
                    },
                )
        upgrade(engine)
        with engine.begin() as conn:
            old = _old_rows(conn)
        assert old[("Basic", "d")].body_tail is None
        for rid in "abc":
            row = old[("Basic", rid)]
            assert "{" + row.body_tail == row.body
            assert json.loads(row.body) == {
                k: v for k, v in (documents[rid] or {}).items() if k != "meta"
            }
        assert old[("Basic", "c")].body_tail == "}"
    finally:
        engine.dispose()
        if name is not None:
            admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
