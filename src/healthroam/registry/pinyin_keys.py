"""Pinyin keys of Chinese names for blocking and comparison (拼音键).

Two records of one person often differ in the characters but not the sound: a clerk picks a
homophone (张伟 / 章伟), or a hospital only has the romanised name from a passport. The master
patient index therefore compares names also by their pinyin.

* Every reading of a heteronym (多音字) counts: pypinyin with ``heteronym=True`` and
  ``Style.NORMAL`` (no tones, ü written ``v``), so 乐 gives both "le" and "yue".
* pypinyin has no surname mode, so the surname position uses ``data/surname_readings.csv``
  (曾 zeng, 单 shan, 解 xie, 区 ou ...). Surnames not in the table get all their readings.
* The combinations are capped (default 16 keys); the first key is always the preferred
  reading of every character.
"""

from __future__ import annotations

import csv
import functools
import itertools
from importlib import resources

from healthroam.registry.names import (
    MIDDLE_DOT,
    Script,
    detect_script,
    is_han,
    latin_tokens,
    normalize_chinese_name,
    split_chinese_name,
)

DEFAULT_LIMIT = 16

Reading = tuple[str, ...]  # one pronunciation of a surname: one syllable per character


@functools.cache
def surname_readings() -> dict[str, tuple[Reading, ...]]:
    """The surname reading table: surname -> its readings as a surname, preferred first."""
    table: dict[str, tuple[Reading, ...]] = {}
    source = resources.files("healthroam.registry").joinpath("data/surname_readings.csv")
    for row in csv.DictReader(source.read_text(encoding="utf-8").splitlines()):
        readings = tuple(tuple(r.split()) for r in row["readings"].split("|"))
        if any(len(reading) != len(row["surname"]) for reading in readings):
            raise ValueError("surname_readings.csv: a reading needs one syllable per character")
        table[row["surname"]] = readings
    return table


@functools.cache
def char_readings(char: str) -> tuple[str, ...]:
    """All toneless readings of one character, most common first (ü as ``v``).

    Latin letters and digits read as themselves (lower case); other characters have none.
    """
    if is_han(char):
        from pypinyin import Style, pinyin

        readings = pinyin(char, style=Style.NORMAL, heteronym=True, errors="ignore")
        return tuple(dict.fromkeys(readings[0])) if readings else ()
    if char.isascii() and char.isalnum():
        return (char.lower(),)
    return ()


def _syllable_options(text: str) -> list[tuple[str, ...]]:
    return [options for options in map(char_readings, text) if options]


@functools.lru_cache(maxsize=16_384)
def _surname_options(surname: str) -> tuple[tuple[Reading, ...], ...]:
    """The surname as one position whose options are whole-surname readings."""
    known = surname_readings().get(surname)
    if known is not None:
        return (known,)
    return tuple(
        tuple((syllable,) for syllable in options) for options in _syllable_options(surname)
    )


@functools.cache
def _char_options(char: str) -> tuple[Reading, ...]:
    """A given-name character's readings as one-syllable readings (empty if it has none)."""
    return tuple((syllable,) for syllable in char_readings(char))


def pinyin_readings(
    name: str, *, surname: str | None = None, limit: int = DEFAULT_LIMIT
) -> list[tuple[str, ...]]:
    """Candidate pronunciations of a Chinese name, as syllable tuples, preferred first.

    The surname (from ``surname`` or :func:`~healthroam.registry.names.split_chinese_name`)
    uses the surname table; each given-name character contributes all its readings. At most
    ``limit`` readings are returned. Names that are not Han give an empty list.
    """
    text = normalize_chinese_name(name)
    if limit < 1 or detect_script(text) is not Script.HAN:
        return []
    parts = split_chinese_name(text, surname=surname)
    surnames = _surname_combinations(parts.surname, limit) if parts.surname else _NOTHING
    givens = _given_combinations(parts.given.replace(MIDDLE_DOT, ""), limit)
    if surnames is _NOTHING and givens is _NOTHING:  # no position has a reading
        return []
    # itertools.product over the surname's positions and then the given name's varies the
    # last position fastest: every surname combination in turn, followed by every given-name
    # combination. Each part's combinations come deduplicated and cut at ``limit`` from a
    # cache (given names repeat far more than whole names); the joined readings are distinct
    # exactly when the parts are (a surname's combinations all have the same number of
    # syllables), so this is the product's first ``limit`` distinct readings (decision 0050).
    readings: list[tuple[str, ...]] = []
    for first in surnames:
        for rest in givens:
            readings.append(first + rest)
            if len(readings) >= limit:
                return readings
    return readings


