"""Pinyin keys: heteronyms, surname readings, caps, initials and homophones."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from healthroam.registry.pinyin_keys import (
    DEFAULT_LIMIT,
    char_readings,
    initials_keys,
    latin_pinyin_keys,
    name_pinyin_keys,
    pinyin_keys,
    pinyin_readings,
    primary_pinyin_key,
    same_pinyin,
    surname_readings,
)

# --- the surname table -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("曾国藩", "zengguofan"),
        ("单田芳", "shantianfang"),
        ("解缙", "xiejin"),
        ("区永", "ouyong"),
        ("仇英", "qiuying"),
        ("查良镛", "zhaliangyong"),
        ("朴树", "piaoshu"),
        ("繁钦", "poqin"),
        ("员半千", "yunbanqian"),
        ("种师道", "chongshidao"),
        ("翟天临", "zhaitianlin"),
        ("尉迟恭", "yuchigong"),
        ("万俟卨", "moqixie"),
        ("长孙无忌", "zhangsunwuji"),
        ("缪斌", "miaobin"),
        ("召平", "shaoping"),
        ("秘丹", "bidan"),
        ("句芒", "goumang"),
        ("柏杨", "baiyang"),
        ("黑明", "heming"),
        ("能平", "naiping"),
        ("都平", "duping"),
        ("折平", "sheping"),
        ("逄平", "pangping"),
        ("沈平", "shenping"),
        ("薄平", "boping"),
        ("任平", "renping"),
        ("华平", "huaping"),
    ],
)
def test_surname_position_uses_the_surname_reading(name: str, key: str) -> None:
    assert primary_pinyin_key(name) == key


@pytest.mark.parametrize(
    ("name", "wrong"),
    [("曾平", "cengping"), ("单平", "danping"), ("解平", "jieping"), ("区平", "quping")],
)
def test_surname_position_drops_the_non_surname_reading(name: str, wrong: str) -> None:
    assert wrong not in pinyin_keys(name)


def test_surname_with_two_readings_keeps_both() -> None:
    assert pinyin_keys("乐伟") == {"yuewei", "lewei"}
    assert primary_pinyin_key("乐伟") == "yuewei"


def test_surname_not_in_table_gets_every_reading() -> None:
    # 红 is no surname in the table; pypinyin reads it hong or gong.
    assert pinyin_keys("红伟") == {"hongwei", "gongwei"}


def test_common_surname_drops_rare_readings() -> None:
    # pypinyin also reads 于 as wei or xu; as a surname it is only yu.
    assert pinyin_keys("于伟") == {"yuwei"}


def test_surname_table_loads_with_one_syllable_per_character() -> None:
    table = surname_readings()
    assert table["曾"] == (("zeng",),)
    assert table["尉迟"] == (("yu", "chi"),)
    assert all(len(r) == len(s) for s, readings in table.items() for r in readings)


# --- heteronyms in the given name ------------------------------------------------------------


def test_given_name_gets_every_heteronym_reading() -> None:
    assert pinyin_keys("张乐") == {"zhangle", "zhangyue"}


def test_same_character_reads_differently_as_surname_and_given_name() -> None:
    # 曾 as a surname is only zeng; in the given name it is ceng or zeng.
    assert pinyin_keys("曾曾") == {"zengceng", "zengzeng"}


def test_char_readings_are_toneless_with_v_for_u_umlaut() -> None:
    assert char_readings("吕") == ("lv",)
    assert set(char_readings("乐")) == {"le", "yue"}
    assert char_readings("a") == ("a",)
    assert char_readings("·") == ()


def test_source_surname_overrides_the_split() -> None:
    # Without a hint 单于 is a compound surname (chanyu); the source says surname 单.
    assert primary_pinyin_key("单于平") == "chanyuping"
    assert primary_pinyin_key("单于平", surname="单") == "shanyuping"


def test_transliterated_names_read_every_character() -> None:
    assert primary_pinyin_key("买买提·艾力").startswith("maimai")


def test_traditional_input_is_read_as_simplified() -> None:
    assert pinyin_keys("張偉") == pinyin_keys("张伟")


# --- the cap ---------------------------------------------------------------------------------


def test_keys_are_capped_and_keep_the_preferred_reading() -> None:
    name = "曾重重重重乐"  # 2 x 2 x 2 x 2 x 2 combinations in the given name
    keys = pinyin_keys(name)
    assert len(keys) == DEFAULT_LIMIT
    assert primary_pinyin_key(name) in keys
    assert len(pinyin_keys(name, limit=4)) == 4


def test_readings_are_ordered_preferred_first() -> None:
    readings = pinyin_readings("张乐")
    assert readings[0] == ("zhang", "le")


@pytest.mark.parametrize("name", ["", "Zhang Wei", "123", "李John"])
def test_non_han_names_have_no_pinyin_keys(name: str) -> None:
    assert pinyin_keys(name) == frozenset()
    assert primary_pinyin_key(name) == ""


def test_limit_below_one_gives_nothing() -> None:
    assert pinyin_readings("张三", limit=0) == []


@given(st.text(max_size=12))
def test_pinyin_keys_never_raise_and_respect_the_cap(text: str) -> None:
    keys = pinyin_keys(text)
    assert len(keys) <= DEFAULT_LIMIT
    assert all(key.isascii() for key in keys)


# --- initials --------------------------------------------------------------------------------


def test_initials_key() -> None:
    assert initials_keys("张三丰") == {"zsf"}


def test_initials_follow_heteronyms() -> None:
    assert initials_keys("张乐") == {"zl", "zy"}


# --- romanised names -------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["Zhang Wei", "ZHANG WEI", "Wei Zhang", "zhang, wei"])
def test_latin_pinyin_keys_either_order(raw: str) -> None:
    assert "zhangwei" in latin_pinyin_keys(raw)


def test_latin_pinyin_keys_family_name_last_with_split_given_name() -> None:
    assert "wangxiaoming" in latin_pinyin_keys("Xiao Ming Wang")
    assert "wangxiaoming" in latin_pinyin_keys("WANG Xiao-Ming")


@pytest.mark.parametrize("raw", ["LYU Wei", "Lü Wei", "Lu\u0308 Wei", "LV Wei"])
def test_latin_u_umlaut_spellings_read_as_v(raw: str) -> None:
    assert "lvwei" in latin_pinyin_keys(raw)


def test_nyu_inside_a_token_is_not_u_umlaut() -> None:
    assert "anyu" in latin_pinyin_keys("Anyu")


def test_latin_pinyin_keys_of_blank_is_empty() -> None:
    assert latin_pinyin_keys(" ") == frozenset()


def test_name_pinyin_keys_dispatches_on_script() -> None:
    assert "zhangwei" in name_pinyin_keys("張偉")
    assert "zhangwei" in name_pinyin_keys("Wei Zhang")
    assert name_pinyin_keys("Иван") == frozenset()


# --- homophones ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param("张伟", "章伟", id="homophone surnames"),
        pytest.param("张伟", "张玮", id="homophone given names"),
        pytest.param("张乐", "张悦", id="second reading of a heteronym"),
        pytest.param("张伟", "Zhang Wei", id="Han and romanised"),
        pytest.param("Wei Zhang", "张伟", id="romanised first, family name last"),
        pytest.param("吕伟", "LYU WEI", id="passport spelling of lv"),
        pytest.param("曾伟", "Zeng Wei", id="surname table applies"),
    ],
)
def test_same_pinyin(a: str, b: str) -> None:
    assert same_pinyin(a, b)
    assert same_pinyin(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param("张伟", "李伟", id="different surnames"),
        pytest.param("曾伟", "Ceng Wei", id="non-surname reading of 曾"),
        pytest.param("张伟", "", id="empty"),
        pytest.param("", "", id="both empty"),
    ],
)
def test_not_same_pinyin(a: str, b: str) -> None:
    assert not same_pinyin(a, b)


@given(st.text(alphabet="张章伟玮乐曾单李", min_size=1, max_size=4))
def test_same_pinyin_is_reflexive_for_han_names(name: str) -> None:
    assert same_pinyin(name, name)
