"""A registration's fixed statements (decision 0060: the link of a new source record to an
existing person in two pipelines, the name frequency as one prepared text; 0043's new person in
one pipeline; PostgreSQL only) store the same rows and give the same answers as the
general path, the SQLAlchemy statements SQLite runs: the same master persons, source records,
blocking keys, name counts, golden records and versions, events, recipients and reviews.

Each test runs one sequence of registrations twice in a transaction that is rolled back: once
as the backend normally does, once with the repository's general path forced; ids (drawn from
sequences that a rollback does not reset) and the random master index ids are compared by
their order. On SQLite both runs take the general path."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, select

from healthroam.bootstrap import Platform
from healthroam.db.tables_registry import (
    master_persons,
    mpi_blocking_keys,
    mpi_event_recipients,
    mpi_events,
    mpi_name_counts,
    mpi_reviews,
    source_records,
)
from healthroam.registry import repository
from healthroam.registry.model import MatchOutcome, SourceKey, SourceRecord
from healthroam.registry.normalize import normalize_record
from healthroam.registry.repository import RegistryRepository
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet

from hl7_helpers import add_hospital

HOSPITALS = ("H460100001", "H460100002", "H460100003")
NOW = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
ID = {"national_id": "460106199001011239"}


class _RolledBack(Exception):
    pass


def _principal(institution: str) -> Principal:
    return Principal("his", institution, ScopeSet.parse("system/*.cruds"), end_user="clerk")


def _record(institution: str, local_id: str, **fields: Any) -> SourceRecord:
    values: dict[str, Any] = {
        "name": "黎阿妹",
        "sex": "female",
        "birth_date": date(1961, 3, 9),
        "phones": ("13907550002",),
        "address": "海南省海口市龙华区滨海大道 32 号",
        "fhir_patient_id": f"p-{institution}-{local_id}",
    }
    values.update(fields)
    return SourceRecord(SourceKey(institution, "urn:mrn", local_id), **values)


# (hospital index, local id, fields)
SEQUENCE: tuple[tuple[int, str, dict[str, Any]], ...] = (
    (0, "0001", {}),  # a new person
    (1, "9001", {}),  # the same person at another hospital: linked
    (0, "0002", {"name": "王大明", "sex": "male", "birth_date": date(1980, 1, 2)}),
    (2, "7001", {"phones": ("13907550003",)}),  # linked again: 3 sources
    (1, "9002", {"name": "王大明", "sex": "male", "birth_date": date(1980, 1, 2)}),
    (2, "7002", {"name": "黎阿妹", "birth_date": date(1961, 3, 19), "phones": ()}),
    (0, "0001", {}),  # the stored record again: unchanged
    (0, "0003", {"name": "黎亚妹", "phones": ("13907550002",)}),
    # one national ID, birth date and sex both differing: a new person sent to stewards
    (1, "9005", {"name": "符海生", "sex": "male", "birth_date": date(1990, 1, 1), **ID}),
    (2, "7005", {"name": "符海生", "birth_date": date(1991, 5, 2), "phones": (), **ID}),
)


def _snapshot(conn: Connection, answers: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Every registry row, ids and master index ids replaced by their rank in their table."""
    masters = conn.execute(select(master_persons).order_by(master_persons.c.id)).all()
    sources = conn.execute(select(source_records).order_by(source_records.c.id)).all()
    events = conn.execute(select(mpi_events).order_by(mpi_events.c.seq)).all()
    master_rank = {m.id: n for n, m in enumerate(masters)}
    mii_rank = {m.master_index_id: n for n, m in enumerate(masters)}
    source_rank = {s.id: n for n, s in enumerate(sources)}
    seq_rank = {e.seq: n for n, e in enumerate(events)}

    def golden(document: dict[str, Any]) -> dict[str, Any]:
        provenance = {k: source_rank[v] for k, v in document.get("provenance", {}).items()}
        return {**document, "provenance": provenance}

    reviews = conn.execute(select(mpi_reviews).order_by(mpi_reviews.c.id)).all()
    return {
        "answers": [
            (outcome, mii_rank[mii], source_rank[source], weight, opened, warnings)
            for outcome, mii, source, weight, opened, warnings in answers
        ],
        "masters": [
            (
                m.status,
                master_rank.get(m.merged_into),
                golden(m.golden),
                m.name,
                m.birth_date,
                m.sex,
                m.version,
                m.created_at,
                m.updated_at,
            )
            for m in masters
        ],
        "sources": [
            (
                s.institution_code,
                s.id_system,
                s.local_id,
                master_rank[s.master_id],
                s.link_type,
                s.data,
                s.normalized,
                s.content_hash,
                s.fhir_patient_id,
                s.created_at,
                s.updated_at,
            )
            for s in sources
        ],
        "keys": sorted(
            (k.key, source_rank[k.source_id]) for k in conn.execute(select(mpi_blocking_keys))
        ),
        "names": sorted(
            conn.execute(select(mpi_name_counts.c.name, mpi_name_counts.c.count)).all()
        ),
        "events": [
            (
                e.position,
                e.occurred_at,
                e.event_type,
                master_rank[e.master_id],
                master_rank.get(e.other_master_id),
                source_rank.get(e.source_id),
                e.actor_institution,
                e.actor_user,
                e.actor_client,
                e.reason,
                e.institutions,
                e.detail,
            )
            for e in events
        ],
        "recipients": sorted(
            (r.institution_code, seq_rank[r.seq])
            for r in conn.execute(select(mpi_event_recipients))
        ),
        "reviews": [
            (
                source_rank[r.source_id],
                source_rank[r.candidate_source_id],
                r.weight,
                r.details,
                r.status,
                r.created_at,
            )
            for r in reviews
        ],
    }


