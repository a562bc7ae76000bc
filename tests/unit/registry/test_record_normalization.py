"""normalize_record: the registry's rules for a whole source record."""

from __future__ import annotations

from datetime import date

import pytest

from healthroam.errors import InvalidInput
from healthroam.registry.idnumber import check_character
from healthroam.registry.model import Identifier, SourceKey, SourceRecord
from healthroam.registry.normalize import normalize_national_id, normalize_record

KEY = SourceKey("H1", "urn:mrn", "1")


def nid(region: str, born: str, seq: int) -> str:
    body = f"{region}{born}{seq:03d}"
    return body + check_character(body)


def record(**values: object) -> SourceRecord:
    base: dict[str, object] = {
        "key": KEY,
        "name": "王伟",
        "sex": "1",
        "birth_date": date(1980, 2, 3),
    }
    base.update(values)
    return SourceRecord(**base)  # type: ignore[arg-type]


def test_legacy_15_digit_id_becomes_18_digits() -> None:
    eighteen = nid("460106", "19800203", 123)
    fifteen = eighteen[:6] + eighteen[8:17]
    assert normalize_record(record(national_id=fifteen)).national_id == eighteen


def test_lowercase_x_and_spaces_in_id_are_normalised() -> None:
    number = next(n for s in range(1, 999) if (n := nid("460106", "19800203", s))[-1] == "X")
    spaced = f" {number[:6]} {number[6:14]} {number[14:].lower()} "
    assert (
        normalize_record(
            record(national_id=spaced, sex="1" if int(number[16]) % 2 else "2")
        ).national_id
        == number
    )


def test_abolished_region_is_valid_in_an_old_id_but_not_a_new_one() -> None:
    # 469003 儋州市 was replaced by 460400 in 2015.
    assert normalize_national_id(nid("469003", "19800203", 123)).region_code == "469003"
    with pytest.raises(InvalidInput, match="abolished"):
        normalize_national_id(nid("469003", "20160203", 123))


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        ("46010619800203123", "18 characters"),
        ("4601061980020312AX", "digits"),
        ("990106198002031231", "region"),
        ("460106198002301231", "birth date"),
    ],
)
def test_invalid_ids_are_refused_with_reason(number: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason) as caught:
        normalize_record(record(national_id=number))
    assert caught.value.expression == "identifier"
    assert number not in caught.value.detail


def test_wrong_check_digit_is_refused() -> None:
    good = nid("460106", "19800203", 123)
    bad = good[:-1] + ("0" if good[-1] != "0" else "1")
    with pytest.raises(InvalidInput, match="check digit"):
        normalize_record(record(national_id=bad))


def test_id_that_disagrees_with_birth_date_and_sex_is_kept_with_warnings() -> None:
    normalized = normalize_record(record(national_id=nid("460106", "19800302", 124)))
    assert normalized.national_id is not None
    assert set(normalized.warnings) == {
        "birth date differs from the one encoded in the ID number",
        "sex differs from the one encoded in the ID number",
    }


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"name": None}, "name"),
        ({"name": "  "}, "name"),
        ({"birth_date": None}, "birthDate"),
        ({"birth_date": date(2999, 1, 1)}, "birthDate"),
        ({"sex": "unicorn"}, "gender"),
    ],
)
def test_missing_or_impossible_fields_name_the_field(values: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        normalize_record(record(**values))
    assert caught.value.expression == field


def test_identifier_alone_is_enough_without_birth_date() -> None:
    normalized = normalize_record(
        record(birth_date=None, identifiers=(Identifier("urn:pp", " e123 "),))
    )
    assert normalized.identifiers == frozenset({"urn:pp|E123"})


def test_names_scripts_and_pinyin() -> None:
    traditional = normalize_record(record(name="章 偉"))
    assert traditional.name == "章伟"
    assert traditional.pinyin == "zhangwei"
    surname = normalize_record(record(name="曾伟"))
    assert "zengwei" in surname.pinyin_keys
    latin = normalize_record(record(name="ZHANG, Wei"))
    assert (latin.name, latin.latin_name) == (None, "wei zhang")
    assert "zhangwei" in latin.pinyin_keys
    minority = normalize_record(record(name="阿卜杜拉•买买提"))
    assert minority.name == "阿卜杜拉·买买提"


def test_phones_addresses_and_regions() -> None:
    normalized = normalize_record(
        record(
            phones=("0898-6666 8888", "+86 139 0755 0001"),
            address="海南省海口市龍華區濱海大道３２号",
            region="460106",
        )
    )
    assert normalized.phone == "13907550001"  # a mobile number is preferred
    assert normalized.address is not None
    assert "海南省" not in normalized.address
    assert "龙华区" in normalized.address
    assert normalized.prefecture == "4601"


def test_address_key_is_the_same_with_or_without_a_region() -> None:
    # Hospital registers rarely carry a region code; the province prefix still goes.
    without = normalize_record(record(address="海南省三亚市天涯区港门村2号"))
    with_region = normalize_record(record(address="三亚市天涯区港门村2号", region="460204"))
    assert without.address == with_region.address
    elsewhere = normalize_record(record(address="广东省广州市越秀区1号"))
    assert elsewhere.address is not None
    assert elsewhere.address.startswith("广东省")
