from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pypinyin import lazy_pinyin

from healthroam.registry import idnumber
from healthroam.synth.corrupt import HOSPITAL_RATES, INSURER_RATES, Error
from healthroam.synth.places import institutions

from .conftest import Province

Row = dict[str, Any]


def _joined(province: Province, prefix: str) -> list[Row]:
    """Each record of the sources starting with ``prefix``, with its truth and its person."""
    records = province.records(prefix)
    links = province.links(prefix)
    truth = {r["record_key"]: r for r in links.to_pylist()}
    people = {r["person_id"]: r for r in province.people.to_pylist()}
    rows = []
    for record in records.to_pylist():
        link = truth[record["record_key"]]
        rows.append(record | {"flags": link["error_flags"], "true": people[link["person_id"]]})
    return rows


def test_every_record_key_is_in_the_truth_exactly_once(province: Province) -> None:
    records = pa.concat_tables([b.records.select(["record_key"]) for b in province.batches])
    keys = records["record_key"].to_pylist()
    truth = Counter(province.links()["record_key"].to_pylist())
    assert len(set(keys)) == len(keys)
    assert set(truth) == set(keys)
    assert set(truth.values()) == {1}
    people = set(province.people["person_id"].to_pylist())
    assert set(province.links()["person_id"].to_pylist()) <= people


def test_sources_cover_the_population_as_expected(province: Province) -> None:
    n = province.people.num_rows
    citizens = n - province.people["id_number"].null_count
    assert province.records("population").num_rows == citizens  # the most complete source
    assert 0.93 < province.records("insurer").num_rows / n < 0.98
    hospital_people = set(province.links("hospital")["person_id"].to_pylist())
    assert 0.5 < len(hospital_people) / n < 0.85  # each hospital sees a subset
    sources = {b.source for b in province.batches}
    assert {f"hospital-{h.code}" for h in institutions()} <= sources


def _rate(rows: list[Row], error: Error, eligible: Callable[[Row], bool] | None = None) -> float:
    pool = [r for r in rows if eligible is None or eligible(r)]
    return sum(1 for r in pool if r["flags"] & error) / len(pool)


@pytest.mark.parametrize(
    ("error", "configured"),
    [
        (Error.TYPO, HOSPITAL_RATES.typo),
        (Error.HOMOPHONE, HOSPITAL_RATES.homophone),
        (Error.TRADITIONAL, HOSPITAL_RATES.traditional),
        (Error.BIRTH_DATE_TRANSPOSED, HOSPITAL_RATES.birth_date_transposed),
        (Error.ID_MISSING, HOSPITAL_RATES.id_missing),
        (Error.ID_MISTYPED, HOSPITAL_RATES.id_mistyped * (1 - HOSPITAL_RATES.id_missing)),
        (Error.ADDRESS_MOVED, HOSPITAL_RATES.address_moved),
        (Error.DUPLICATE, HOSPITAL_RATES.duplicate),
    ],
)
def test_hospital_errors_occur_at_about_their_configured_rate(
    province: Province, error: Error, configured: float
) -> None:
    rows = _joined(province, "hospital")
    assert len(rows) > 15_000
    assert configured * 0.7 < _rate(rows, error) < configured * 1.3


def test_legacy_ids_and_changed_phones_at_their_rate_among_those_who_can_have_them(
    province: Province,
) -> None:
    rows = _joined(province, "hospital")
    legacy = _rate(rows, Error.ID_LEGACY15, lambda r: r["true"]["id15"] is not None)
    assert HOSPITAL_RATES.id_legacy15 * 0.75 < legacy < HOSPITAL_RATES.id_legacy15 * 1.05
    phone = _rate(rows, Error.PHONE_CHANGED, lambda r: r["true"]["phone"] is not None)
    assert HOSPITAL_RATES.phone_changed * 0.8 < phone < HOSPITAL_RATES.phone_changed * 1.2
    insurer = _joined(province, "insurer")
    moved = _rate(insurer, Error.ADDRESS_MOVED)
    assert INSURER_RATES.address_moved * 0.8 < moved < INSURER_RATES.address_moved * 1.2


def test_each_flagged_error_is_really_in_the_record(province: Province) -> None:
    rows = _joined(province, "hospital")
    seen: Counter[Error] = Counter()
    for r in rows:
        flags, true = Error(r["flags"]), r["true"]
        name_errors = Error.TYPO | Error.HOMOPHONE | Error.TRADITIONAL
        if not flags & name_errors:
            assert r["name"] == true["name"]
        if flags == Error.HOMOPHONE:
            seen[Error.HOMOPHONE] += 1
            assert r["name"] != true["name"]
            assert (
                lazy_pinyin(str(r["name"])) == lazy_pinyin(true["name"])
                or len({c for c in str(r["name"])} ^ {c for c in true["name"]}) == 2
            )
        if flags & Error.BIRTH_DATE_TRANSPOSED:
            seen[Error.BIRTH_DATE_TRANSPOSED] += 1
            assert r["birth_date"] != true["birth_date"]
        else:
            assert r["birth_date"] == true["birth_date"]
        if flags & Error.ID_MISSING:
            assert r["id_number"] is None
        elif flags & Error.ID_LEGACY15 and not flags & Error.ID_MISTYPED:
            seen[Error.ID_LEGACY15] += 1
            assert idnumber.to_18(str(r["id_number"])) == true["id_number"]
        elif flags & Error.ID_MISTYPED:
            seen[Error.ID_MISTYPED] += 1
            assert r["id_number"] not in (true["id_number"], true["id15"])
        elif true["id_number"] is not None:
            assert r["id_number"] == true["id_number"]
        else:
            assert r["id_number"] == true["passport_number"]
            assert r["id_type"] == "03"
        if flags & Error.TRADITIONAL:
            seen[Error.TRADITIONAL] += 1
            assert r["address"] != true["address"]
        elif not flags & Error.ADDRESS_MOVED:
            assert r["address"] == true["address"]
    assert min(seen.values()) > 20


def test_traditional_script_uses_opencc(province: Province) -> None:
    rows = _joined(province, "hospital")
    traditional = [r for r in rows if r["flags"] & Error.TRADITIONAL]
    assert any("區" in str(r["address"]) or "縣" in str(r["address"]) for r in traditional)


def test_namesakes_in_records_map_to_distinct_true_people(province: Province) -> None:
    records = province.records("population")
    links = {r["record_key"]: r["person_id"] for r in province.links("population").to_pylist()}
    by_key: dict[tuple[object, object], set[str]] = {}
    for r in records.select(["record_key", "name", "birth_date"]).to_pylist():
        by_key.setdefault((r["name"], r["birth_date"]), set()).add(links[r["record_key"]])
    shared = [ids for ids in by_key.values() if len(ids) > 1]
    assert len(shared) >= 10


def test_duplicate_registrations_give_one_person_two_records_in_a_hospital(
    province: Province,
) -> None:
    links = province.links("hospital")
    pairs = Counter(zip(links["source"].to_pylist(), links["person_id"].to_pylist(), strict=True))
    duplicated = pc.sum(
        pc.not_equal(pc.bit_wise_and(links["error_flags"], Error.DUPLICATE.value), 0)
    )
    assert sum(1 for count in pairs.values() if count == 2) == duplicated.as_py()