def _run(platform: Platform) -> dict[str, Any]:
    registry = platform.registry
    found: dict[str, Any] = {}
    answers: list[tuple[Any, ...]] = []
    try:
        with platform.db.transaction() as conn:
            for hospital, local_id, fields in SEQUENCE:
                record = _record(HOSPITALS[hospital], local_id, **fields)
                result = registry.register_in(
                    conn, _principal(record.key.institution), record, normalize_record(record),
                    audit=False,
                )  # fmt: skip
                answers.append(
                    (
                        result.outcome,
                        result.master_index_id,
                        result.source_id,
                        result.weight,
                        result.reviews,
                        result.warnings,
                    )
                )
            found.update(_snapshot(conn, answers))
            raise _RolledBack
    except _RolledBack:
        pass
    return found


def test_fixed_statements_store_what_the_general_path_stores(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    for code in HOSPITALS:
        add_hospital(platform, code, f"医院 {code}")
    monkeypatch.setattr(platform.registry, "clock", lambda: NOW)
    fixed = _run(platform)
    with monkeypatch.context() as general:
        # Every repository method takes its SQLAlchemy statements, as on SQLite.
        general.setattr(repository, "is_postgres", lambda conn: False)
        plain = _run(platform)
    new, linked, same, review = (
        MatchOutcome.NEW,
        MatchOutcome.LINKED,
        MatchOutcome.UNCHANGED,
        MatchOutcome.REVIEW,
    )
    assert [answer[0] for answer in fixed["answers"]] == [
        *(new, linked, new, linked, linked, linked, same, linked, new, review)
    ]
    assert [m[6] for m in fixed["masters"]] == [5, 2, 1, 1]  # golden refreshed at each link
    assert len(fixed["reviews"]) == 1
    assert fixed == plain


def test_a_linked_record_refreshes_the_golden_record_and_tells_every_holder(
    platform: Platform,
) -> None:
    """What a link writes, read back: the person's sources, its golden record with the new
    source's provenance, one link event told to every institution holding a record."""
    for code in HOSPITALS[:2]:
        add_hospital(platform, code, f"医院 {code}")
    first = platform.registry.register(_principal(HOSPITALS[0]), _record(HOSPITALS[0], "0001"))
    linked = platform.registry.register(
        _principal(HOSPITALS[1]), _record(HOSPITALS[1], "9001", phones=("13907550009",))
    )
    assert linked.outcome is MatchOutcome.LINKED
    assert linked.master_index_id == first.master_index_id
    with platform.db.transaction(readonly=True) as conn:
        repo = RegistryRepository(conn)
        [master] = conn.execute(select(master_persons)).all()
        sources = repo.sources_of([master.id])
        events = conn.execute(select(mpi_events).order_by(mpi_events.c.seq)).all()
        told = conn.execute(select(mpi_event_recipients)).all()
    assert [s.id for s in sources] == [first.source_id, linked.source_id]
    assert master.version == 2
    assert master.golden["sources"] == 2
    assert linked.source_id in master.golden["provenance"].values()  # the later phone
    assert [e.event_type for e in events] == ["create", "link", "link"]
    link = events[-1]
    assert (link.master_id, link.source_id) == (master.id, linked.source_id)
    assert link.institutions == sorted(HOSPITALS[:2])
    assert link.detail["outcome"] == "linked"
    assert sorted(r.institution_code for r in told if r.seq == link.seq) == sorted(HOSPITALS[:2])


def test_a_link_sends_eight_statements_on_postgresql(platform: Platform) -> None:
    """A link on PostgreSQL: the institution and stored record, the candidates, the name's
    frequency, then two pipelines - the source with its keys, the name counts, the person's
    sources; the golden record, the event with its recipients (twelve statements before
    decision 0060, each its own round trip)."""
    if platform.db.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's fixed statements; SQLite runs the general path")
    for code in HOSPITALS[:2]:
        add_hospital(platform, code, f"医院 {code}")
    platform.registry.register(_principal(HOSPITALS[0]), _record(HOSPITALS[0], "0001"))
    seen: list[str] = []

    class Counting(psycopg.Cursor[Any]):
        def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(str(query))
            return super().execute(query, *args, **kwargs)

        def executemany(self, query: Any, *args: Any, **kwargs: Any) -> None:
            seen.append(str(query))
            super().executemany(query, *args, **kwargs)

    with platform.db.transaction() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        raw.cursor_factory = Counting
        try:
            record = _record(HOSPITALS[1], "9001")
            linked = platform.registry.register_in(
                conn, _principal(HOSPITALS[1]), record, normalize_record(record), audit=False
            )
        finally:
            raw.cursor_factory = psycopg.Cursor
    assert linked.outcome is MatchOutcome.LINKED
    assert len(seen) == 8, seen
