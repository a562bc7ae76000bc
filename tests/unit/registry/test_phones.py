"""Phone normalisation rules, one case per rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from healthroam.errors import InvalidInput
from healthroam.registry import phones
from healthroam.registry.phones import PhoneCheck, PhoneKind, check_phone, normalize_phone

MOBILE = "13800138000"
HAINAN = "089866123456"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("13800138000", id="plain"),
        pytest.param("138 0013 8000", id="spaces"),
        pytest.param("138-0013-8000", id="dashes"),
        pytest.param("138\u20140013\u20138000", id="dash variants"),
        pytest.param("１３８００１３８０００", id="full-width digits"),
        pytest.param("+86 138 0013 8000", id="+86"),
        pytest.param("+86-13800138000", id="+86 with dash"),
        pytest.param("＋８６１３８００１３８０００", id="full-width plus"),
        pytest.param("0086 13800138000", id="0086"),
        pytest.param("8613800138000", id="bare 86 before a mobile"),
        pytest.param("(+86) 13800138000", id="parentheses"),
        pytest.param("013800138000", id="0 dialled before a mobile"),
        pytest.param("tel:+8613800138000", id="tel URI"),
        pytest.param("\t13800138000 ", id="surrounding whitespace"),
    ],
)
def test_mobile_spellings_normalise_to_eleven_digits(raw: str) -> None:
    assert check_phone(raw) == PhoneCheck(True, MOBILE, PhoneKind.MOBILE)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("0898-66123456", id="area code and dash"),
        pytest.param("(0898)66123456", id="parentheses"),
        pytest.param("（0898）6612 3456", id="full-width parentheses"),
        pytest.param("0898 6612 3456", id="spaces"),
        pytest.param("+86 898 6612 3456", id="+86 drops the trunk 0"),
        pytest.param("+86 0898 66123456", id="+86 keeping the trunk 0"),
        pytest.param("0086-898-66123456", id="0086"),
    ],
)
def test_landline_spellings_normalise_to_area_code_and_number(raw: str) -> None:
    assert check_phone(raw) == PhoneCheck(True, HAINAN, PhoneKind.LANDLINE)


def test_three_digit_area_codes() -> None:
    assert check_phone("010-65123456").canonical == "01065123456"
    assert check_phone("+86 10 6512 3456").canonical == "01065123456"
    assert check_phone("020-87654321").canonical == "02087654321"


def test_seven_digit_local_number() -> None:
    assert check_phone("0898-6612345").canonical == "08986612345"


def test_bare_86_is_kept_before_a_local_number() -> None:
    # 86123456 is a valid Hainan local number, not a country code.
    assert check_phone("86123456", default_area_code="0898").canonical == "089886123456"


def test_default_area_code_completes_a_local_number() -> None:
    assert check_phone("6612 3456", default_area_code="0898").canonical == HAINAN


@pytest.mark.parametrize(
    ("raw", "extension"),
    [
        ("0898-66123456转801", "801"),
        ("0898-66123456 分机 801", "801"),
        ("0898-66123456 ext. 801", "801"),
        ("0898-66123456x801", "801"),
        ("0898-66123456#801", "801"),
    ],
)
def test_extension_is_split_off(raw: str, extension: str) -> None:
    result = check_phone(raw)
    assert (result.canonical, result.extension) == (HAINAN, extension)


def test_service_number() -> None:
    result = check_phone("400-810-8888")
    assert (result.kind, result.canonical, result.e164) == (PhoneKind.SERVICE, "4008108888", "")


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [("+852 2123 4567", "+85221234567"), ("00886 2 2345 6789", "+886223456789")],
)
def test_international_numbers_keep_their_country_code(raw: str, canonical: str) -> None:
    result = check_phone(raw)
    assert (result.kind, result.canonical, result.e164) == (
        PhoneKind.INTERNATIONAL,
        canonical,
        canonical,
    )


def test_e164() -> None:
    assert check_phone(MOBILE).e164 == "+8613800138000"
    assert check_phone("0898-66123456").e164 == "+8689866123456"
    assert check_phone("").e164 == ""


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param("", phones.EMPTY, id="empty"),
        pytest.param(" - ", phones.EMPTY, id="only separators"),
        pytest.param("138abc00138", phones.BAD_CHARACTERS, id="letters"),
        pytest.param("+", phones.EMPTY, id="plus only"),
        pytest.param("12800138000", phones.MOBILE_PREFIX, id="mobile prefix 12"),
        pytest.param("10086", phones.TOO_SHORT, id="short code"),
        pytest.param("0898-12345", phones.TOO_SHORT, id="local number too short"),
        pytest.param("0898-123456789", phones.TOO_LONG, id="local number too long"),
        pytest.param("0898-06123456", phones.LOCAL_NUMBER, id="local number starts with 0"),
        pytest.param("010-6512345", phones.LOCAL_NUMBER, id="seven digits after 010"),
        pytest.param("66123456", phones.NO_AREA_CODE, id="no area code"),
        pytest.param("16123456", phones.LOCAL_NUMBER, id="bare local starting with 1"),
        pytest.param("1380013800012345", phones.TOO_LONG, id="too long"),
        pytest.param("+1 234", phones.INTERNATIONAL_LENGTH, id="international too short"),
        pytest.param("0898-66123456转", phones.BAD_EXTENSION, id="empty extension"),
        pytest.param("0898-66123456转1234567", phones.BAD_EXTENSION, id="long extension"),
        pytest.param("923456789", phones.UNRECOGNISED, id="nine digits"),
    ],
)
def test_invalid_numbers_give_a_reason(raw: str, reason: str) -> None:
    result = check_phone(raw)
    assert not result.valid
    assert result.reason == reason


def test_normalize_phone_returns_the_canonical_form() -> None:
    assert normalize_phone("+86 138 0013 8000") == MOBILE


def test_normalize_phone_error_names_the_field_not_the_number() -> None:
    with pytest.raises(InvalidInput) as caught:
        normalize_phone("12800138000", expression="Patient.telecom[1].value")
    assert caught.value.expression == "Patient.telecom[1].value"
    assert caught.value.detail == phones.MOBILE_PREFIX
    assert "12800138000" not in str(caught.value)


@given(st.text(max_size=30))
def test_check_phone_never_raises_and_never_echoes(raw: str) -> None:
    result = check_phone(raw)
    assert result.valid or result.reason
    digits = "".join(ch for ch in raw if ch.isdigit())
    if len(digits) >= 4:
        assert digits not in result.reason


@given(st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True))
def test_every_mobile_is_its_own_canonical_form(number: str) -> None:
    assert normalize_phone(number) == number
    assert normalize_phone(normalize_phone("+86 " + number)) == number
