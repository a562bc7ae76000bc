"""Comparison levels, Fellegi-Sunter scoring, blocking keys, survivorship, codec."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, date, datetime

import pytest

from healthroam.registry.blocking import blocking_keys
from healthroam.registry.codec import from_json, to_json
from healthroam.registry.comparisons import (
    address_level,
    birth_date_level,
    comparison_vector,
    identifiers_level,
    name_level,
    national_id_level,
    phone_level,
    region_level,
    sex_level,
)
from healthroam.registry.idnumber import check_character
from healthroam.registry.model import Identifier, MatchGrade, SourceKey, SourceRecord
from healthroam.registry.normalize import normalize_record
from healthroam.registry.scoring import MatchModel
from healthroam.registry.survivorship import LinkedRecord, golden_record, trust_of

KEY = SourceKey("H1", "urn:mrn", "1")
BODY = "46010619800203123"
NID = BODY + check_character(BODY)


def norm(**values: object):  # type: ignore[no-untyped-def]
    base: dict[str, object] = {
        "key": KEY,
        "name": "王伟",
        "sex": "1",
        "birth_date": date(1980, 2, 3),
        "region": "460106",
    }
    base.update(values)
    return normalize_record(SourceRecord(**base))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("a", "b", "level"),
    [
        ("王伟", "王伟", 0),
        ("王伟", "王偉", 0),  # traditional folds to the same simplified name
        ("张伟", "章伟", 1),  # homophone
        ("王伟", "王玮", 1),  # same reading wei
        ("王伟", "王伟华", 2),  # one character more: fuzzy
        ("王伟", "李娜", 3),
    ],
)
def test_name_levels(a: str, b: str, level: int) -> None:
    assert name_level(norm(name=a), norm(name=b)) == level


def test_latin_and_han_names_meet_on_pinyin() -> None:
    assert name_level(norm(name="Wei Zhang"), norm(name="张伟")) == 1
    assert name_level(norm(name="ZHANG Wei"), norm(name="wei zhang")) == 0


@pytest.mark.parametrize(
    ("a", "b", "level"),
    [
        (date(1980, 2, 3), date(1980, 2, 3), 0),
        (date(1980, 2, 3), date(1980, 3, 2), 1),  # month/day swapped
        (date(1980, 2, 13), date(1980, 2, 31 - 20), 1),  # one digit
        (date(1980, 2, 3), date(1980, 2, 28), 2),
        (date(1980, 2, 3), date(1980, 11, 28), 3),
        (date(1980, 2, 3), date(1991, 11, 28), 4),
    ],
)
def test_birth_date_levels(a: date, b: date, level: int) -> None:
    assert birth_date_level(norm(birth_date=a), norm(birth_date=b)) == level


def test_other_levels_and_nulls() -> None:
    # MOD 11-2 catches every single mistyped digit and adjacent transposition, so two valid
    # IDs are never one edit apart; the level matters for sources whose IDs were not checked.
    record = norm(national_id=NID)
    typo = replace(record, national_id=NID[:16] + NID[17] + NID[16])
    assert national_id_level(record, typo) == 1
    two_off = "46010619800203125" + check_character("46010619800203125")
    assert national_id_level(norm(national_id=NID), norm(national_id=two_off)) == 2
    assert national_id_level(norm(national_id=NID), norm()) is None
    assert sex_level(norm(), norm(sex="2")) == 1
    assert region_level(norm(), norm(region="460108")) == 1
    assert region_level(norm(), norm(region="469002")) == 2
    assert phone_level(norm(phones=("13907550001",)), norm(phones=("13907550001",))) == 0
    assert (
        address_level(
            norm(address="海口市龙华区滨海大道32号"), norm(address="海口市龙华区滨海大道32号3栋")
        )
        == 1
    )
    assert (
        identifiers_level(
            norm(identifiers=(Identifier("p", "1"),)), norm(identifiers=(Identifier("p", "2"),))
        )
        == 1
    )


def test_scoring_separates_same_person_from_namesake() -> None:
    model = MatchModel.load()
    record = norm(national_id=NID, phones=("13907550001",))
    same = model.score(record, norm(name="王偉", phones=("13907550001",)))
    other_body = "46010619800203125"
    stranger = model.score(record, norm(national_id=other_body + check_character(other_body)))
    assert same.weight >= model.thresholds.link
    assert model.grade(same.weight) in (MatchGrade.CERTAIN, MatchGrade.PROBABLE)
    # The score alone cannot tell namesakes born the same day apart (the ID number's weight is
    # outweighed by name + birth date + county); different_trusted_ids below does.
    assert stranger.weight < same.weight
    assert 0 < stranger.probability < same.probability <= 1


def test_term_frequency_makes_common_names_weaker() -> None:
    model = MatchModel.load()
    common = model.score(norm(), norm(), lambda name: 0.01)
    rare = model.score(norm(), norm(), lambda name: 0.000001)
    assert rare.weight > common.weight
    assert math.isclose(rare.weight - common.weight, math.log2(0.01 / 0.000001))


def test_model_file_must_match_comparison_levels() -> None:
    import json
    from importlib import resources

    spec = json.loads(
        resources.files("healthroam.registry").joinpath("data/matching.json").read_text()
    )
    spec["comparisons"][0]["levels"].pop()
    with pytest.raises(ValueError, match="levels"):
        MatchModel.from_dict(spec)


def test_blocking_keys_survive_each_kind_of_error() -> None:
    truth = norm(national_id=NID, phones=("13907550001",))
    typo_id = norm(phones=())
    homophone = norm(name="汪伟", national_id=NID)
    transposed = norm(birth_date=date(1980, 3, 2))
    for variant in (typo_id, homophone, transposed):
        assert blocking_keys(truth) & blocking_keys(variant)
    assert not blocking_keys(norm()) & blocking_keys(
        norm(name="李娜", birth_date=date(1970, 1, 1), region="469002")
    )


def test_codec_round_trip() -> None:
    record = norm(national_id=NID, identifiers=(Identifier("p", "1"),), address="海口市32号")
    assert from_json(to_json(record)) == record
    assert comparison_vector(record, from_json(to_json(record)))[0] == 0


def test_survivorship_prefers_trusted_then_recent() -> None:
    old, new = datetime(2020, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
    population = LinkedRecord(
        1,
        "POP",
        trust_of("agency", None),
        old,
        {"name": "王伟", "phone": None, "address": "老地址", "identifiers": ["urn:a|1"]},
    )
    hospital = LinkedRecord(
        2,
        "H1",
        trust_of("hospital", 3),
        new,
        {"name": "王玮", "phone": "13907550001", "address": "新地址", "identifiers": ["urn:b|2"]},
    )
    clinic = LinkedRecord(
        3, "C1", trust_of("clinic", None), new, {"name": "王为", "phone": "13900000000"}
    )
    golden = golden_record([clinic, hospital, population])
    assert golden["name"] == "王伟"  # the population base wins
    assert golden["address"] == "老地址"
    assert golden["phone"] == "13907550001"  # only hospital and clinic have one: hospital wins
    assert golden["identifiers"] == ["urn:a|1", "urn:b|2"]
    assert golden["sources"] == 3
    newer_hospital = replace(
        hospital,
        source_id=4,
        updated_at=datetime(2026, 6, 1, tzinfo=UTC),
        values={**hospital.values, "phone": "13811111111"},
    )
    assert golden_record([hospital, newer_hospital])["phone"] == "13811111111"


def test_two_consistent_different_ids_are_two_people() -> None:
    from healthroam.registry.service import different_trusted_ids

    other_body = "46010619800203125"
    namesake = norm(national_id=other_body + check_character(other_body))
    assert different_trusted_ids(norm(national_id=NID), namesake)
    assert not different_trusted_ids(norm(national_id=NID), norm(national_id=NID))
    assert not different_trusted_ids(norm(national_id=NID), norm())
    # An ID that contradicts its own record's birth date is not trusted to tell people apart.
    suspicious = norm(
        national_id=other_body + check_character(other_body), birth_date=date(1981, 1, 1)
    )
    assert suspicious.warnings
    assert not different_trusted_ids(norm(national_id=NID), suspicious)
