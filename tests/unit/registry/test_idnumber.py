from __future__ import annotations

from datetime import date

import pytest

from healthroam.errors import InvalidInput
from healthroam.registry import idnumber, regions
from healthroam.registry.idnumber import IdProblem, Sex

# The standard's own worked example (GB 11643-1999 annex).
EXAMPLE = "11010519491231002X"
TODAY = date(2026, 11, 25)


def test_check_character_of_the_standard_example() -> None:
    assert idnumber.check_character(EXAMPLE[:17]) == "X"


def test_valid_number_parses_to_birth_date_and_sex() -> None:
    parsed = idnumber.parse(EXAMPLE, today=TODAY)
    assert parsed.birth_date == date(1949, 12, 31)
    assert parsed.sex is Sex.FEMALE
    assert parsed.region_code == "110105"
    assert not parsed.legacy


def test_lower_case_x_and_full_width_digits_are_normalised() -> None:
    assert idnumber.validate(EXAMPLE.lower(), today=TODAY).ok
    full = EXAMPLE.translate(str.maketrans("0123456789X", "０１２３４５６７８９Ｘ"))
    assert idnumber.validate(full, today=TODAY).ok


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("1101051949123100", IdProblem.LENGTH),
        ("11010519491231002X1", IdProblem.LENGTH),
        ("1101051949123100AX", IdProblem.CHARACTERS),
        ("X10105194912310021", IdProblem.CHARACTERS),
        ("99010519491231002X", IdProblem.REGION),
        ("110105194902300020", IdProblem.DATE),
        ("110105189912310020", IdProblem.DATE),
        ("110105203012310020", IdProblem.DATE),
        ("110105194912310021", IdProblem.CHECK_DIGIT),
        ("11010549123100", IdProblem.LENGTH),
        ("110105491331002", IdProblem.DATE),
        ("11010549123100A", IdProblem.CHARACTERS),
    ],
)
def test_invalid_numbers_give_the_precise_reason(value: str, problem: IdProblem) -> None:
    result = idnumber.validate(value, today=TODAY)
    assert result.problem is problem
    assert result.reason is not None
    assert value not in result.reason


def test_parse_raises_invalid_input_without_the_number() -> None:
    bad = "110105194912310021"
    with pytest.raises(InvalidInput) as info:
        idnumber.parse(bad, today=TODAY)
    assert bad not in str(info.value)
    assert "check digit" in info.value.detail
    assert info.value.expression == "identifier"


def test_region_check_can_require_a_known_hainan_code() -> None:
    body = "46010519800101001"
    number = body + idnumber.check_character(body)
    assert idnumber.validate(number, today=TODAY, region_known=regions.is_known).ok
    body = "46999919800101001"
    number = body + idnumber.check_character(body)
    assert idnumber.validate(number, today=TODAY).ok
    result = idnumber.validate(number, today=TODAY, region_known=regions.is_known)
    assert result.problem is IdProblem.REGION


def test_legacy_number_converts_to_a_valid_18_digit_number() -> None:
    legacy = "469003650704123"
    converted = idnumber.to_18(legacy, today=TODAY)
    assert len(converted) == 18
    assert converted[:6] == "469003"
    assert converted[6:14] == "19650704"
    assert idnumber.validate(converted, today=TODAY).ok
    assert idnumber.parse(legacy, today=TODAY).legacy
    assert idnumber.sex(legacy, today=TODAY) is Sex.MALE
    assert idnumber.to_15(converted) == legacy


def test_to_15_refuses_people_born_after_1999() -> None:
    body = "46010520010101002"
    with pytest.raises(InvalidInput):
        idnumber.to_15(body + idnumber.check_character(body))


def test_check_character_needs_17_digits() -> None:
    with pytest.raises(InvalidInput):
        idnumber.check_character("1234")
