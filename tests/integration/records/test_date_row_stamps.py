"""Every writer of date index rows stamps them with their resource's lastUpdated (decision
0059): a short date window's page is ordered by that copy, so a writer that forgot it (the
column is NOT NULL: the write fails) or wrote another time (the page's order and its cursor
would be wrong) fails here. Each write path is followed by the same checks: every date row's
stamp equals its resource's ``lastUpdated``, and the window's pages (read from the date rows)
are the general statement's (``_sort=_lastUpdated``), in order, page after page. The write
paths: create, update and delete through HTTP, transaction and batch Bundles (their rows
written together at the end, decision 0058), the deferred rows of the HL7 gateway's group
commit (decision 0037; SQLite defers nothing) and bulk ``$import`` (both import paths are
compared in test_bulk_import_parallel)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import and_, func, inspect, select

from healthroam.bootstrap import Platform
from healthroam.db.migrate import alembic_config, upgrade
from healthroam.db.schema import fhir_resources
from healthroam.db.tables_records import fhir_idx_date
from healthroam.records.bulk_import import BulkImporter
from healthroam.records.deferred import deferring
from healthroam.records.repository import ResourceRepository, _page_window
from healthroam.records.search import parse_search
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet

from helpers import Province

ALL = "system/*.cruds"
WEEK = datetime(2020, 6, 1, tzinfo=UTC)
WINDOW = [("date", "ge2020-06-01"), ("date", "lt2020-06-08")]
AGENCY = Principal(
    client_id="t:stamps", institution_code="HCP", scopes=ScopeSet.parse("system/*.cruds")
)


def _encounter(n: int, rid: str | None = None) -> dict[str, Any]:
    """Visits in and around the week (one long stay, one open-ended)."""
    start = WEEK - timedelta(days=3) + timedelta(hours=9 * n)
    period: dict[str, str] = {"start": start.isoformat()}
    if n % 7 == 3:
        period["end"] = (start + timedelta(days=40)).isoformat()  # long
    elif n % 7 != 5:
        period["end"] = (start + timedelta(hours=2)).isoformat()  # short; n % 7 == 5: open
    body: dict[str, Any] = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "period": period,
    }
    if rid is not None:
        body["id"] = rid
    return body


def _stamps(platform: Platform) -> int:
    """Asserts every date row's stamp is its resource's lastUpdated; the number of rows."""
    d, r = fhir_idx_date.c, fhir_resources.c
    with platform.db.transaction(readonly=True) as conn:
        rows = conn.execute(
            select(d.resource_id, d.last_updated, r.last_updated, r.deleted).join_from(
                fhir_idx_date,
                fhir_resources,
                and_(r.resource_type == d.resource_type, r.id == d.resource_id),
                isouter=True,
            )
        ).all()
        stored = conn.execute(select(func.count()).select_from(fhir_idx_date)).scalar_one()
    assert len(rows) == stored
    wrong = [row for row in rows if row[2] is None or row[3] or row[1] != row[2]]
    assert not wrong, wrong
    return len(rows)


def _ids(http: TestClient, headers: dict[str, str], query: str) -> list[str]:
    """Every match's id, following the next links."""
    ids: list[str] = []
    url: str | None = f"/fhir/Encounter?{query}"
    while url is not None:
        r = http.get(url, headers=headers)
        assert r.status_code == 200, r.text
        page = r.json()
        ids += [e["resource"]["id"] for e in page.get("entry", [])]
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
        if url is not None:
            url = url[url.index("/fhir/") :]
    return ids


def _pages_agree(http: TestClient, headers: dict[str, str], least: int) -> list[str]:
    assert _page_window(parse_search("Encounter", WINDOW).clauses) is not None
    query = "&".join(f"{k}={v}" for k, v in WINDOW)
    found = _ids(http, headers, f"{query}&_count=3")
    assert found == _ids(http, headers, f"{query}&_sort=_lastUpdated&_count=500")
    assert len(found) == len(set(found)) >= least
    return found


