"""Address normalisation rules, one case per rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from healthroam.registry.addresses import (
    PROVINCES,
    AddressNumbers,
    address_tokens,
    chinese_numeral,
    extract_numbers,
    normalize_address,
    normalize_address_text,
    strip_province,
)

HAIKOU = "460106"  # 海口市龙华区
CANONICAL = "海口市龙华区滨海大道123号5栋2单元501室"

# --- rules 1 and 2: folding, simplification, spaces and punctuation --------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("滨海大道１２３号", "滨海大道123号", id="full-width digits"),
        pytest.param("滨海大道123號", "滨海大道123号", id="traditional 號"),
        pytest.param("龍華區", "龙华区", id="traditional place names"),
        pytest.param("2單元", "2单元", id="traditional 單元"),
        pytest.param("滨海大\uf937", "滨海大路", id="compatibility ideograph 路"),
        pytest.param("滨海 大道\u3000123 号", "滨海大道123号", id="spaces removed"),
        pytest.param("海口市，龙华区。滨海大道（东）", "海口市龙华区滨海大道东", id="punctuation"),
        pytest.param("滨海\u200b大道", "滨海大道", id="invisible characters"),
        pytest.param("3\u20142\uff0d501", "3-2-501", id="dash variants between digits"),
        pytest.param("滨海大道-123号", "滨海大道123号", id="dash not between digits"),
        pytest.param("a栋", "A栋", id="Latin upper-cased"),
    ],
)
def test_text_folding(raw: str, expected: str) -> None:
    assert normalize_address_text(raw) == expected


# --- rule 3: Chinese numerals before unit words ----------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("三单元", "3单元", id="单元"),
        pytest.param("十二栋", "12栋", id="ten and units"),
        pytest.param("第十二栋", "12栋", id="ordinal 第"),
        pytest.param("第5栋", "5栋", id="ordinal with digits"),
        pytest.param("二〇一室", "201室", id="digit by digit"),
        pytest.param("一百零五号", "105号", id="hundreds with zero"),
        pytest.param("三组", "3组", id="village group"),
        pytest.param("三亚市", "三亚市", id="numeral in a place name stays"),
        pytest.param("五一路", "五一路", id="numeral before 路 stays"),
    ],
)
def test_chinese_numerals_before_unit_words(raw: str, expected: str) -> None:
    assert normalize_address_text(raw) == expected


@pytest.mark.parametrize(
    ("numeral", "value"),
    [
        ("十", 10),
        ("十二", 12),
        ("二十", 20),
        ("一百零五", 105),
        ("两千零一十", 2010),
        ("二〇一", 201),
    ],
)
def test_chinese_numeral(numeral: str, value: int) -> None:
    assert chinese_numeral(numeral) == value


@pytest.mark.parametrize("text", ["", "三亚", "12"])
def test_chinese_numeral_rejects_other_text(text: str) -> None:
    assert chinese_numeral(text) is None


# --- rule 4: variants after a number ---------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("5幢", "5栋", id="幢"),
        pytest.param("5座", "5栋", id="座"),
        pytest.param("A座", "A栋", id="lettered 座"),
        pytest.param("5号楼", "5栋", id="号楼"),
        pytest.param("501房", "501室", id="房"),
        pytest.param("5#", "5号", id="hash"),
        pytest.param("5#楼", "5栋", id="hash and 楼"),
        pytest.param("5F", "5层", id="F for floor"),
        pytest.param("书房", "书房", id="房 without a number stays"),
        pytest.param("宝座", "宝座", id="座 without a number stays"),
    ],
)
def test_variants_after_numbers(raw: str, expected: str) -> None:
    assert normalize_address_text(raw) == expected


# --- rule 5: country and province in the key -------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("海南省海口市龙华区滨海大道123号5栋2单元501室", id="full province"),
        pytest.param("海南海口市龙华区滨海大道123号5栋2单元501室", id="short province"),
        pytest.param("中国海南省海口市龙华区滨海大道123号5栋2单元501室", id="country"),
        pytest.param("海口市龙华区滨海大道123号5栋2单元501室", id="no province"),
        pytest.param(
            "海南省 海口市 龍華區 濱海大道１２３號 ５幢 ２單元 ５０１房", id="everything at once"
        ),
    ],
)
def test_same_address_same_key(raw: str) -> None:
    assert normalize_address(raw, region_code=HAIKOU).key == CANONICAL


def test_province_is_kept_without_a_region_code() -> None:
    address = normalize_address("海南省海口市")
    assert address.key == "海南省海口市"
    assert address.text == "海南省海口市"


def test_province_of_another_region_is_kept() -> None:
    assert strip_province("海南省海口市", "440104") == "海南省海口市"


def test_short_province_name_kept_when_no_city_follows() -> None:
    assert strip_province("海南大学", HAIKOU) == "海南大学"


def test_country_is_stripped_without_a_region_code() -> None:
    assert strip_province("中华人民共和国海南省", None) == "海南省"


def test_province_table_covers_every_province_level_division() -> None:
    assert len(PROVINCES) == 34
    assert PROVINCES["46"] == ("海南省", "海南")


# --- tokens and numbers ----------------------------------------------------------------------


def test_tokens() -> None:
    assert address_tokens(CANONICAL) == [
        "海口市",
        "龙华区",
        "滨海大道",
        "123号",
        "5栋",
        "2单元",
        "501室",
    ]


def test_tokens_keep_compound_words_and_the_rest() -> None:
    assert address_tokens("金盘社区椰风小区3-2-501") == ["金盘社区", "椰风小区", "3-2-501"]


def test_normalize_address_tokens_are_a_set() -> None:
    address = normalize_address("海南省海口市龙华区滨海大道123号", region_code=HAIKOU)
    assert address.tokens == {"海口市", "龙华区", "滨海大道", "123号"}


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        pytest.param(CANONICAL, AddressNumbers("123", "5", "2", None, "501"), id="explicit words"),
        pytest.param("滨海大道12-1号6层", AddressNumbers("12-1", floor="6"), id="dashed house"),
        pytest.param(
            "海甸五西路28号3-2-501", AddressNumbers("28", "3", "2", None, "501"), id="dashed triple"
        ),
        pytest.param("椰风小区3-501", AddressNumbers(None, "3", None, None, "501"), id="pair"),
        pytest.param("A栋1203室", AddressNumbers(building="A", room="1203"), id="lettered"),
        pytest.param("海南大学", AddressNumbers(), id="none"),
    ],
)
def test_extract_numbers(text: str, numbers: AddressNumbers) -> None:
    assert extract_numbers(text) == numbers


# --- properties ------------------------------------------------------------------------------


@given(st.text(max_size=40))
def test_normalisation_never_raises_and_is_idempotent(raw: str) -> None:
    once = normalize_address(raw, region_code=HAIKOU)
    assert normalize_address_text(once.text) == once.text
    assert " " not in once.text


@given(st.text(alphabet="海南省口市龙华区大道一二三十号栋幢座单元室房#- 0123456789", max_size=30))
def test_idempotent_on_address_like_text(raw: str) -> None:
    text = normalize_address_text(raw)
    assert normalize_address_text(text) == text
