"""Turn a :class:`SourceRecord` into a :class:`NormalizedRecord`, refusing what is invalid.

Refused (``InvalidInput`` naming the field): an ID number that fails its checks (length,
characters, region, date, check digit, a region code abolished before the birth date), an
impossible birth date, no name, neither birth date nor any identifier. Inconsistencies that
are usually typing errors elsewhere in the record (the ID's birth date or sex against the
record's) are kept as warnings: the ID decides, the record keeps its own values.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import re
from collections.abc import Iterator
from datetime import date

from healthroam.errors import InvalidInput
from healthroam.registry import idnumber, regions
from healthroam.registry.addresses import normalize_address
from healthroam.registry.demographics import Sex, parse_ethnicity, parse_sex
from healthroam.registry.model import NormalizedRecord, SourceRecord
from healthroam.registry.names import (
    Script,
    normalize_name,
    split_chinese_name,
)
from healthroam.registry.phones import PhoneKind, check_phone
from healthroam.registry.pinyin_keys import name_pinyin_keys, pinyin_readings

HAINAN = "46"

BATCH_GC_THRESHOLDS = (50_000, 50, 100)
"""Garbage-collector thresholds for a process that normalises rows in bulk (see
:func:`batch_gc`)."""


def tune_gc_for_batches() -> None:
    """Collect cyclic garbage less often in a process that normalises rows in bulk.

    Such a process keeps hundreds of thousands of cached names and addresses, and with the
    default thresholds (700, 10, 10) the collector walked them again and again: about a
    quarter of a batch worker's CPU. Normalisation makes almost no cyclic garbage, so
    collecting every 50,000 allocations instead changes nothing but the time. For worker
    processes (their initializer); in a shared process use :func:`batch_gc`.
    """
    gc.set_threshold(*BATCH_GC_THRESHOLDS)


@contextlib.contextmanager
def batch_gc() -> Iterator[None]:
    """:func:`tune_gc_for_batches` for the duration of a block, then the thresholds before."""
    before = gc.get_threshold()
    tune_gc_for_batches()
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _region_known(code: str) -> bool:
    return code[:2] != HAINAN or regions.is_known(code)


def normalize_national_id(value: str, *, today: date | None = None) -> idnumber.ResidentId:
    """Validate an ID number (15 or 18), upgrade it to 18 digits, check its region's era."""
    resident = idnumber.parse(value, today=today, region_known=_region_known)
    if resident.region_code[:2] == HAINAN:
        region = regions.get(resident.region_code)
        if region.abolished is not None and resident.birth_date.year > region.abolished:
            raise InvalidInput(
                "ID number's region code was abolished before the birth date it encodes",
                expression="identifier",
            )
    return resident


# The usual ID number's checks with their parts looked up (decision 0050): per region code
# (its first six digits), whether the general path accepts it and its part of the check sum
# and, for a Hainan code, the year it was abolished; per birth date as written (eight digits),
# the date or None and its part of the check sum; per sequence (three digits), its part.
_ID_REGIONS: dict[str, tuple[int, int | None] | None] = {}
_ID_DATES: dict[str, tuple[date, int] | None] = {}
_ID_SEQUENCES = {
    f"{n:03d}": sum(w * int(d) for w, d in zip(idnumber.WEIGHTS[14:], f"{n:03d}", strict=True))
    for n in range(1000)
}


def _weighted(digits: str, weights: tuple[int, ...]) -> int:
    return sum(w * int(d) for w, d in zip(weights, digits, strict=True))


def _id_region(code: str) -> tuple[int, int | None] | None:
    try:
        return _ID_REGIONS[code]
    except KeyError:
        pass
    result: tuple[int, int | None] | None = None
    if code[:2] in idnumber.PROVINCE_CODES and _region_known(code):
        abolished = regions.get(code).abolished if code[:2] == HAINAN else None
        result = (_weighted(code, idnumber.WEIGHTS[:6]), abolished)
    if len(_ID_REGIONS) < _ID_CACHE_LIMIT:  # bounded whatever a feed holds
        _ID_REGIONS[code] = result
    return result


def _id_date(digits: str) -> tuple[date, int] | None:
    try:
        return _ID_DATES[digits]
    except KeyError:
        pass
    born = idnumber._birth_date(digits)
    result = None
    if born is not None and born >= _EARLIEST_BIRTH:
        result = (born, _weighted(digits, idnumber.WEIGHTS[6:14]))
    if len(_ID_DATES) < _ID_CACHE_LIMIT:
        _ID_DATES[digits] = result
    return result


_ID_CACHE_LIMIT = 200_000
_EARLIEST_BIRTH = date(1900, 1, 1)
# A mobile number written as the 11 ASCII digits check_phone makes of it (decision 0050).
_USUAL_MOBILE = re.compile(r"1[3-9][0-9]{9}")


