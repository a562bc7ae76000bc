"""Resident ID numbers (居民身份证号码, GB 11643-1999).

An 18-digit number is the 6-digit region code (GB/T 2260) of first registration, the birth date
``YYYYMMDD``, a 3-digit sequence (odd for men, even for women) and an ISO 7064 MOD 11-2 check
character (``X`` stands for 10). Numbers issued before 1999 had 15 digits: region, ``YYMMDD``
(all in the 1900s) and the sequence, with no check character.

Pure functions, standard library only. Messages never contain the number itself: it is personal
data and error messages may be logged.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from operator import mul

from healthroam.errors import InvalidInput

WEIGHTS: tuple[int, ...] = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
"""ISO 7064 MOD 11-2 weights (2**(17 - i) mod 11) for the 17 body digits."""

CHECK_CHARACTERS = "10X98765432"
"""Check character for each value of ``sum(weight * digit) mod 11``."""

PROVINCE_CODES: frozenset[str] = frozenset(
    "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53 54"  # noqa: SIM905
    " 61 62 63 64 65 71 81 82 83".split()
)
"""First two digits of every GB/T 2260 province-level code (83: numbers for Taiwan residents)."""

_FULL_WIDTH = str.maketrans("０１２３４５６７８９Ｘｘx", "0123456789XXX")
_ZERO_WEIGHTS = 48 * sum(WEIGHTS)  # what the ASCII code of "0" adds to the weighted sum
_EARLIEST = date(1900, 1, 1)


class Sex(enum.IntEnum):
    """Sex as coded by GB/T 2261.1 (1 男 male, 2 女 female)."""

    MALE = 1
    FEMALE = 2


class IdProblem(enum.StrEnum):
    """Why an ID number is not valid, in the order the checks run."""

    LENGTH = "length"
    CHARACTERS = "characters"
    REGION = "region"
    DATE = "date"
    CHECK_DIGIT = "check_digit"


_REASONS: dict[IdProblem, str] = {
    IdProblem.LENGTH: "ID number must have 18 characters (or 15 for a legacy number)",
    IdProblem.CHARACTERS: "ID number must be digits, with only the last of 18 allowed to be X",
    IdProblem.REGION: "ID number does not start with a known region code",
    IdProblem.DATE: "ID number does not encode a valid birth date",
    IdProblem.CHECK_DIGIT: "ID number fails its check digit",
}


@dataclass(frozen=True, slots=True)
class IdCheck:
    """The outcome of :func:`validate`. ``reason`` never contains the number."""

    problem: IdProblem | None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def reason(self) -> str | None:
        return None if self.problem is None else _REASONS[self.problem]


@dataclass(frozen=True, slots=True)
class ResidentId:
    """A valid ID number taken apart. ``number`` is always the 18-digit form."""

    number: str
    region_code: str
    birth_date: date
    sequence: int
    legacy: bool  # True if it was given as a 15-digit number

    @property
    def sex(self) -> Sex:
        return Sex.MALE if self.sequence % 2 == 1 else Sex.FEMALE


def normalize(value: str) -> str:
    """Strip spaces, turn full-width digits into ASCII and a lower-case ``x`` into ``X``."""
    if value.isascii():  # the usual case: of the table, only "x" can occur
        return value.strip().replace(" ", "").replace("x", "X")
    return value.strip().replace(" ", "").translate(_FULL_WIDTH)


def check_character(body: str) -> str:
    """The MOD 11-2 check character for the first 17 digits of an 18-digit number."""
    if len(body) != 17 or not body.isascii() or not body.isdigit():
        raise InvalidInput("check character needs exactly 17 digits", expression="body")
    return _check_character(body)


def _check_character(body: str) -> str:
    # body: 17 ASCII digits. The weighted sum of the byte values, less what the "0"s add,
    # is sum(weight * digit); map() and sum() keep the loop in C.
    return CHECK_CHARACTERS[(sum(map(mul, WEIGHTS, body.encode())) - _ZERO_WEIGHTS) % 11]


def _birth_date(digits: str) -> date | None:
    try:
        return date(int(digits[0:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return None


def validate(
    value: str,
    *,
    today: date | None = None,
    region_known: Callable[[str], bool] | None = None,
) -> IdCheck:
    """Check an ID number (18 digits, or a legacy 15) and say precisely what is wrong.

    The region check needs a real province prefix; pass ``region_known`` (for example
    :func:`healthroam.registry.regions.is_known`) to also require a known 6-digit code. Birth
    dates must be real calendar dates from 1900 on and not after ``today`` (default: today).
    """
    problem, _, _ = _examine(normalize(value), today, region_known)
    return _CHECKS[problem]


def _examine(
    number: str, today: date | None, region_known: Callable[[str], bool] | None
) -> tuple[IdProblem | None, str, date | None]:
    """The checks of :func:`validate` in their order, on a normalised number, in one pass:
    (the first problem or None, the 18-digit number, the birth date)."""
    length = len(number)
    if length != 18 and length != 15:
        return IdProblem.LENGTH, number, None
    body = number[:17] if length == 18 else number
    if not (body.isascii() and body.isdigit()):
        return IdProblem.CHARACTERS, number, None
    if length == 18:
        last = number[17]
        if not (last.isdigit() or last == "X"):
            return IdProblem.CHARACTERS, number, None
    if number[:2] not in PROVINCE_CODES or (
        region_known is not None and not region_known(number[:6])
    ):
        return IdProblem.REGION, number, None
    born = _birth_date(number[6:14] if length == 18 else "19" + number[6:12])
    if born is None or born < _EARLIEST or born > (today or date.today()):
        return IdProblem.DATE, number, None
    if length == 18:
        if _check_character(body) != number[17]:
            return IdProblem.CHECK_DIGIT, number, None
        return None, number, born
    full = number[:6] + "19" + number[6:]
    return None, full + _check_character(full), born


_CHECKS: dict[IdProblem | None, IdCheck] = {p: IdCheck(p) for p in (None, *IdProblem)}


def parse(
    value: str,
    *,
    today: date | None = None,
    region_known: Callable[[str], bool] | None = None,
) -> ResidentId:
    """Validate and take apart an ID number; raise ``InvalidInput`` with the reason if invalid."""
    given = normalize(value)
    problem, number, born = _examine(given, today, region_known)
    if problem is not None:
        raise InvalidInput(_REASONS[problem], expression="identifier")
    assert born is not None  # _examine() checked it
    return ResidentId(
        number=number,
        region_code=number[:6],
        birth_date=born,
        sequence=int(number[14:17]),
        legacy=len(given) == 15,
    )


def to_18(value: str, *, today: date | None = None) -> str:
    """Convert a legacy 15-digit number to its 18-digit form (an 18-digit one is checked and
    returned normalised)."""
    return parse(value, today=today).number


def to_15(value: str) -> str:
    """The legacy 15-digit form of an 18-digit number born in the 1900s (for test data)."""
    number = parse(value).number
    if number[6:8] != "19":
        raise InvalidInput("only numbers of people born 1900-1999 have a 15-digit form")
    return number[:6] + number[8:17]


def birth_date(value: str, *, today: date | None = None) -> date:
    """The birth date encoded in a valid ID number."""
    return parse(value, today=today).birth_date


def sex(value: str, *, today: date | None = None) -> Sex:
    """The sex encoded in a valid ID number (odd sequence: male)."""
    return parse(value, today=today).sex
