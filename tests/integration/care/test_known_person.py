"""The care gate given the person's registry rows as result recognition read them
(``KnownPerson``) decides on the same person as when it reads them itself, and ignores rows of
another person."""

from __future__ import annotations

from datetime import date

from healthroam.bootstrap import Platform
from healthroam.exchange.care.repository import CareRepository
from healthroam.registry.model import SourceKey, SourceRecord
from healthroam.registry.repository import KnownPerson, RegistryRepository
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet

from hl7_helpers import add_hospital

HOSPITAL = "H460100001"


def _register(platform: Platform, local_id: str, name: str, born: date) -> str:
    principal = Principal("his", HOSPITAL, ScopeSet.parse("system/*.cruds"), end_user="clerk")
    record = SourceRecord(
        SourceKey(HOSPITAL, "urn:mrn", local_id),
        name=name,
        sex="female",
        birth_date=born,
        fhir_patient_id=f"p-{local_id}",
    )
    return platform.registry.register(principal, record).master_index_id


def test_known_rows_give_the_same_person_and_rows_of_another_are_ignored(
    platform: Platform,
) -> None:
    add_hospital(platform, HOSPITAL, "海口市人民医院")
    first = _register(platform, "0001", "黎阿妹", date(1961, 3, 9))
    second = _register(platform, "0002", "王小红", date(1990, 7, 1))
    with platform.db.transaction(readonly=True) as conn:
        person_of = platform.registry.person_of_patient_in
        known_first, known_second = person_of(conn, "p-0001"), person_of(conn, "p-0002")
        assert known_first is not None
        assert known_second is not None
        assert known_first.master.master_index_id == first
        assert known_first.fhir_patient_ids == ["p-0001"]
        repo = CareRepository(conn)
        read = repo.person(first)
        given = repo.person(first, known=known_first)
        other = repo.person(first, known=known_second)
    assert given == read
    assert other == read  # another person's rows: the asked person is read instead
    assert read.master_index_id == first
    assert read.patient_keys == [("Patient", "p-0001"), ("Patient", first)]
    assert second != first


def test_known_person_follows_merges_to_the_survivor(platform: Platform) -> None:
    add_hospital(platform, HOSPITAL, "海口市人民医院")
    first = _register(platform, "0001", "黎阿妹", date(1961, 3, 9))
    second = _register(platform, "0002", "王小红", date(1990, 7, 1))
    with platform.db.transaction() as conn:
        repo = RegistryRepository(conn)
        survivor = repo.master_by_index_id(first)
        merged = repo.master_by_index_id(second)
        assert survivor is not None
        assert merged is not None
        repo.set_status(merged.id, "merged", survivor.id, merged.updated_at)
        known = KnownPerson.of(repo, repo.master(merged.id) or merged)
        assert known.master.master_index_id == first
        assert [s.fhir_patient_id for s in known.sources] == ["p-0001"]
        care = CareRepository(conn).person(first, known=known)
    assert care.master_index_id == first
    # The merged-away person's golden Patient is still read (predecessors), known or not.
    assert ("Patient", second) in care.patient_keys
