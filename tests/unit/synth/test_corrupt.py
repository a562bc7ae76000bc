from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from healthroam.registry import idnumber
from healthroam.synth import corrupt, names
from healthroam.synth.corrupt import Error


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_transposed_date_is_a_different_real_date(rng: np.random.Generator) -> None:
    for day in (date(1985, 3, 12), date(1990, 11, 11), date(2001, 1, 30), date(1946, 2, 8)):
        result = corrupt.transpose_date(day, rng)
        assert result != day
        assert sorted(result.strftime("%Y%m%d")) == sorted(day.strftime("%Y%m%d"))
    # never in the future: 2025-12-01 could become 2052-12-01 or 2025-10-21; only the latter
    for _ in range(20):
        assert corrupt.transpose_date(date(2025, 12, 1), rng, date(2026, 1, 1)) < date(2026, 1, 1)
    # no swap of 19770707 gives a real date: left alone (and so not flagged as an error)
    assert corrupt.transpose_date(date(1977, 7, 7), rng) == date(1977, 7, 7)


def test_mistyped_id_differs_from_the_original(rng: np.random.Generator) -> None:
    body = "46010519800101001"
    number = body + idnumber.check_character(body)
    for _ in range(50):
        wrong = corrupt.mistype_id(number, rng)
        assert wrong != number
        assert len(wrong) == 18
    for _ in range(50):
        wrong = corrupt.mistype_id("E01602829", rng)  # a passport number
        assert wrong != "E01602829"
        assert wrong.count("E") == 1
        assert len(wrong) == 9


def test_homophone_replaces_with_a_same_sounding_character(rng: np.random.Generator) -> None:
    result = corrupt.homophone("张", rng)
    assert result in names.homophones()["张"]
    assert "章" in names.homophones()["张"]


def test_typo_changes_latin_names_by_swapping_letters(rng: np.random.Generator) -> None:
    result = corrupt.typo("Olga Smirnova", rng)
    assert result != "Olga Smirnova"
    assert sorted(result) == sorted("Olga Smirnova")
    assert names.MIDDLE_DOT in corrupt.typo(f"阿卜杜拉{names.MIDDLE_DOT}买买提", rng)


def test_traditional_script() -> None:
    assert names.to_traditional("陈伟") == "陳偉"


def test_error_names() -> None:
    assert corrupt.error_names(Error.HOMOPHONE | Error.PHONE_CHANGED) == "homophone;phone_changed"
    assert corrupt.error_names(0) == ""
