"""Sex, ethnicity and birth-date rules, one case per rule."""

from __future__ import annotations

import contextlib
import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from healthroam.errors import InvalidInput
from healthroam.registry.demographics import (
    Sex,
    ethnicities,
    parse_birth_date,
    parse_ethnicity,
    parse_sex,
)

TODAY = dt.date(2026, 6, 1)

# --- sex -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "sex"),
    [
        pytest.param("0", Sex.UNKNOWN, id="GB 0"),
        pytest.param("1", Sex.MALE, id="GB 1"),
        pytest.param("2", Sex.FEMALE, id="GB 2"),
        pytest.param("9", Sex.UNSPECIFIED, id="GB 9"),
        pytest.param("male", Sex.MALE, id="FHIR male"),
        pytest.param("female", Sex.FEMALE, id="FHIR female"),
        pytest.param("other", Sex.UNSPECIFIED, id="FHIR other"),
        pytest.param("unknown", Sex.UNKNOWN, id="FHIR unknown"),
        pytest.param("M", Sex.MALE, id="HL7 v2 M"),
        pytest.param("F", Sex.FEMALE, id="HL7 v2 F"),
        pytest.param("U", Sex.UNKNOWN, id="HL7 v2 U"),
        pytest.param("O", Sex.UNSPECIFIED, id="HL7 v2 O"),
        pytest.param("A", Sex.UNSPECIFIED, id="HL7 v2 A"),
        pytest.param("男", Sex.MALE, id="男"),
        pytest.param("女性", Sex.FEMALE, id="女性"),
        pytest.param("未说明的性别", Sex.UNSPECIFIED, id="未说明的性别"),
        pytest.param("未知", Sex.UNKNOWN, id="未知"),
        pytest.param(" MALE ", Sex.MALE, id="case and whitespace"),
        pytest.param("１", Sex.MALE, id="full-width digit"),
    ],
)
def test_parse_sex(raw: str, sex: Sex) -> None:
    assert parse_sex(raw) is sex


@pytest.mark.parametrize("sex", list(Sex))
def test_sex_round_trips_through_fhir_and_gb_codes(sex: Sex) -> None:
    assert parse_sex(sex.fhir) is sex
    assert parse_sex(sex.gb_code) is sex
    assert parse_sex(sex.label) is sex


def test_sex_codes() -> None:
    assert [(s.gb_code, s.fhir) for s in Sex] == [
        ("0", "unknown"),
        ("1", "male"),
        ("2", "female"),
        ("9", "other"),
    ]


@pytest.mark.parametrize(("raw", "reason"), [("", "empty"), ("3", "not a GB/T 2261.1 code")])
def test_parse_sex_rejects(raw: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_sex(raw, expression="PID-8")
    assert reason in caught.value.detail
    assert caught.value.expression == "PID-8"


# --- ethnicity -------------------------------------------------------------------------------


def test_table_has_56_groups_and_two_extension_codes() -> None:
    codes = [e.code for e in ethnicities()]
    assert codes == [f"{n:02d}" for n in range(1, 57)] + ["97", "98"]
    assert len({e.name for e in ethnicities()}) == 58


@pytest.mark.parametrize(
    ("code", "name"),
    [("01", "汉族"), ("06", "苗族"), ("19", "黎族"), ("08", "壮族"), ("56", "基诺族")],
)
def test_gb3304_numbering(code: str, name: str) -> None:
    assert parse_ethnicity(code).name == name


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        pytest.param("19", "19", id="two-digit code"),
        pytest.param("6", "06", id="code without leading zero"),
        pytest.param("黎族", "19", id="name"),
        pytest.param("黎", "19", id="name without 族"),
        pytest.param("漢族", "01", id="traditional characters"),
        pytest.param(" 苗 族 ", "06", id="spaces"),
        pytest.param("Li", "19", id="romanisation"),
        pytest.param("MIAO", "06", id="romanisation any case"),
        pytest.param("MH", "06", id="letter code"),
        pytest.param("毛难族", "36", id="old name of 毛南族"),
        pytest.param("崩龙族", "46", id="old name of 德昂族"),
        pytest.param("97", "97", id="extension: other"),
        pytest.param("外国血统中国籍人士", "98", id="extension: foreign origin"),
    ],
)
def test_parse_ethnicity(raw: str, code: str) -> None:
    assert parse_ethnicity(raw).code == code


