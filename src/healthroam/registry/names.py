"""Person-name normalisation for the master patient index (姓名标准化).

Pure functions, no I/O beyond opencc's own dictionary load. Every source (population base,
hospitals, insurer) passes its names through here before blocking and scoring, so that two
spellings of the same name compare equal:

* Chinese names (汉字): NFKC folding, invisible characters and spaces removed, traditional
  characters converted to simplified (opencc ``t2s``), and every middle-dot look-alike in a
  transliterated minority or foreign name (e.g. 买买提·艾力) unified to U+00B7 with no spaces.
* Latin names: case-folded, diacritics removed, apostrophes dropped, hyphens joined, and an
  order-insensitive token key so that "ZHANG Wei", "Wei Zhang" and "zhang, wei" are one key.

Normalisation never raises; :func:`parse_name` is the validating entry point that raises
:class:`~healthroam.errors.InvalidInput` without echoing the name.
"""

from __future__ import annotations

import enum
import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from healthroam.errors import InvalidInput

MIDDLE_DOT = "\u00b7"

# Characters people and systems type in place of the middle dot of a transliterated name
# (间隔号). Checked after NFKC, so full-width forms (U+FF0E, U+FF65) arrive as their folds.
DOT_LOOKALIKES = frozenset(
    "\u00b7"  # MIDDLE DOT (the canonical one)
    "\u0387"  # GREEK ANO TELEIA
    "\u2027"  # HYPHENATION POINT
    "\u2022"  # BULLET
    "\u2024"  # ONE DOT LEADER
    "\u2219"  # BULLET OPERATOR
    "\u22c5"  # DOT OPERATOR
    "\u2e31"  # WORD SEPARATOR MIDDLE DOT
    "\u2e33"  # RAISED DOT
    "\u30fb"  # KATAKANA MIDDLE DOT
    "\uff65"  # HALFWIDTH KATAKANA MIDDLE DOT
    "\uff0e"  # FULLWIDTH FULL STOP
    "\u16eb"  # RUNIC SINGLE PUNCTUATION
    "\u1427"  # CANADIAN SYLLABICS FINAL MIDDLE DOT
    "\ua78f"  # LATIN LETTER SINOLOGICAL DOT
    "."  # FULL STOP
)

# Two-character surnames (复姓). A name that starts with one of these and has at least one more
# character is split after the second character.
COMPOUND_SURNAMES = frozenset(
    {
        "欧阳", "司马", "诸葛", "上官", "皇甫", "东方", "尉迟", "公孙", "慕容", "令狐",
        "长孙", "夏侯", "轩辕", "宇文", "司徒", "端木", "万俟", "闻人", "澹台", "太史",
        "申屠", "公羊", "赫连", "宗政", "濮阳", "公冶", "太叔", "仲孙", "钟离", "鲜于",
        "司空", "闾丘", "子车", "亓官", "司寇", "巫马", "公西", "颛孙", "壤驷", "公良",
        "漆雕", "乐正", "宰父", "谷梁", "拓跋", "夹谷", "段干", "百里", "呼延", "东郭",
        "南门", "羊舌", "微生", "梁丘", "左丘", "西门", "南宫", "第五", "独孤", "单于",
    }
)  # fmt: skip