_NOTHING: tuple[tuple[str, ...], ...] = ((),)  # the combinations of no position


def _distinct_combinations(
    positions: list[tuple[Reading, ...]], limit: int
) -> tuple[tuple[str, ...], ...]:
    """The first ``limit`` distinct syllable sequences of the positions' product, in order."""
    if not positions:
        return _NOTHING
    found: dict[tuple[str, ...], None] = {}
    for combination in itertools.product(*positions):
        found[tuple(itertools.chain.from_iterable(combination))] = None
        if len(found) >= limit:
            break
    return tuple(found)


@functools.lru_cache(maxsize=16_384)
def _surname_combinations(surname: str, limit: int) -> tuple[tuple[str, ...], ...]:
    return _distinct_combinations(list(_surname_options(surname)), limit)


@functools.lru_cache(maxsize=131_072)
def _given_combinations(given: str, limit: int) -> tuple[tuple[str, ...], ...]:
    positions = [options for options in map(_char_options, given) if options]
    return _distinct_combinations(positions, limit)


def pinyin_keys(
    name: str, *, surname: str | None = None, limit: int = DEFAULT_LIMIT
) -> frozenset[str]:
    """Blocking keys of a Chinese name: each candidate reading with syllables run together.

    张乐 -> {"zhangle", "zhangyue"}; 曾乐 -> {"zengle", "zengyue"} (surname 曾 is never ceng).
    """
    return frozenset("".join(r) for r in pinyin_readings(name, surname=surname, limit=limit))


def primary_pinyin_key(name: str, *, surname: str | None = None) -> str:
    """The single most likely key (preferred reading of each position), or "" if none."""
    readings = pinyin_readings(name, surname=surname, limit=1)
    return "".join(readings[0]) if readings else ""


def initials_keys(
    name: str, *, surname: str | None = None, limit: int = DEFAULT_LIMIT
) -> frozenset[str]:
    """First letter of every syllable, for each candidate reading (张三丰 -> {"zsf"})."""
    readings = pinyin_readings(name, surname=surname, limit=limit)
    return frozenset("".join(s[0] for s in reading) for reading in readings)


def latin_pinyin_keys(name: str) -> frozenset[str]:
    """Keys of a romanised Chinese name, comparable with :func:`pinyin_keys`.

    Order-insensitive for two-part names: "Zhang Wei" and "WEI Zhang" both give
    {"zhangwei", "weizhang"}. Apostrophes and hyphens vanish ("Xi'an", "Xiao-Ming"), and the
    passport spellings of ü ("LYU", "NYU", "Lü") become ``v`` as in pypinyin.
    """
    tokens = [_u_umlaut_as_v(token) for token in latin_tokens(_mark_umlaut(name))]
    if not tokens:
        return frozenset()
    keys = {"".join(tokens), "".join(reversed(tokens))}
    if len(tokens) > 2:  # family name last: "Xiao Ming Wang" -> "wangxiaoming"
        keys.add(tokens[-1] + "".join(tokens[:-1]))
    return frozenset(keys)


def _mark_umlaut(text: str) -> str:
    # fold_latin would turn ü into u; keep it apart as v first (lower and upper case).
    return text.replace("ü", "v").replace("Ü", "V").replace("u\u0308", "v").replace("U\u0308", "V")


def _u_umlaut_as_v(token: str) -> str:
    # Only at the start of a token: inside one, "nyu" is usually "n" + "yu" (安宇 Anyu).
    if token.startswith(("lyu", "nyu")):
        return token[0] + "v" + token[3:]
    return token


def name_pinyin_keys(name: str, *, surname: str | None = None) -> frozenset[str]:
    """Pinyin keys of a name in any script: Han names read, Latin names spelled, else empty."""
    text = normalize_chinese_name(name)
    script = detect_script(text)
    if script is Script.HAN:
        return pinyin_keys(text, surname=surname)
    if script is Script.LATIN:
        return latin_pinyin_keys(name)
    return frozenset()


def same_pinyin(a: str, b: str) -> bool:
    """Whether two names can sound the same (homophones): they share a pinyin key.

    Either side may be Chinese characters or a romanisation: 张伟 ~ 章伟 ~ "Zhang Wei".
    """
    keys_a = name_pinyin_keys(a)
    return bool(keys_a) and not keys_a.isdisjoint(name_pinyin_keys(b))


__all__ = [
    "DEFAULT_LIMIT",
    "char_readings",
    "initials_keys",
    "latin_pinyin_keys",
    "name_pinyin_keys",
    "pinyin_keys",
    "pinyin_readings",
    "primary_pinyin_key",
    "same_pinyin",
    "surname_readings",
]
