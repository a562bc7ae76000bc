"""The bulk loader's per-row fast paths (session 10, decision 0046) give what the general code
gives: the compiled column mapping, the one-record golden record, the written-out JSON form of
a normalised record."""

from __future__ import annotations

import itertools
from dataclasses import fields
from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from healthroam.errors import HealthroamError, InvalidInput
from healthroam.registry import idnumber, regions
from healthroam.registry.codec import from_json, jsonb_key, to_json, to_json_jsonb_order
from healthroam.registry.loader import Mapping
from healthroam.registry.model import NormalizedRecord
from healthroam.registry.names import (
    MIDDLE_DOT,
    Script,
    detect_script,
    normalize_chinese_name,
    split_chinese_name,
)
from healthroam.registry.normalize import _USUAL_MOBILE, _usual_national_id, normalize_national_id
from healthroam.registry.phones import PhoneKind, check_phone
from healthroam.registry.pinyin_keys import _char_options, _surname_options, pinyin_readings
from healthroam.registry.survivorship import FIELDS, LinkedRecord, golden_of_one, golden_record

_TEXT = st.one_of(st.none(), st.just(""), st.text(max_size=12))
_VALUE: st.SearchStrategy[Any] = st.one_of(_TEXT, st.just([]), st.integers(-2, 2), st.dates())


@given(
    st.integers(1, 10**12),
    st.fixed_dictionaries(
        {},
        optional={
            **{name: _VALUE for name in FIELDS},
            "identifiers": st.lists(st.text(max_size=8), max_size=4),
        },
    ),
)
def test_golden_of_one_is_golden_record_of_one(source_id: int, values: dict[str, Any]) -> None:
    linked = LinkedRecord(source_id, "POP", 3, datetime(2026, 11, 30, tzinfo=UTC), values)
    expected = golden_record([linked])
    found = golden_of_one(source_id, values)
    assert found == expected
    # The same document in JSONB's key order (PostgreSQL stores it so, whatever the text).
    assert list(found) == sorted(expected, key=jsonb_key)
    assert found["provenance"] == expected["provenance"]
    assert list(found["provenance"]) == sorted(expected["provenance"], key=jsonb_key)


_SETS = st.frozensets(st.text(max_size=6), max_size=4)


@given(
    st.builds(
        NormalizedRecord,
        name=_TEXT,
        latin_name=_TEXT,
        pinyin=_TEXT,
        pinyin_keys=_SETS,
        birth_date=_TEXT,
        sex=_TEXT,
        national_id=_TEXT,
        region=_TEXT,
        address=_TEXT,
        address_tokens=_SETS,
        phone=_TEXT,
        identifiers=_SETS,
        ethnicity=_TEXT,
        death_date=_TEXT,
        warnings=st.lists(st.text(max_size=6), max_size=3).map(tuple),
    )
)
def test_to_json_is_every_field_in_order(record: NormalizedRecord) -> None:
    general: dict[str, Any] = {f.name: getattr(record, f.name) for f in fields(NormalizedRecord)}
    for name in ("pinyin_keys", "address_tokens", "identifiers"):
        general[name] = sorted(general[name])
    general["warnings"] = list(record.warnings)
    found = to_json(record)
    assert list(found) == list(general)
    assert found == general
    assert from_json(found) == record
    ordered = to_json_jsonb_order(record)
    assert ordered == general
    assert list(ordered) == sorted(general, key=jsonb_key)


def test_jsonb_key_is_the_order_postgresql_keeps() -> None:
    # PostgreSQL 15: SELECT '{"名": 5, "ba": 3, "abc": 4, "a": 1, "ab": 2}'::jsonb
    # gives {"a": 1, "ab": 2, "ba": 3, "abc": 4, "名": 5} ('名' is three bytes in UTF-8).
    keys = ["名", "ba", "abc", "a", "ab"]
    assert sorted(keys, key=jsonb_key) == ["a", "ab", "ba", "abc", "名"]


_CELL = st.one_of(
    st.none(),
    st.just(""),
    st.text(max_size=8),
    st.sampled_from(["01", "02", "03", "1980-02-29", "1981-02-29", "2001-13-01", "x" * 201]),
    st.integers(0, 3),
    st.dates(min_value=date(1900, 1, 1), max_value=date(2030, 1, 1)),
)


def _outcome(call: Any) -> Any:
    try:
        return call()
    except HealthroamError as error:
        return (type(error), str(error), error.expression)