_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"
_APOSTROPHES = "'\u2018\u2019\u201b\u02bc\u02b9\u0060\u00b4\u2032\uff07"
# Letters that carry no combining mark, so NFKD cannot strip them.
_LATIN_FOLDS = str.maketrans(
    {"ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "æ": "ae", "œ": "oe", "ı": "i", "ŀ": "l"}
)
_LATIN_SEPARATORS = re.compile(r"[\s,;/.·_]+")
_DOT_LOOKALIKE = re.compile("[" + re.escape("".join(sorted(DOT_LOOKALIKES))) + "]")
# U+4E00-U+9FA5, the CJK Unified Ideographs of Unicode 1.1 (GB 2312 and GBK's Han characters
# are all here): every one is_han(), so a name made only of them is Han without a lookup.
_COMMON_HAN = re.compile("[\u4e00-\u9fa5]+")


class Script(enum.StrEnum):
    """The writing system a (normalised) name is written in."""

    HAN = "han"  # only Han characters, optionally with the middle dot
    LATIN = "latin"  # only Latin letters and name punctuation
    MIXED = "mixed"  # Han and Latin letters together, e.g. "李John"
    OTHER = "other"  # empty, or letters of another script (Cyrillic, Arabic, Tibetan ...)


@dataclass(frozen=True, slots=True)
class NormalizedName:
    """A name after normalisation: the cleaned text, its script and its comparison key."""

    text: str
    script: Script
    key: str


@dataclass(frozen=True, slots=True)
class ChineseName:
    """A Chinese full name split into surname (姓) and given name (名).

    ``transliterated`` is true for names written with the middle dot (音译名, e.g. minority or
    foreign names): those have no Han surname, so ``surname`` is empty.
    """

    surname: str
    given: str
    transliterated: bool = False

    @property
    def full(self) -> str:
        return self.surname + self.given


@functools.cache
def _converter() -> Any:
    """The opencc traditional -> simplified converter, built once on first use."""
    import opencc

    return opencc.OpenCC("t2s")


def to_simplified(text: str) -> str:
    """Convert traditional Chinese characters to simplified (opencc ``t2s``)."""
    if not text or text.isascii():
        return text
    return str(_converter().convert(text))


@functools.lru_cache(maxsize=65_536)
def is_han(char: str) -> bool:
    """Whether a single character is a Han ideograph (CJK unified or extension blocks)."""
    return unicodedata.name(char, "").startswith("CJK UNIFIED IDEOGRAPH") or char == "\u3007"


def _is_invisible(char: str) -> bool:
    # Cf: zero-width space/joiners, BOM, bidi marks, soft hyphen; Cc: control characters.
    return unicodedata.category(char) in {"Cf", "Cc", "Co", "Cs", "Cn"} and char not in "\t\n\r"


@functools.lru_cache(maxsize=65_536)
def clean_text(text: str) -> str:
    """NFKC-fold, drop invisible characters and collapse whitespace runs to one space."""
    folded = unicodedata.normalize("NFKC", text)
    if folded.isprintable():
        # No character of the categories Cc, Cf, Cs, Co, Cn, Zl, Zp, Zs but the ASCII space:
        # nothing is invisible and the only whitespace is " ", so the per-character pass
        # below would keep every character.
        return " ".join(folded.split())
    visible = "".join(" " if ch.isspace() else ch for ch in folded if not _is_invisible(ch))
    return " ".join(visible.split())


@functools.lru_cache(maxsize=65_536)
def detect_script(text: str) -> Script:
    """Classify the letters of ``text`` as Han, Latin, mixed, or other (also empty)."""
    if _COMMON_HAN.fullmatch(text):
        return Script.HAN
    has_han = has_latin = has_other = False
    for ch in text:
        if is_han(ch):
            has_han = True
        elif ch.isalpha():
            if unicodedata.name(ch, "").startswith("LATIN"):
                has_latin = True
            else:
                has_other = True
    if has_other or not (has_han or has_latin):
        return Script.OTHER
    if has_han and has_latin:
        return Script.MIXED
    return Script.HAN if has_han else Script.LATIN


def unify_dots(text: str) -> str:
    """Replace every middle-dot look-alike (and spaces around it) with one U+00B7.

    Runs of dots collapse to one; a dot at the start or end is removed.
    """
    if _DOT_LOOKALIKE.search(text) is None:
        return text.strip(" ")  # what the loop below gives when there is no dot
    out: list[str] = []
    for ch in text:
        if ch in DOT_LOOKALIKES:
            while out and out[-1] == " ":
                out.pop()
            if out and out[-1] != MIDDLE_DOT:
                out.append(MIDDLE_DOT)
        elif ch == " " and out and out[-1] == MIDDLE_DOT:
            continue
        else:
            out.append(ch)
    return "".join(out).strip(" " + MIDDLE_DOT)


@functools.lru_cache(maxsize=65_536)
def normalize_chinese_name(text: str) -> str:
    """Normalise a name written in Chinese characters.

    NFKC, invisible characters removed, traditional -> simplified, dot look-alikes -> U+00B7,
    and all spaces removed ("張 三" -> "张三", "买买提 • 艾力" -> "买买提·艾力").
    """
    cleaned = unify_dots(to_simplified(clean_text(text))).replace(" ", "")
    # Removing a space can join a combining mark to a letter ("O \u0304"), so fold again.
    return unicodedata.normalize("NFKC", cleaned)


def fold_latin(text: str) -> str:
    """Case-fold and strip diacritics from Latin text ("Zoë Łukasz" -> "zoe lukasz")."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return unicodedata.normalize("NFC", stripped.translate(_LATIN_FOLDS))


def latin_tokens(text: str) -> list[str]:
    """Split a Latin name into folded tokens, in written order.

    Apostrophes are dropped ("O'Brien" -> "obrien"), hyphens join their parts
    ("Xiao-Ming" -> "xiaoming"), and spaces, commas, periods, slashes and dots separate tokens.
    """
    folded = fold_latin(clean_text(text))
    for apostrophe in _APOSTROPHES:
        folded = folded.replace(apostrophe, "")
    for dash in _DASHES + "-":
        folded = folded.replace(dash, "")
    return [token for token in _LATIN_SEPARATORS.split(folded) if token]


def latin_name_key(text: str) -> str:
    """Order-insensitive key of a Latin name: its tokens sorted and joined with one space.

    "ZHANG Wei", "Wei Zhang" and "zhang, wei" all give "wei zhang".
    """
    return " ".join(sorted(latin_tokens(text)))


def normalize_latin_name(text: str) -> str:
    """Display-free normal form of a Latin name: folded tokens in written order."""
    return " ".join(latin_tokens(text))


def normalize_name(text: str) -> NormalizedName:
    """Normalise a person's name of any script; never raises.

    Han names follow :func:`normalize_chinese_name` (key = the normalised text), Latin names
    :func:`normalize_latin_name` (key = :func:`latin_name_key`). Mixed names keep their Han
    characters and fold their Latin letters; other scripts are only cleaned and case-folded.
    """
    script = detect_script(clean_text(text))
    if script is Script.HAN:
        han = normalize_chinese_name(text)
        return NormalizedName(han, script, han)
    if script is Script.LATIN:
        return NormalizedName(normalize_latin_name(text), script, latin_name_key(text))
    if script is Script.MIXED:
        mixed = fold_latin(normalize_chinese_name(text))
        return NormalizedName(mixed, script, mixed)
    other = clean_text(text).casefold()
    return NormalizedName(other, script, other)


def parse_name(text: str, *, expression: str = "Patient.name") -> NormalizedName:
    """Normalise a name that must be usable for matching, or raise ``InvalidInput``.

    Rejects names that are empty after normalisation, contain digits, or have no letters.
    The message never contains the name itself.
    """
    name = normalize_name(text)
    if not name.text:
        raise InvalidInput("name is empty after normalisation", expression=expression)
    if any(ch.isdigit() for ch in name.text):
        raise InvalidInput("name contains digits", expression=expression)
    if not any(ch.isalpha() for ch in name.text):
        raise InvalidInput("name contains no letters", expression=expression)
    return name


def split_chinese_name(
    text: str, *, surname: str | None = None, expression: str = "Patient.name"
) -> ChineseName:
    """Split a Chinese full name into surname and given name.

    ``surname`` is the source's own family name (FHIR ``name.family``) if it sent one; it is
    used when the full name starts with it. Otherwise a compound surname (欧阳, 司马 ...) takes
    two characters when at least one character follows, and any other name takes one. Names
    with the middle dot are transliterations and get no surname. Raises ``InvalidInput`` when
    the name is not written in Chinese characters.
    """
    name = normalize_chinese_name(text)
    if detect_script(name) is not Script.HAN:
        raise InvalidInput("name is not written in Chinese characters", expression=expression)
    if MIDDLE_DOT in name:
        return ChineseName("", name, transliterated=True)
    if surname is not None:
        family = normalize_chinese_name(surname)
        if family and name.startswith(family) and len(name) > len(family):
            return ChineseName(family, name[len(family) :])
    if len(name) >= 3 and name[:2] in COMPOUND_SURNAMES:
        return ChineseName(name[:2], name[2:])
    return ChineseName(name[:1], name[1:])
