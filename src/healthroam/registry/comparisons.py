"""The comparison levels of the Fellegi-Sunter model, one definition for real time and batch.

Each comparison turns a pair of :class:`NormalizedRecord` into a level index (0 = strongest
agreement) or ``None`` when either side lacks the value (a null level carries no weight). The
batch linker (:mod:`healthroam.registry.linkage`) expresses the same levels in SQL for Splink;
``docs/registry-matching.md`` lists them and a test checks both agree on sample pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler

from healthroam.registry.model import NormalizedRecord

Level = int | None
NAME_FUZZY_JARO_WINKLER = 0.9
ADDRESS_TOKEN_JACCARD = 0.5


def name_level(a: NormalizedRecord, b: NormalizedRecord) -> Level:
    """0 same name, 1 same pinyin reading (homophones, Latin vs Han), 2 fuzzy, 3 different."""
    if (a.name is None and a.latin_name is None) or (b.name is None and b.latin_name is None):
        return None
    if (a.name is not None and a.name == b.name) or (
        a.latin_name is not None and a.latin_name == b.latin_name
    ):
        return 0
    if a.pinyin_keys & b.pinyin_keys:
        return 1
    if (
        a.name is not None
        and b.name is not None
        and DamerauLevenshtein.distance(a.name, b.name) <= 1
    ):
        return 2
    if (
        a.pinyin is not None
        and b.pinyin is not None
        and JaroWinkler.similarity(a.pinyin, b.pinyin) >= NAME_FUZZY_JARO_WINKLER
    ):
        return 2
    return 3


def _digits(iso: str) -> str:
    return iso.replace("-", "")


def birth_date_level(a: NormalizedRecord, b: NormalizedRecord) -> Level:
    """0 same date, 1 one digit off or two adjacent digits or month/day swapped, 2 same year
    and month, 3 same year, 4 different."""
    if a.birth_date is None or b.birth_date is None:
        return None
    if a.birth_date == b.birth_date:
        return 0
    da, db = _digits(a.birth_date), _digits(b.birth_date)
    if DamerauLevenshtein.distance(da, db) <= 1 or (
        da[:4] == db[:4] and da[4:6] == db[6:8] and da[6:8] == db[4:6]
    ):
        return 1
    if da[:6] == db[:6]:
        return 2
    if da[:4] == db[:4]:
        return 3
    return 4


def sex_level(a: NormalizedRecord, b: NormalizedRecord) -> Level:
    if a.sex is None or b.sex is None:
        return None
    return 0 if a.sex == b.sex else 1


def national_id_level(a: NormalizedRecord, b: NormalizedRecord) -> Level:
    """0 same ID number, 1 one character off or two adjacent swapped, 2 different."""
    if a.national_id is None or b.national_id is None:
        return None
    if a.national_id == b.national_id:
        return 0
    return 1 if DamerauLevenshtein.distance(a.national_id, b.national_id) <= 1 else 2


def region_level(a: NormalizedRecord, b: NormalizedRecord) -> Level:
    """0 same county, 1 same prefecture (first four digits), 2 different."""
    if a.region is None or b.region is None:
        return None
    if a.region == b.region:
        return 0
    return 1 if a.region[:4] == b.region[:4] else 2


def address_level(a: NormalizedRecord, b: NormalizedRecord) -> Level:
    """0 same address, 1 token Jaccard >= 0.5, 2 different."""
    if a.address is None or b.address is None:
        return None
    if a.address == b.address:
        return 0
    union = a.address_tokens | b.address_tokens
    if union and len(a.address_tokens & b.address_tokens) / len(union) >= ADDRESS_TOKEN_JACCARD:
        return 1
    return 2


def phone_level(a: NormalizedRecord, b: NormalizedRecord) -> Level:
    if a.phone is None or b.phone is None:
        return None
    return 0 if a.phone == b.phone else 1


def identifiers_level(a: NormalizedRecord, b: NormalizedRecord) -> Level:
    """0 a shared passport/permit/insurance number, 1 none shared."""
    if not a.identifiers or not b.identifiers:
        return None
    return 0 if a.identifiers & b.identifiers else 1


@dataclass(frozen=True, slots=True)
class Comparison:
    name: str
    levels: tuple[str, ...]  # labels, strongest first
    level: Callable[[NormalizedRecord, NormalizedRecord], Level]


COMPARISONS: tuple[Comparison, ...] = (
    Comparison("name", ("exact", "same_pinyin", "fuzzy", "else"), name_level),
    Comparison(
        "birth_date", ("exact", "transposed", "year_month", "year", "else"), birth_date_level
    ),
    Comparison("sex", ("exact", "else"), sex_level),
    Comparison("national_id", ("exact", "one_off", "else"), national_id_level),
    Comparison("region", ("county", "prefecture", "else"), region_level),
    Comparison("address", ("exact", "similar", "else"), address_level),
    Comparison("phone", ("exact", "else"), phone_level),
    Comparison("identifiers", ("shared", "else"), identifiers_level),
)


def comparison_vector(a: NormalizedRecord, b: NormalizedRecord) -> tuple[Level, ...]:
    return tuple(c.level(a, b) for c in COMPARISONS)
