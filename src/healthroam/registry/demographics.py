"""Sex, ethnicity and birth date normalisation for the master patient index (人口学信息).

* Sex: GB/T 2261.1-2003 codes (0 未知的性别, 1 男性, 2 女性, 9 未说明的性别), FHIR
  ``AdministrativeGender`` codes, HL7 v2 table 0001 letters, and 男/女 all map to :class:`Sex`.
* Ethnicity (民族): GB/T 3304-1991 two-digit codes, Chinese names with or without 族,
  romanised names and two-letter codes, from ``data/ethnicity_gb3304.csv``.
* Birth date: YYYY-MM-DD, YYYYMMDD, YYYY/M/D, YYYY.M.D and 1990年1月2日, with impossible
  dates rejected with a precise reason that does not repeat the date.

Every parser raises :class:`~healthroam.errors.InvalidInput` naming the field, never the value.
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import enum
import functools
import re
import unicodedata
from dataclasses import dataclass
from importlib import resources

from healthroam.errors import InvalidInput
from healthroam.registry.names import to_simplified

# --- sex -------------------------------------------------------------------------------------


class Sex(enum.Enum):
    """Sex as coded by GB/T 2261.1-2003 (人的性别代码); the value is the GB code."""

    UNKNOWN = "0"  # 未知的性别
    MALE = "1"  # 男性
    FEMALE = "2"  # 女性
    UNSPECIFIED = "9"  # 未说明的性别

    @property
    def gb_code(self) -> str:
        return self.value

    @property
    def fhir(self) -> str:
        """FHIR ``AdministrativeGender``; 9 (not stated) <-> ``other`` keeps the round trip."""
        return _SEX_TO_FHIR[self]

    @property
    def label(self) -> str:
        """The Chinese label of GB/T 2261.1."""
        return _SEX_LABELS[self]


_SEX_TO_FHIR = {
    Sex.UNKNOWN: "unknown",
    Sex.MALE: "male",
    Sex.FEMALE: "female",
    Sex.UNSPECIFIED: "other",
}
_SEX_LABELS = {
    Sex.UNKNOWN: "未知的性别",
    Sex.MALE: "男性",
    Sex.FEMALE: "女性",
    Sex.UNSPECIFIED: "未说明的性别",
}
_SEX_SYNONYMS: dict[str, Sex] = {
    # GB/T 2261.1 codes
    "0": Sex.UNKNOWN,
    "1": Sex.MALE,
    "2": Sex.FEMALE,
    "9": Sex.UNSPECIFIED,
    # FHIR AdministrativeGender
    "male": Sex.MALE,
    "female": Sex.FEMALE,
    "other": Sex.UNSPECIFIED,
    "unknown": Sex.UNKNOWN,
    # HL7 v2 table 0001 (M, F, O, U; A ambiguous and N not applicable count as not stated)
    "m": Sex.MALE,
    "f": Sex.FEMALE,
    "o": Sex.UNSPECIFIED,
    "u": Sex.UNKNOWN,
    "a": Sex.UNSPECIFIED,
    "n": Sex.UNSPECIFIED,
    # Chinese labels
    "男": Sex.MALE,
    "男性": Sex.MALE,
    "女": Sex.FEMALE,
    "女性": Sex.FEMALE,
    "未知": Sex.UNKNOWN,
    "未知的性别": Sex.UNKNOWN,
    "未说明": Sex.UNSPECIFIED,
    "未说明的性别": Sex.UNSPECIFIED,
}


def parse_sex(raw: str, *, expression: str = "Patient.gender") -> Sex:
    """Map any accepted spelling of sex to :class:`Sex`, or raise ``InvalidInput``.

    Case and surrounding whitespace are ignored; full-width characters are folded.
    """
    key = unicodedata.normalize("NFKC", raw).strip().casefold()
    if not key:
        raise InvalidInput("sex is empty", expression=expression)
    try:
        return _SEX_SYNONYMS[key]
    except KeyError:
        raise InvalidInput(
            "sex is not a GB/T 2261.1 code, a FHIR gender, an HL7 v2 sex or 男/女",
            expression=expression,
        ) from None


# --- ethnicity -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ethnicity:
    """One ethnic group (民族) of GB/T 3304-1991, or one of the extension codes 97 and 98."""

    code: str  # two digits, "01" 汉族 ... "56" 基诺族, "97" 其他, "98" 外国血统中国籍人士
    name: str
    romanization: str
    letter_code: str


@functools.cache
def ethnicities() -> tuple[Ethnicity, ...]:
    """The ethnicity table in code order."""
    source = resources.files("healthroam.registry").joinpath("data/ethnicity_gb3304.csv")
    rows = csv.DictReader(source.read_text(encoding="utf-8").splitlines())
    return tuple(
        Ethnicity(row["code"], row["name"], row["romanization"], row["letter_code"]) for row in rows
    )


@functools.cache
def _ethnicity_index() -> dict[str, Ethnicity]:
    index: dict[str, Ethnicity] = {}
    for item in ethnicities():
        keys = {item.code, str(int(item.code)), item.name, item.name.removesuffix("族")}
        keys |= {item.romanization.casefold(), item.letter_code.casefold()}
        for key in keys - {""}:
            index[key] = item
    # Names still found in old data: 毛难族 became 毛南族 and 崩龙族 became 德昂族.
    index["毛难族"] = index["毛难"] = index["36"]
    index["崩龙族"] = index["崩龙"] = index["46"]
    return index


def parse_ethnicity(raw: str, *, expression: str = "Patient.extension:ethnicity") -> Ethnicity:
    """Look up an ethnicity by code ("19", "9"), name ("黎族", "黎", "黎族"), or romanisation.

    Traditional characters are converted (e.g. 漢族). Raises ``InvalidInput`` when unknown.
    """
    key = to_simplified(unicodedata.normalize("NFKC", raw)).strip().casefold()
    key = "".join(key.split())
    if not key:
        raise InvalidInput("ethnicity is empty", expression=expression)
    found = _ethnicity_index().get(key)
    if found is None:
        raise InvalidInput("ethnicity is not a GB/T 3304 code or name", expression=expression)
    return found


# --- birth date ------------------------------------------------------------------------------

EARLIEST_BIRTH_DATE = dt.date(1870, 1, 1)

_BIRTH_DATE_FORMATS = "YYYY-MM-DD, YYYYMMDD, YYYY/M/D, YYYY.M.D or YYYY年M月D日"
_SEPARATED = re.compile(r"(\d{4})\s*([-/.年])\s*(\d{1,2})\s*([-/.月])\s*(\d{1,2})\s*日?", re.ASCII)
_COMPACT = re.compile(r"(\d{4})(\d{2})(\d{2})", re.ASCII)


def parse_birth_date(
    raw: str,
    *,
    today: dt.date | None = None,
    earliest: dt.date = EARLIEST_BIRTH_DATE,
    expression: str = "Patient.birthDate",
) -> dt.date:
    """Parse a birth date written in a common format, rejecting impossible dates.

    Accepted: 1990-01-02, 19900102, 1990/1/2, 1990.1.2, 1990年1月2日 (full-width digits too).
    The separators must match each other (1990-1/2 is refused) except in the 年月日 form.
    Rejected with a reason: unknown format, month outside 1-12, day outside 1-31, a day past
    the end of its month (with a note when only leap years have it), a date after ``today``,
    and a date before ``earliest``. Reasons never contain the date.
    """
    text = unicodedata.normalize("NFKC", raw).strip()
    if not text:
        raise InvalidInput("birth date is empty", expression=expression)
    match = _SEPARATED.fullmatch(text)
    if match is not None:
        year, sep1, month, sep2, day = match.groups()
        chinese = (sep1, sep2) == ("年", "月")
        if not chinese and (sep1 != sep2 or "年" in (sep1, sep2) or "月" in (sep1, sep2)):
            raise InvalidInput(
                f"birth date mixes separators; expected {_BIRTH_DATE_FORMATS}",
                expression=expression,
            )
        if chinese != text.endswith("日"):
            raise InvalidInput(
                f"birth date format is not recognised; expected {_BIRTH_DATE_FORMATS}",
                expression=expression,
            )
    else:
        match = _COMPACT.fullmatch(text)
        if match is None:
            raise InvalidInput(
                f"birth date format is not recognised; expected {_BIRTH_DATE_FORMATS}",
                expression=expression,
            )
        year, month, day = match.groups()
    return _checked_date(int(year), int(month), int(day), today, earliest, expression)


def _checked_date(
    year: int,
    month: int,
    day: int,
    today: dt.date | None,
    earliest: dt.date,
    expression: str,
) -> dt.date:
    if not 1 <= month <= 12:
        raise InvalidInput("birth date month is outside 1-12", expression=expression)
    if not 1 <= day <= 31:
        raise InvalidInput("birth date day is outside 1-31", expression=expression)
    if year < 1:
        raise InvalidInput("birth date year is zero", expression=expression)
    last = calendar.monthrange(year, month)[1]
    if day > last:
        if month == 2 and day == 29:
            reason = "birth date day is past the last day of its month (not a leap year)"
        else:
            reason = "birth date day is past the last day of its month"
        raise InvalidInput(reason, expression=expression)
    born = dt.date(year, month, day)
    if born > (today or dt.date.today()):
        raise InvalidInput("birth date is in the future", expression=expression)
    if born < earliest:
        raise InvalidInput("birth date is implausibly early", expression=expression)
    return born
