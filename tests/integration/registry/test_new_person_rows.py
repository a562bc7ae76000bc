"""The rows a new person's registration writes (RegistryRepository.add_person: one pipeline on
PostgreSQL, separate statements on SQLite) are the same on both backends: the master with its
golden record at version 1, the source record, its blocking keys, the name counts, the
``create`` and ``link`` events in that order and who is told of each."""

from __future__ import annotations

from datetime import date

from sqlalchemy import select

from healthroam.bootstrap import Platform
from healthroam.db.tables_registry import (
    master_persons,
    mpi_blocking_keys,
    mpi_event_recipients,
    mpi_events,
    mpi_name_counts,
    source_records,
)
from healthroam.registry.model import MatchOutcome, SourceKey, SourceRecord
from healthroam.registry.repository import TOTAL
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet

from hl7_helpers import add_hospital

HOSPITAL = "H460100001"
OTHER = "H460100002"


def _principal(institution: str) -> Principal:
    return Principal("his", institution, ScopeSet.parse("system/*.cruds"), end_user="clerk")


def _record(institution: str, local_id: str, fhir_id: str) -> SourceRecord:
    return SourceRecord(
        SourceKey(institution, "urn:mrn", local_id),
        name="黎阿妹",
        sex="female",
        birth_date=date(1961, 3, 9),
        phones=("13907550002",),
        fhir_patient_id=fhir_id,
    )


def test_a_new_person_writes_master_source_keys_counts_and_both_events(
    platform: Platform,
) -> None:
    add_hospital(platform, HOSPITAL, "海口市人民医院")
    registered = platform.registry.register(
        _principal(HOSPITAL), _record(HOSPITAL, "0001", "p-0001")
    )
    assert registered.outcome is MatchOutcome.NEW
    with platform.db.transaction(readonly=True) as conn:
        [master] = conn.execute(select(master_persons)).all()
        [source] = conn.execute(select(source_records)).all()
        keys = conn.execute(select(mpi_blocking_keys)).all()
        counts = dict(conn.execute(select(mpi_name_counts.c.name, mpi_name_counts.c.count)).all())
        events = conn.execute(select(mpi_events).order_by(mpi_events.c.seq)).all()
        told = conn.execute(select(mpi_event_recipients)).all()
    assert master.master_index_id == registered.master_index_id
    assert (master.status, master.merged_into, master.version) == ("active", None, 1)
    assert master.created_at == master.updated_at
    assert (master.name, master.birth_date, master.sex) == (
        "黎阿妹",
        "1961-03-09",
        "2",
    )  # GB/T 2261.1: 2 female
    assert master.golden["name"] == "黎阿妹"
    assert source.id in master.golden["provenance"].values()  # the source as it was stored
    assert (source.master_id, source.link_type, source.local_id) == (master.id, "auto", "0001")
    assert source.data["name"] == "黎阿妹"
    assert source.fhir_patient_id == "p-0001"
    assert len(keys) >= 3  # name, birth date and phone keys at least
    assert {k.source_id for k in keys} == {source.id}
    assert counts == {TOTAL: 1, "黎阿妹": 1}
    assert [e.event_type for e in events] == ["create", "link"]
    create, link = events
    assert (create.master_id, create.source_id) == (master.id, None)
    assert (link.master_id, link.source_id) == (master.id, source.id)
    assert create.institutions == link.institutions == [HOSPITAL]
    assert create.actor_institution == HOSPITAL
    assert create.actor_user == "clerk"
    assert create.detail is None
    assert link.detail == {"outcome": "new", "weight": None}
    assert sorted((r.institution_code, r.seq) for r in told) == [
        (HOSPITAL, create.seq),
        (HOSPITAL, link.seq),
    ]


def test_a_second_new_person_continues_every_sequence_and_count(platform: Platform) -> None:
    """Ids drawn ahead on PostgreSQL still leave the keys in step with later inserts: a
    linked record (plain statements) after two new persons gets fresh ids."""
    add_hospital(platform, HOSPITAL, "海口市人民医院")
    add_hospital(platform, OTHER, "海南省人民医院")
    first = platform.registry.register(_principal(HOSPITAL), _record(HOSPITAL, "0001", "p-1"))
    other = SourceRecord(
        SourceKey(HOSPITAL, "urn:mrn", "0002"),
        name="王大明",
        sex="male",
        birth_date=date(1980, 1, 2),
        fhir_patient_id="p-2",
    )
    second = platform.registry.register(_principal(HOSPITAL), other)
    linked = platform.registry.register(_principal(OTHER), _record(OTHER, "9001", "q-1"))
    assert (first.outcome, second.outcome) == (MatchOutcome.NEW, MatchOutcome.NEW)
    assert linked.master_index_id == first.master_index_id
    assert len({first.source_id, second.source_id, linked.source_id}) == 3
    with platform.db.transaction(readonly=True) as conn:
        counts = dict(conn.execute(select(mpi_name_counts.c.name, mpi_name_counts.c.count)).all())
        events = conn.execute(select(mpi_events).order_by(mpi_events.c.seq)).all()
        masters = conn.execute(select(master_persons).order_by(master_persons.c.id)).all()
    assert counts == {TOTAL: 3, "黎阿妹": 2, "王大明": 1}
    assert [e.event_type for e in events] == ["create", "link", "create", "link", "link"]
    assert events[-1].institutions == [HOSPITAL, OTHER]
    assert [m.version for m in masters] == [2, 1]  # the first person's golden refreshed once