def test_http_writes_and_bundles_stamp_the_date_rows(
    http: TestClient, province: Province, platform: Platform
) -> None:
    h = province.headers(ALL)
    made = []
    for n in range(12):
        r = http.post("/fhir/Encounter", json=_encounter(n), headers=h)
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])
    for kind in ("transaction", "batch"):
        entries = [
            {"resource": _encounter(n), "request": {"method": "POST", "url": "Encounter"}}
            for n in range(12, 20)
        ] + [
            {
                "resource": _encounter(n, f"{kind}-{n}"),
                "request": {"method": "PUT", "url": f"Encounter/{kind}-{n}"},
            }
            for n in range(20, 24)
        ]
        bundle = {"resourceType": "Bundle", "type": kind, "entry": entries}
        r = http.post("/fhir", json=bundle, headers=h)
        assert r.status_code == 200, r.text
    assert _stamps(platform) == 12 + 2 * 12
    before = _pages_agree(http, h, 10)
    # An update moves a match to the end of the order; a deletion takes it out.
    moved = next(rid for rid in made if rid in before[:3])
    r = http.put(f"/fhir/Encounter/{moved}", json=_encounter(9, moved), headers=h)
    assert r.status_code == 200, r.text
    gone = next(rid for rid in before if rid != moved)
    assert http.delete(f"/fhir/Encounter/{gone}", headers=h).status_code in (200, 204)
    # An update inside a transaction too.
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": _encounter(8, "transaction-20"),
                "request": {"method": "PUT", "url": "Encounter/transaction-20"},
            }
        ],
    }
    assert http.post("/fhir", json=bundle, headers=h).status_code == 200
    assert _stamps(platform) == 12 + 2 * 12 - 1
    after = _pages_agree(http, h, 10)
    assert after[-2:] == [moved, "transaction-20"]
    assert gone not in after


def test_deferred_rows_stamp_the_date_rows(
    http: TestClient, province: Province, platform: Platform
) -> None:
    """The HL7 gateway's group commit: the index rows written at the flush."""
    h = province.headers(ALL)
    now = datetime.now(UTC)
    with platform.db.transaction() as conn, deferring(conn):
        repo = ResourceRepository(conn)
        repo.create_many(
            [("Encounter", f"hl7-{n}", _encounter(n)) for n in range(10)], now, None, "PUT"
        )
        current = repo.current("Encounter", "hl7-2", lock=True)
        repo.replace(current, _encounter(3), now + timedelta(seconds=1), "PUT")
        current = repo.current("Encounter", "hl7-4", lock=True)
        repo.replace(current, None, now + timedelta(seconds=2), "DELETE")
    assert _stamps(platform) == 9
    found = _pages_agree(http, h, 5)
    assert found[-1] == "hl7-2"


def test_bulk_import_stamps_the_date_rows(
    http: TestClient, province: Province, platform: Platform
) -> None:
    h = province.headers(ALL)
    platform.institutions.add(code="HCP", name="卫健委", kind="agency", region="460106")
    importer = BulkImporter(platform.db, platform.audit, platform.records, chunk_size=4)
    try:
        report = importer.import_lines(
            AGENCY,
            [json.dumps(_encounter(n, f"imp-{n}")).encode() for n in range(14)],
        )
    finally:
        importer.close()
    assert (report.created, report.failed) == (14, 0)
    assert _stamps(platform) == 14
    _pages_agree(http, h, 8)


def test_the_migration_stamps_date_rows_stored_before_it(
    http: TestClient, province: Province, platform: Platform
) -> None:
    """0013_datesort down and up again over stored resources (one updated, one deleted):
    every date row gets its resource's lastUpdated, and the window's pages are the general
    statement's."""
    h = province.headers(ALL)
    made = []
    for n in range(16):
        r = http.post("/fhir/Encounter", json=_encounter(n), headers=h)
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])
    r = http.put(f"/fhir/Encounter/{made[9]}", json=_encounter(10, made[9]), headers=h)
    assert r.status_code == 200, r.text
    assert http.delete(f"/fhir/Encounter/{made[11]}", headers=h).status_code in (200, 204)
    engine = platform.db.engine
    try:
        command.downgrade(alembic_config(engine), "0013_datesort-1")
        with engine.connect() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("fhir_idx_date")}
            indexes = {i["name"] for i in inspect(conn).get_indexes("fhir_idx_date")}
        assert "last_updated" not in columns
        assert "ix_fhir_idx_date_span" in indexes
    finally:
        upgrade(engine)
    with engine.connect() as conn:
        indexes = {i["name"] for i in inspect(conn).get_indexes("fhir_idx_date")}
    assert "ix_fhir_idx_date_span_updated" in indexes
    assert "ix_fhir_idx_date_span" not in indexes
    assert _stamps(platform) == 15
    found = _pages_agree(http, h, 8)
    assert found[-1] == made[9]
    assert made[11] not in found
