"""Address normalisation for the master patient index (地址标准化).

Addresses are free text in every source, so the index does not parse them fully; it reduces
them to a form where the same address written differently compares equal, and pulls out the
numbers (门牌号, 栋, 单元, 层, 室) that tell neighbours apart. The rules, in order:

1. NFKC (full-width digits and letters, compatibility ideographs such as U+F937 路), invisible
   characters removed, traditional -> simplified (號 -> 号, 單元 -> 单元).
2. Spaces and punctuation removed; dash variants become ``-`` and survive only between
   digits (3-2-501); Latin letters upper-cased.
3. Chinese numerals before a unit word become digits (三单元 -> 3单元, 第十二栋 -> 12栋).
4. Variants unified after a number: 幢/座/号楼 -> 栋, 房 -> 室, ``#`` -> 号, F -> 层.
5. For the comparison key only: 中国/中华人民共和国 and, when the record's region code is known,
   the province name (海南省, or 海南 followed by a city or county) are stripped.

This is deliberately not exhaustive: it handles the spellings seen in registry data, and
everything else passes through unchanged.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from healthroam.registry.names import clean_text, to_simplified

# Province-level divisions by the first two digits of a GB/T 2260 code: (full, short) name.
PROVINCES: dict[str, tuple[str, str]] = {
    "11": ("北京市", "北京"), "12": ("天津市", "天津"), "13": ("河北省", "河北"),
    "14": ("山西省", "山西"), "15": ("内蒙古自治区", "内蒙古"), "21": ("辽宁省", "辽宁"),
    "22": ("吉林省", "吉林"), "23": ("黑龙江省", "黑龙江"), "31": ("上海市", "上海"),
    "32": ("江苏省", "江苏"), "33": ("浙江省", "浙江"), "34": ("安徽省", "安徽"),
    "35": ("福建省", "福建"), "36": ("江西省", "江西"), "37": ("山东省", "山东"),
    "41": ("河南省", "河南"), "42": ("湖北省", "湖北"), "43": ("湖南省", "湖南"),
    "44": ("广东省", "广东"), "45": ("广西壮族自治区", "广西"), "46": ("海南省", "海南"),
    "50": ("重庆市", "重庆"), "51": ("四川省", "四川"), "52": ("贵州省", "贵州"),
    "53": ("云南省", "云南"), "54": ("西藏自治区", "西藏"), "61": ("陕西省", "陕西"),
    "62": ("甘肃省", "甘肃"), "63": ("青海省", "青海"), "64": ("宁夏回族自治区", "宁夏"),
    "65": ("新疆维吾尔自治区", "新疆"), "71": ("台湾省", "台湾"),
    "81": ("香港特别行政区", "香港"), "82": ("澳门特别行政区", "澳门"),
}  # fmt: skip

_DASHES = re.compile(r"[\u2010-\u2015\u2212\ufe58\ufe63~～]")
_UNIT_WORDS = "号楼|号|栋|幢|座|单元|层|楼|室|房|组|巷|弄"
_CHINESE_NUMBER = re.compile(rf"第?([零〇一二两三四五六七八九十百千]+)(?={_UNIT_WORDS})")
_ORDINAL_DIGITS = re.compile(rf"第(\d+)(?={_UNIT_WORDS})")
_NUMBERED = r"(?<=[0-9A-Z])"
# (pattern, replacement, the words the pattern needs: a text without any is left as it is)
_VARIANTS = (
    (re.compile(_NUMBERED + r"(?:号楼|幢|座)"), "栋", re.compile("号楼|幢|座")),
    (re.compile(_NUMBERED + r"房"), "室", re.compile("房")),
    (re.compile(r"(?<=\d)F(?![A-Z])"), "层", re.compile("F")),
)
_ASCII_LOWER = re.compile(r"[a-z]+")
_HASH = re.compile(r"(?<=\d)\s*#")  # 5# and 5#楼: # after a number means 号
_NOT_KEPT = re.compile(r"[^0-9A-Za-z\u3007\u3400-\u9fff\U00020000-\U0003134f-]")
_LONE_DASH = re.compile(r"(?<!\d)-+|-+(?!\d)")
_COUNTRY = re.compile(r"^(?:中华人民共和国|中国)")
_ADMIN_SUFFIX = re.compile(r"^.{1,6}?(?:市|县|自治州|地区)")
_SUFFIXES = (
    "特别行政区|自治区|自治州|自治县|街道|社区|单元|大道|"
    "省|市|区|县|旗|镇|乡|村|路|街|巷|弄|道|号|栋|层|楼|室|组"
)
_TOKEN = re.compile(rf".+?(?:{_SUFFIXES})|.+")

_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4}
_DIGITS |= {"五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_POWERS = {"十": 10, "百": 100, "千": 1000}


@dataclass(frozen=True, slots=True)
class AddressNumbers:
    """Numbers that identify a dwelling within a street; ``None`` where the address has none."""

    house: str | None = None  # 门牌号: 123号
    building: str | None = None  # 栋 (also 幢, 座, 号楼)
    unit: str | None = None  # 单元
    floor: str | None = None  # 层
    room: str | None = None  # 室 (also 房)


@dataclass(frozen=True, slots=True)
class NormalizedAddress:
    """An address after normalisation.

    ``text`` keeps everything; ``key`` drops the country and (with a region code) the province
    and is what two addresses are compared by; ``tokens`` are its components for fuzzy overlap.
    """

    text: str
    key: str
    tokens: frozenset[str]
    numbers: AddressNumbers


def chinese_numeral(text: str) -> int | None:
    """Value of a Chinese numeral up to 9999 (十二 -> 12, 一百零五 -> 105, 二〇一 -> 201)."""
    if not text or any(ch not in _DIGITS and ch not in _POWERS for ch in text):
        return None
    if not any(ch in _POWERS for ch in text):  # digit by digit: 二〇一
        return int("".join(str(_DIGITS[ch]) for ch in text))
    total, digit = 0, None
    for ch in text:
        if ch in _DIGITS:
            digit = _DIGITS[ch]
        else:
            total += (1 if digit is None else digit) * _POWERS[ch]
            digit = None
    return total + (digit or 0)


def _arabic(match: re.Match[str]) -> str:
    value = chinese_numeral(match.group(1))
    return match.group(0) if value is None else str(value)


def normalize_address_text(raw: str) -> str:
    """Rules 1-4: the cleaned address text, without spaces or punctuation."""
    text = to_simplified(clean_text(raw))
    text = _DASHES.sub("-", text)
    # Only a-z change under str.upper() among ASCII characters; the rest is left as it is.
    if _ASCII_LOWER.search(text) is not None:
        text = _ASCII_LOWER.sub(_upper, text)
    if "#" in text:
        text = _HASH.sub("号", text)
    text = _NOT_KEPT.sub("", text)
    if "-" in text:
        text = _LONE_DASH.sub("", text)
    text = _CHINESE_NUMBER.sub(_arabic, text)
    if "第" in text:
        text = _ORDINAL_DIGITS.sub(r"\1", text)
    for pattern, replacement, needs in _VARIANTS:
        if needs.search(text) is not None:
            text = pattern.sub(replacement, text)
    return text


def _upper(match: re.Match[str]) -> str:
    return match.group(0).upper()


def strip_province(text: str, region_code: str | None) -> str:
    """Drop a leading country name and, if ``region_code`` is known, its province name.

    The short name (海南) is only dropped when a city, county, prefecture or region follows
    within six characters, so that 海南大学 keeps its name.
    """
    text = _COUNTRY.sub("", text)
    if not region_code or region_code[:2] not in PROVINCES:
        return text
    full, short = PROVINCES[region_code[:2]]
    if text.startswith(full):
        return text[len(full) :]
    rest = text[len(short) :]
    if text.startswith(short) and _ADMIN_SUFFIX.match(rest) and not rest.startswith("省"):
        return rest
    return text


def address_tokens(text: str) -> list[str]:
    """Split normalised text after each administrative or building word (市, 区, 路, 号 ...)."""
    return _TOKEN.findall(text)


def _first(pattern: re.Pattern[str], text: str) -> str | None:
    found = pattern.search(text)
    return found.group(1) if found else None


_BUILDING = re.compile(r"([0-9A-Z]+)栋")
_UNIT = re.compile(r"(\d+)单元")
_ROOM = re.compile(r"(\d+)室")
_DASHED = re.compile(r"(\d+)-(\d+)(?:-(\d+))?$")
_HOUSE = re.compile(r"(\d+(?:-\d+)?[A-Z]?)号")
_FLOOR = re.compile(r"(\d+)层")
_NUMBER_WORDS = tuple("号栋层室")


def extract_numbers(text: str) -> AddressNumbers:
    """Pull house, building, unit, floor and room numbers out of normalised text.

    Explicit words win (123号, 5栋, 2单元, 6层, 501室); a trailing dashed group fills what
    is missing: 3-2-501 is building-unit-room, 3-501 building-room.
    """
    # Each search only where its word is in the text (most addresses lack most of them).
    building = _first(_BUILDING, text) if "栋" in text else None
    unit = _first(_UNIT, text) if "单元" in text else None
    room = _first(_ROOM, text) if "室" in text else None
    dashed = _DASHED.search(text) if "-" in text else None
    if dashed and not text.endswith(_NUMBER_WORDS):
        first, second, third = dashed.groups()
        if third is not None:
            building, unit, room = building or first, unit or second, room or third
        else:
            building, room = building or first, room or second
    return AddressNumbers(
        house=_first(_HOUSE, text) if "号" in text else None,
        building=building,
        unit=unit,
        floor=_first(_FLOOR, text) if "层" in text else None,
        room=room,
    )


@functools.lru_cache(maxsize=65_536)  # members of a household share an address
def normalize_address(raw: str, *, region_code: str | None = None) -> NormalizedAddress:
    """Normalise an address: text, comparison key, token set and dwelling numbers.

    ``region_code`` is the record's GB/T 2260 code (e.g. ``460106``) if known; it allows the
    province name to be stripped from the key. Never raises.
    """
    text = normalize_address_text(raw)
    key = strip_province(text, region_code)
    return NormalizedAddress(
        text=text,
        key=key,
        tokens=frozenset(address_tokens(key)),
        numbers=extract_numbers(key),
    )