@pytest.mark.parametrize(("raw", "reason"), [(" ", "empty"), ("57", "not a GB/T 3304")])
def test_parse_ethnicity_rejects(raw: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_ethnicity(raw)
    assert reason in caught.value.detail


# --- birth date ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("1990-01-02", id="ISO"),
        pytest.param("1990-1-2", id="ISO without zero padding"),
        pytest.param("19900102", id="compact"),
        pytest.param("1990/1/2", id="slashes"),
        pytest.param("1990/01/02", id="slashes padded"),
        pytest.param("1990.1.2", id="dots"),
        pytest.param("1990年1月2日", id="Chinese"),
        pytest.param("1990 年 01 月 02 日", id="Chinese with spaces"),
        pytest.param("１９９０－０１－０２", id="full-width"),
        pytest.param(" 1990-01-02 ", id="surrounding whitespace"),
    ],
)
def test_birth_date_formats(raw: str) -> None:
    assert parse_birth_date(raw, today=TODAY) == dt.date(1990, 1, 2)


def test_leap_day_in_a_leap_year() -> None:
    assert parse_birth_date("2000-02-29", today=TODAY) == dt.date(2000, 2, 29)


def test_born_today_is_accepted() -> None:
    assert parse_birth_date("2026-06-01", today=TODAY) == TODAY


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param("", "birth date is empty", id="empty"),
        pytest.param("02/01/1990", "format is not recognised", id="day first"),
        pytest.param("1990-01-02T10:00", "format is not recognised", id="date-time"),
        pytest.param("١٩٩٠-٠١-٠٢", "format is not recognised", id="non-ASCII digits"),
        pytest.param("1990年1月2", "format is not recognised", id="missing 日"),
        pytest.param("1990-01-02日", "format is not recognised", id="stray 日"),
        pytest.param("1990-1/2", "mixes separators", id="mixed separators"),
        pytest.param("1990-13-02", "month is outside 1-12", id="month 13"),
        pytest.param("19900002", "month is outside 1-12", id="month 0"),
        pytest.param("1990-01-32", "day is outside 1-31", id="day 32"),
        pytest.param("1990-01-00", "day is outside 1-31", id="day 0"),
        pytest.param("1990-04-31", "past the last day of its month", id="30-day month"),
        pytest.param("1990-02-30", "past the last day of its month", id="30 February"),
        pytest.param("1900-02-29", "(not a leap year)", id="century not a leap year"),
        pytest.param("00000102", "year is zero", id="year zero"),
        pytest.param("2026-06-02", "in the future", id="tomorrow"),
        pytest.param("1869-12-31", "implausibly early", id="before the earliest date"),
    ],
)
def test_impossible_birth_dates_are_rejected_with_a_reason(raw: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_birth_date(raw, today=TODAY)
    assert reason in caught.value.detail
    assert caught.value.expression == "Patient.birthDate"
    digits = "".join(ch for ch in raw if ch.isdigit())
    if digits:
        assert digits not in caught.value.detail


def test_earliest_is_configurable() -> None:
    assert parse_birth_date("1850-01-01", earliest=dt.date(1800, 1, 1)) == dt.date(1850, 1, 1)


@given(st.dates(min_value=dt.date(1870, 1, 1), max_value=TODAY))
def test_every_real_date_parses_in_every_format(day: dt.date) -> None:
    for raw in (
        day.isoformat(),
        day.strftime("%Y%m%d"),
        f"{day.year}/{day.month}/{day.day}",
        f"{day.year}年{day.month}月{day.day}日",
    ):
        assert parse_birth_date(raw, today=TODAY) == day


@given(st.text(max_size=20))
def test_parse_birth_date_raises_only_invalid_input(raw: str) -> None:
    with contextlib.suppress(InvalidInput):
        assert isinstance(parse_birth_date(raw, today=TODAY), dt.date)
