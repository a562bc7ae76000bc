"""Bulk issuance on SQLite and PostgreSQL: scope, skips, resumability after a crash, no
duplicates, the personalisation file."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from sqlalchemy import func, select

from healthroam.bootstrap import Platform
from healthroam.cards.bulk import CSV_COLUMNS, BulkIssuer
from healthroam.db.tables_cards import card_events, cards
from healthroam.errors import InvalidInput, Unavailable
from processes import descendants, kill_new_workers, within

from .conftest import add_person, principal


class Crash(Exception):
    pass


def counts(platform: Platform) -> tuple[int, int, int]:
    with platform.db.transaction(readonly=True) as conn:
        total = conn.execute(select(func.count()).select_from(cards)).scalar_one()
        people = conn.execute(
            select(func.count(func.distinct(cards.c.master_person_id)))
        ).scalar_one()
        events = conn.execute(select(func.count()).select_from(card_events)).scalar_one()
    return int(total), int(people), int(events)


@pytest.mark.parametrize("workers", [0, 1])
def test_resumes_after_a_crash_without_duplicates(
    keyed: Platform, tmp_path: Path, workers: int
) -> None:
    for i in range(23):
        add_person(keyed, national_id=f"46010619900101{i:04d}")
    issuer = BulkIssuer(keyed.cards, workers=workers, batch_size=5)

    def crash_after_ten(issued: int) -> None:
        if issued >= 10:
            raise Crash

    with pytest.raises(Crash):
        issuer.run(all_=True, after_batch=crash_after_ten)
    partial = counts(keyed)[0]
    assert 10 <= partial < 23
    summary = issuer.run(all_=True, csv_path=tmp_path / "vendor.csv")
    assert summary.resumed is True
    assert summary.issued == 23 - partial
    total, people, events = counts(keyed)
    assert (total, people, events) == (23, 23, 23)
    again = issuer.run(all_=True)  # a finished scope: a new run finds nobody left
    assert (again.resumed, again.issued) == (False, 0)
    assert counts(keyed)[0] == 23
    with (tmp_path / "vendor.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 23  # the run (crashed, then resumed) made all 23: one complete file
    assert all(r["credential"].startswith("HR1:") for r in rows)
    assert all(r["static_code"].startswith("EHCID:S1:") for r in rows)
    assert all("*" in r["masked_id_number"] for r in rows)
    assert (tmp_path / "vendor.csv").stat().st_mode & 0o777 == 0o600
    assert keyed.audit.verify().ok


def test_a_killed_signing_worker_stops_the_run_and_a_rerun_completes(keyed: Platform) -> None:
    for i in range(40):
        add_person(keyed, national_id=f"46010619900102{i:04d}")
    before = set(descendants())
    killed: list[int] = []

    def kill_workers_once(issued: int) -> None:
        if not killed:  # after the first batch commits; at most 3 of 8 batches are in flight
            killed.append(kill_new_workers(before))

    issuer = BulkIssuer(keyed.cards, workers=1, batch_size=5)
    outcome = within(120, lambda: issuer.run(all_=True, after_batch=kill_workers_once))
    assert killed
    assert killed[0] >= 1
    error = outcome.get("error")
    assert isinstance(error, Unavailable), outcome
    assert "run the same command again" in error.detail
    partial, people, events = counts(keyed)
    assert 5 <= partial < 40
    assert (people, events) == (partial, partial)  # whole batches, each with its events
    summary = BulkIssuer(keyed.cards, workers=1, batch_size=5).run(all_=True)
    assert summary.resumed is True
    assert summary.issued == 40 - partial
    assert counts(keyed) == (40, 40, 40)
    assert keyed.audit.verify().ok


def test_region_scope_temporary_cards_and_skips(keyed: Platform) -> None:
    add_person(keyed, region="460106")
    add_person(keyed, region="460202", national_id="46020219900101123X")
    visitor = add_person(
        keyed,
        national_id=None,
        region="460105",
        identifiers=["urn:healthroam:passport|E7654321"],
        name="John Smith",
    )
    add_person(keyed, national_id=None, region="460106")  # no document
    summary = BulkIssuer(keyed.cards, workers=0, batch_size=100).run(region="460100")
    assert summary.issued == 2
    assert dict(summary.skipped_reasons) == {"no-identity-document": 1}
    assert {c.kind.value for c in keyed.cards.list_for(principal(), visitor)} == {"temporary"}
    rest = BulkIssuer(keyed.cards, workers=0).run(all_=True, activate=True)
    assert rest.issued == 1  # only Sanya's resident is left
    with pytest.raises(InvalidInput, match="either a region or --all"):
        BulkIssuer(keyed.cards, workers=0).run()
