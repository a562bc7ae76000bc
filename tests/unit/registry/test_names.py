"""Name normalisation rules, one case per rule (see docs/registry-normalisation.md)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from healthroam.errors import InvalidInput
from healthroam.registry.names import (
    COMPOUND_SURNAMES,
    MIDDLE_DOT,
    ChineseName,
    NormalizedName,
    Script,
    clean_text,
    detect_script,
    fold_latin,
    latin_name_key,
    latin_tokens,
    normalize_chinese_name,
    normalize_latin_name,
    normalize_name,
    parse_name,
    split_chinese_name,
    to_simplified,
    unify_dots,
)

# --- cleaning: NFKC, invisible characters, spaces --------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("ＺＨＡＮＧ", "ZHANG", id="full-width Latin folds to half-width"),
        pytest.param("张\u3000三", "张 三", id="ideographic space becomes a space"),
        pytest.param("张\u200b三", "张三", id="zero-width space removed"),
        pytest.param("\ufeff张三", "张三", id="byte-order mark removed"),
        pytest.param("张\u200d三\u00ad", "张三", id="joiner and soft hyphen removed"),
        pytest.param("  张 \t 三\n", "张 三", id="whitespace runs collapse and trim"),
        pytest.param("\uf9b4", "\u9818", id="CJK compatibility ideograph folds to unified"),
    ],
)
def test_clean_text(raw: str, expected: str) -> None:
    assert clean_text(raw) == expected


# --- Chinese names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("張三", "张三", id="traditional to simplified"),
        pytest.param("歐陽鋒", "欧阳锋", id="traditional compound surname"),
        pytest.param("张 三", "张三", id="spaces removed"),
        pytest.param("张\u3000三", "张三", id="ideographic space removed"),
        pytest.param("张\u200b三", "张三", id="invisible character removed"),
        pytest.param("李四", "李四", id="simplified unchanged"),
        pytest.param("O\u00af", "\u014c", id="refolded after spaces are removed"),
    ],
)
def test_normalize_chinese_name(raw: str, expected: str) -> None:
    assert normalize_chinese_name(raw) == expected


@pytest.mark.parametrize(
    "dot",
    [
        "\u00b7",
        "\u2027",
        "\u2022",
        "\u30fb",
        "\uff0e",
        ".",
        "\uff65",
        "\u0387",
        "\u2219",
        "\u22c5",
        "\u2024",
        "\u2e31",
        "\ua78f",
    ],
    ids=lambda dot: f"U+{ord(dot):04X}",
)
def test_dot_lookalikes_become_middle_dot(dot: str) -> None:
    assert normalize_chinese_name(f"买买提{dot}艾力") == "买买提·艾力"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("买买提 · 艾力", "买买提·艾力", id="no spaces around the dot"),
        pytest.param("买买提··艾力", "买买提·艾力", id="doubled dots collapse"),
        pytest.param("·买买提·艾力·", "买买提·艾力", id="leading and trailing dots dropped"),
        pytest.param("阿卜杜拉•买买提•吐尔逊", "阿卜杜拉·买买提·吐尔逊", id="three parts"),
    ],
)
def test_unify_dots_in_names(raw: str, expected: str) -> None:
    assert normalize_chinese_name(raw) == expected


def test_unify_dots_leaves_text_without_dots() -> None:
    assert unify_dots("a b") == "a b"


def test_to_simplified_leaves_ascii_alone() -> None:
    assert to_simplified("Zhang") == "Zhang"


# --- script detection ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "script"),
    [
        ("张三", Script.HAN),
        ("买买提·艾力", Script.HAN),
        ("〇", Script.HAN),
        ("Zhang San", Script.LATIN),
        ("Zoë", Script.LATIN),
        ("李John", Script.MIXED),
        ("Иван", Script.OTHER),
        ("", Script.OTHER),
        ("123", Script.OTHER),
    ],
)
def test_detect_script(text: str, script: Script) -> None:
    assert detect_script(text) is script


# --- Latin names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("ZHANG", "zhang", id="case folded"),
        pytest.param("Straße", "strasse", id="case folding expands sharp s"),
        pytest.param("Zoë Müller", "zoe muller", id="diacritics removed"),
        pytest.param("Łukasz Søren", "lukasz soren", id="letters without combining marks"),
        pytest.param("Ｚｈａｎｇ", "zhang", id="full-width letters"),
    ],
)
def test_fold_latin_and_normalize(raw: str, expected: str) -> None:
    assert normalize_latin_name(raw) == expected


@pytest.mark.parametrize(
    ("raw", "tokens"),
    [
        pytest.param("O'Brien", ["obrien"], id="apostrophe dropped"),
        pytest.param("O\u2019Brien", ["obrien"], id="curly apostrophe dropped"),
        pytest.param("Xiao-Ming Wang", ["xiaoming", "wang"], id="hyphen joins"),
        pytest.param("Xiao\u2013Ming", ["xiaoming"], id="en dash joins"),
        pytest.param("zhang, wei", ["zhang", "wei"], id="comma separates"),
        pytest.param("J.R. Smith", ["j", "r", "smith"], id="periods separate"),
        pytest.param("  ", [], id="blank"),
    ],
)
def test_latin_tokens(raw: str, tokens: list[str]) -> None:
    assert latin_tokens(raw) == tokens


@pytest.mark.parametrize("raw", ["ZHANG Wei", "Wei Zhang", "zhang, wei", "  WEI   ZHANG "])
def test_latin_name_key_ignores_order_case_and_commas(raw: str) -> None:
    assert latin_name_key(raw) == "wei zhang"


def test_fold_latin_keeps_han() -> None:
    assert fold_latin("李JOHN") == "李john"


# --- normalize_name over every script --------------------------------------------------------


def test_normalize_name_han() -> None:
    assert normalize_name(" 張 三 ") == NormalizedName("张三", Script.HAN, "张三")


def test_normalize_name_latin_key_is_order_insensitive() -> None:
    name = normalize_name("ZHANG Wei")
    assert (name.text, name.script, name.key) == ("zhang wei", Script.LATIN, "wei zhang")


def test_normalize_name_mixed() -> None:
    assert normalize_name("李 JOHN").key == "李john"


def test_normalize_name_other_script_is_case_folded() -> None:
    assert normalize_name("ИВАН").text == "иван"


@given(st.text())
def test_normalize_name_never_raises_and_is_idempotent(raw: str) -> None:
    once = normalize_name(raw)
    assert normalize_name(once.text).text == once.text


@given(st.text(alphabet=st.characters(categories=["Lo", "Zs", "Po", "Cf"])))
def test_normalize_chinese_name_is_idempotent(raw: str) -> None:
    once = normalize_chinese_name(raw)
    assert normalize_chinese_name(once) == once
    assert " " not in once


@given(st.text())
def test_latin_name_key_is_idempotent(raw: str) -> None:
    key = latin_name_key(raw)
    assert latin_name_key(key) == key


# --- parse_name: validation ------------------------------------------------------------------


def test_parse_name_accepts_a_name() -> None:
    assert parse_name("張三").text == "张三"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("  \u200b ", "empty"),
        ("张3", "digits"),
        ("--", "no letters"),
    ],
)
def test_parse_name_rejects_without_echoing_the_name(raw: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_name(raw, expression="Patient.name[0]")
    assert reason in caught.value.detail
    assert caught.value.expression == "Patient.name[0]"
    if raw.strip():
        assert raw.strip() not in caught.value.detail


# --- splitting surname and given name --------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("张三", ChineseName("张", "三"), id="single surname"),
        pytest.param("张三丰", ChineseName("张", "三丰"), id="single surname two-char given"),
        pytest.param("欧阳修", ChineseName("欧阳", "修"), id="compound surname"),
        pytest.param("歐陽修", ChineseName("欧阳", "修"), id="traditional compound surname"),
        pytest.param("司马相如", ChineseName("司马", "相如"), id="compound with two-char given"),
        pytest.param("诸葛亮", ChineseName("诸葛", "亮"), id="zhuge"),
        pytest.param("欧阳", ChineseName("欧", "阳"), id="two chars only: single surname"),
        pytest.param("王", ChineseName("王", ""), id="one character"),
        pytest.param(
            "买买提·艾力", ChineseName("", "买买提·艾力", transliterated=True), id="dotted name"
        ),
    ],
)
def test_split_chinese_name(raw: str, expected: ChineseName) -> None:
    assert split_chinese_name(raw) == expected


def test_split_uses_the_source_surname_when_given() -> None:
    # 张王明: a double surname the table cannot know, sent as family="张王" by the source.
    assert split_chinese_name("张王明", surname="张王") == ChineseName("张王", "明")


def test_split_ignores_a_source_surname_that_does_not_prefix_the_name() -> None:
    assert split_chinese_name("李四", surname="王") == ChineseName("李", "四")


@pytest.mark.parametrize("surname", sorted(COMPOUND_SURNAMES))
def test_every_compound_surname_splits(surname: str) -> None:
    assert split_chinese_name(surname + "明").surname == surname


def test_split_rejects_latin_names() -> None:
    with pytest.raises(InvalidInput) as caught:
        split_chinese_name("Zhang San")
    assert "Zhang" not in caught.value.detail


def test_chinese_name_full() -> None:
    assert ChineseName("欧阳", "修").full == "欧阳修"
    assert MIDDLE_DOT == "\u00b7"