def _usual_national_id(value: str, today: date) -> tuple[str, date, str] | None:
    """(number, birth date, sex code "1"/"2") of an 18-character ID number in normal form
    (ASCII digits, an upper-case X allowed last) that passes every check of
    :func:`normalize_national_id`; None for anything else (a legacy or unnormalised number, an
    invalid one), which the general path then decides (with its error). The same checks, with
    the region's and birth date's parts cached: the population feed's numbers are all of this
    kind, and the general path's ``ResidentId`` and repeated parsing cost more than the rest
    of the ID handling (a unit test compares the two on generated numbers)."""
    if len(value) != 18 or not value.isascii() or not value[:17].isdigit():
        return None
    last = value[17]
    if not (last.isdigit() or last == "X"):
        return None
    region = _id_region(value[:6])
    if region is None:
        return None
    born = _id_date(value[6:14])
    if born is None or born[0] > today:
        return None
    if idnumber.CHECK_CHARACTERS[(region[0] + born[1] + _ID_SEQUENCES[value[14:17]]) % 11] != last:
        return None
    if region[1] is not None and born[0].year > region[1]:
        return None
    return value, born[0], ("1" if value[16] in "13579" else "2")


@functools.lru_cache(maxsize=262_144)
def name_features(
    raw: str, family: str | None
) -> tuple[str | None, str | None, str | None, frozenset[str]]:
    """(Han name, Latin key, preferred pinyin, all pinyin keys) of a name; cached, because a
    province has far fewer distinct names than records."""
    normalized = normalize_name(raw)
    if not normalized.key:
        raise InvalidInput("a name is required", expression="name")
    if normalized.script is Script.HAN:
        split = split_chinese_name(normalized.text, surname=family)
        surname = split.surname or None
        # One reading pass: the first reading is the preferred one (primary_pinyin_key), and
        # the keys are all readings run together (name_pinyin_keys of a Han name).
        readings = pinyin_readings(normalized.text, surname=surname)
        return (
            normalized.text,
            None,
            "".join(readings[0]) if readings else "",
            frozenset("".join(r) for r in readings),
        )
    if normalized.script is Script.LATIN:
        keys = name_pinyin_keys(normalized.text)
        return None, normalized.key, (min(keys) if keys else None), keys
    return normalized.key, None, None, frozenset()  # mixed or other scripts: as written


_NO_STRINGS: frozenset[str] = frozenset()


@functools.lru_cache(maxsize=1024)
def _sex(raw: str) -> str | None:
    """The GB code, "1" or "2", of a spelling of male or female; None for unknown or not stated;
    raises for what is no sex at all (not cached: lru_cache keeps only returned values)."""
    parsed = parse_sex(raw, expression="gender")
    return parsed.value if parsed in (Sex.MALE, Sex.FEMALE) else None


@functools.lru_cache(maxsize=1024)
def _ethnicity(raw: str) -> str | None:
    """The GB/T 3304 code of an ethnicity as written, None if not recognised."""
    try:
        return parse_ethnicity(raw).code
    except InvalidInput:
        return None


def normalize_record(record: SourceRecord, *, today: date | None = None) -> NormalizedRecord:
    warnings: list[str] = []
    han_name, latin, pinyin, keys = name_features(record.name or "", record.family)
    today = today or date.today()
    if record.birth_date is not None and record.birth_date > today:
        raise InvalidInput("birth date is in the future", expression="birthDate")
    sex = _sex(record.sex) if record.sex else None

    national_id: str | None = None
    if record.national_id:
        checked = _usual_national_id(record.national_id, today)
        if checked is None:  # anything unusual, valid or not: the general path decides
            resident = normalize_national_id(record.national_id, today=today)
            checked = resident.number, resident.birth_date, str(int(resident.sex))
        national_id = checked[0]
        if record.birth_date is not None and checked[1] != record.birth_date:
            warnings.append("birth date differs from the one encoded in the ID number")
        if sex is not None and checked[2] != sex:
            warnings.append("sex differs from the one encoded in the ID number")

    identifiers = (
        frozenset(
            f"{i.system}|{i.value.strip().upper()}" for i in record.identifiers if i.value.strip()
        )
        if record.identifiers
        else _NO_STRINGS
    )
    if record.birth_date is None and national_id is None and not identifiers:
        raise InvalidInput("a birth date or an identifier is required", expression="birthDate")

    phone: str | None = None
    for raw in record.phones:
        if _USUAL_MOBILE.fullmatch(raw):  # what check_phone gives it: itself, a mobile
            phone = raw
            break
        number = check_phone(raw)
        if number.valid and number.kind is PhoneKind.MOBILE:
            phone = number.canonical
            break
        if number.valid and phone is None:
            phone = number.canonical

    address_key: str | None = None
    tokens: frozenset[str] = _NO_STRINGS
    if record.address and record.address.strip():
        # Without a region of its own (hospital registers rarely carry one), strip the
        # platform's own province, so 海南省海口市... and 海口市... give the same key everywhere.
        address = normalize_address(record.address, region_code=record.region or HAINAN + "0000")
        address_key, tokens = address.key or None, address.tokens

    region = record.region if record.region and len(record.region) == 6 else None
    ethnicity = None
    if record.ethnicity:
        ethnicity = _ethnicity(record.ethnicity)
        if ethnicity is None:
            warnings.append("ethnicity not recognised")
    return NormalizedRecord(
        name=han_name,
        latin_name=latin,
        pinyin=pinyin,
        pinyin_keys=keys,
        birth_date=record.birth_date.isoformat() if record.birth_date else None,
        sex=sex,
        national_id=national_id,
        region=region,
        address=address_key,
        address_tokens=tokens,
        phone=phone,
        identifiers=identifiers,
        ethnicity=ethnicity,
        death_date=record.death_date.isoformat() if record.death_date else None,
        warnings=tuple(warnings),
    )
