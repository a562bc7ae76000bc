from __future__ import annotations

from datetime import date

import pytest

from healthroam.cards.model import (
    CardKind,
    check_use_codes,
    holder_from_golden,
    luhn_digit,
    masked_document,
    region_prefix,
)
from healthroam.errors import InvalidInput

MID = "AB" * 32


def test_holder_from_registry_style_golden_record() -> None:
    holder = holder_from_golden(
        7,
        MID,
        {
            "name": "张三",
            "sex": "1",
            "birth_date": "1990-01-01",
            "national_id": "46010019900101123x",
            "region": "460106",
            "identifiers": ["urn:healthroam:passport|E12345678"],
        },
    )
    assert (holder.name, holder.sex, holder.birth_date) == ("张三", 1, date(1990, 1, 1))
    assert (holder.id_type, holder.id_number) == ("01", "46010019900101123X")
    assert holder.region == "460106"
    assert holder.kind is CardKind.ELECTRONIC


def test_visitor_with_passport_gets_a_temporary_card() -> None:
    holder = holder_from_golden(
        1,
        MID,
        {
            "name": "John Smith",
            "gender": "male",
            "birthDate": "1980-05-06",
            "identifiers": [{"system": "urn:healthroam:passport", "value": "E1234567"}],
        },
    )
    assert (holder.id_type, holder.id_number, holder.kind) == ("03", "E1234567", CardKind.TEMPORARY)
    assert holder.region is None  # no national ID to take it from


def test_no_document_no_card_type() -> None:
    holder = holder_from_golden(1, MID, {"name": "王五"})
    assert holder.id_type is None
    assert holder.birth_date is None


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("46010019900101123X", "4601**********123X"),
        ("E1234567", "****4567"),
        ("E12345678", "****5678"),
        ("123", "****"),
    ],
)
def test_masking_never_shows_more_than_eight_characters(number: str, masked: str) -> None:
    assert masked_document(number) == masked


@pytest.mark.parametrize(
    ("region", "prefix"), [("460000", "46"), ("460100", "4601"), ("460106", "460106")]
)
def test_region_prefix(region: str, prefix: str) -> None:
    assert region_prefix(region) == prefix


def test_region_prefix_refuses_non_codes() -> None:
    with pytest.raises(InvalidInput):
        region_prefix("4601")


def test_luhn() -> None:
    assert luhn_digit("7992739871") == "3"


def test_use_codes() -> None:
    check_use_codes("01", "02", "T-1")
    for step, channel, terminal, expression in (
        ("00", "01", "T", "step"),
        ("01", "00", "T", "channel"),
        ("01", "01", "bad terminal", "terminal"),
    ):
        with pytest.raises(InvalidInput) as caught:
            check_use_codes(step, channel, terminal)
        assert caught.value.expression == expression