@pytest.mark.parametrize("name", ["population", "insurer", "hospital"])
@given(data=st.data())
def test_record_maker_maps_as_record_does(name: str, data: st.DataObject) -> None:
    mapping = Mapping.load(name)
    columns = sorted(mapping.needed_columns())
    row = data.draw(st.fixed_dictionaries({}, optional={c: _CELL for c in columns}))
    make = mapping.record_maker("POP")
    assert _outcome(lambda: make(row)) == _outcome(lambda: mapping.record(row, "POP"))


# Decision 0050: the usual ID number, the usual mobile number and the pinyin readings by parts.

_HAINAN_CODES = sorted(r.code for r in regions.all_regions() if r.code.startswith("46"))
_REGION = st.one_of(
    st.sampled_from(_HAINAN_CODES),  # current and abolished Hainan codes
    st.sampled_from(["110101", "440305", "469999", "460000", "990101", "830000"]),
    st.text("0123456789", min_size=6, max_size=6),
)
_BIRTH = st.one_of(
    st.dates(min_value=date(1890, 1, 1), max_value=date(2030, 12, 31)).map(
        lambda d: d.strftime("%Y%m%d")
    ),
    st.sampled_from(["19800230", "20001301", "19991200", "18991231"]),
    st.text("0123456789", min_size=8, max_size=8),
)


@st.composite
def _id_numbers(draw: st.DrawFn) -> str:
    body = draw(_REGION) + draw(_BIRTH) + draw(st.text("0123456789", min_size=3, max_size=3))
    check = idnumber._check_character(body)
    last = draw(st.sampled_from([check, check, check, "X", "x", "0", "7"]))
    number = body + last
    mangle = draw(st.sampled_from(["", "", "", "15", "space", "fullwidth", "short"]))
    if mangle == "15":
        return number[:6] + number[8:17]
    if mangle == "space":
        return " " + number
    if mangle == "fullwidth":
        return number.replace("1", "１")
    if mangle == "short":
        return number[:-1]
    return number


@given(_id_numbers(), st.sampled_from([date(2026, 11, 30), date(2001, 1, 1)]))
def test_usual_national_id_is_the_general_path(value: str, today: date) -> None:
    try:
        resident = normalize_national_id(value, today=today)
        general: Any = (resident.number, resident.birth_date, str(int(resident.sex)))
    except InvalidInput:
        general = None
    usual = _usual_national_id(value, today)
    if usual is not None:
        assert usual == general
    elif general is not None:  # only numbers that need normalising take the general path
        assert value != resident.number


@given(st.text("0123456789１+- ", min_size=10, max_size=13))
def test_usual_mobile_is_what_check_phone_gives(raw: str) -> None:
    checked = check_phone(raw)
    if _USUAL_MOBILE.fullmatch(raw):
        assert checked.valid
        assert checked.kind is PhoneKind.MOBILE
        assert checked.canonical == raw


def _readings_by_product(name: str, surname: str | None, limit: int) -> list[tuple[str, ...]]:
    """``pinyin_readings`` as it was before decision 0050: the whole product, deduplicated."""
    text = normalize_chinese_name(name)
    if limit < 1 or detect_script(text) is not Script.HAN:
        return []
    parts = split_chinese_name(text, surname=surname)
    positions: list[tuple[tuple[str, ...], ...]] = []
    if parts.surname:
        positions.extend(_surname_options(parts.surname))
    given = parts.given.replace(MIDDLE_DOT, "")
    positions.extend(options for options in map(_char_options, given) if options)
    if not positions:
        return []
    readings: list[tuple[str, ...]] = []
    for combination in itertools.product(*positions):
        syllables = tuple(itertools.chain.from_iterable(combination))
        if syllables not in readings:
            readings.append(syllables)
            if len(readings) >= limit:
                break
    return readings


# Heteronyms (乐 行 长 重 单 朝 解 曾 区 查), table surnames (single and compound), a middle dot,
# a character without a reading (〇 reads as nothing here), ordinary characters.
_NAME_CHARS = "乐行长重单朝解曾区查张王李欧阳司马诸葛尉迟万俟〇·伟三丰明和乾"


@given(
    st.text(_NAME_CHARS, min_size=1, max_size=6),
    st.one_of(st.none(), st.sampled_from(["曾", "欧阳", "单", "张", "乐", "万俟"])),
    st.sampled_from([1, 2, 3, 16]),
)
def test_pinyin_readings_by_parts_are_the_product(
    name: str, surname: str | None, limit: int
) -> None:
    assert pinyin_readings(name, surname=surname, limit=limit) == _readings_by_product(
        name, surname, limit
    )
