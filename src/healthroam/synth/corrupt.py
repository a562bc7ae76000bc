"""The error model: what goes wrong when a source system records a person.

Each source kind has its own rate for each error type (per record). Errors are drawn
independently; an error that cannot apply to a record (no homophone for any character of a
name, an ID number missing already, a person born after 1999 for a 15-digit ID) is not counted.
The ground truth lists the errors each record actually carries.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from healthroam.synth import names


class Error(enum.IntFlag):
    """Error types; a record's ``error_flags`` in the ground truth is their bitwise OR."""

    TYPO = 1  # a character of the name replaced by another
    HOMOPHONE = 2  # a character replaced by one read the same (张伟 -> 章伟)
    TRADITIONAL = 4  # name and address in traditional script (陈伟 -> 陳偉)
    BIRTH_DATE_TRANSPOSED = 8  # two digits of the birth date swapped (still a real date)
    ID_MISSING = 16  # no identifier recorded
    ID_MISTYPED = 32  # one digit of the ID number wrong or two adjacent ones swapped
    ID_LEGACY15 = 64  # the old 15-digit ID number recorded instead of the 18-digit one
    ADDRESS_MOVED = 128  # an address the person no longer (or never) lived at
    PHONE_CHANGED = 256  # a different phone number
    DUPLICATE = 512  # a second registration of the same person in the same source


@dataclass(frozen=True, slots=True)
class ErrorRates:
    """Probability per record of each error type."""

    typo: float = 0.0
    homophone: float = 0.0
    traditional: float = 0.0
    birth_date_transposed: float = 0.0
    id_missing: float = 0.0
    id_mistyped: float = 0.0
    id_legacy15: float = 0.0  # among records of people who have a 15-digit number
    address_moved: float = 0.0
    phone_changed: float = 0.0
    duplicate: float = 0.0

    def items(self) -> list[tuple[Error, float]]:
        return [(Error[f.name.upper()], float(getattr(self, f.name))) for f in fields(self)]


POPULATION_RATES = ErrorRates(
    typo=0.002, homophone=0.002, birth_date_transposed=0.001, id_mistyped=0.0005,
    address_moved=0.02, phone_changed=0.03,
)  # fmt: skip
HOSPITAL_RATES = ErrorRates(
    typo=0.01, homophone=0.02, traditional=0.01, birth_date_transposed=0.01, id_missing=0.05,
    id_mistyped=0.01, id_legacy15=0.10, address_moved=0.08, phone_changed=0.10, duplicate=0.01,
)  # fmt: skip
INSURER_RATES = ErrorRates(
    typo=0.005, homophone=0.01, traditional=0.003, birth_date_transposed=0.005, id_missing=0.01,
    id_mistyped=0.003, id_legacy15=0.03, address_moved=0.05, phone_changed=0.06,
)  # fmt: skip


def error_names(flags: int) -> str:
    """``"homophone;phone_changed"`` for a flag value (empty for none)."""
    return ";".join(e.name.lower() for e in Error if e.name and flags & e)


def typo(name: str, rng: np.random.Generator) -> str:
    """Replace one character (Chinese) or swap two adjacent letters (Latin script)."""
    if name.isascii():
        if len(name) < 3:
            return name
        i = int(rng.integers(0, len(name) - 1))
        return name[:i] + name[i + 1] + name[i] + name[i + 2 :]
    positions = [i for i, c in enumerate(name) if c != names.MIDDLE_DOT]
    i = positions[int(rng.integers(0, len(positions)))]
    table = names.character_table()
    replacement = table[int(rng.integers(0, len(table)))]
    return name[:i] + replacement + name[i + 1 :]


def homophone(name: str, rng: np.random.Generator) -> str:
    """Replace one character by another read the same; unchanged if none has a homophone."""
    table = names.homophones()
    positions = [i for i, c in enumerate(name) if c in table]
    if not positions:
        return name
    i = positions[int(rng.integers(0, len(positions)))]
    choices = table[name[i]]
    return name[:i] + choices[int(rng.integers(0, len(choices)))] + name[i + 1 :]


def transpose_date(value: date, rng: np.random.Generator, latest: date | None = None) -> date:
    """Swap two adjacent digits of YYYYMMDD so the result is another real date from 1900 to
    ``latest``; day and month swapped if no adjacent swap works; unchanged if nothing does."""
    text = value.strftime("%Y%m%d")
    for i in rng.permutation(np.arange(2, 7)):
        swapped = text[:i] + text[i + 1] + text[i] + text[i + 2 :]
        if swapped == text:
            continue
        try:
            result = date(int(swapped[:4]), int(swapped[4:6]), int(swapped[6:]))
        except ValueError:
            continue
        if result.year >= 1900 and (latest is None or result <= latest):
            return result
    if value.day <= 12 and value.day != value.month:
        return value.replace(month=value.day, day=value.month)
    return value


def mistype_id(number: str, rng: np.random.Generator) -> str:
    """Change one digit, or swap two adjacent different characters (IDs and passports)."""
    if rng.random() < 0.5:
        i = int(rng.integers(0, len(number) - 1))
        if number[i] != number[i + 1]:
            return number[:i] + number[i + 1] + number[i] + number[i + 2 :]
    # Change a digit before the last character (an ID's check character, a passport's letter
    # prefix stay as they were).
    positions = [i for i, c in enumerate(number[:-1]) if c.isdigit()]
    i = positions[int(rng.integers(0, len(positions)))]
    digit = str((int(number[i]) + int(rng.integers(1, 10))) % 10)
    return number[:i] + digit + number[i + 1 :]


def replace(values: pa.Array, mask: np.ndarray, new: list[object] | pa.Array) -> pa.Array:
    """``values`` with the masked positions replaced by ``new`` (in order)."""
    if not mask.any():
        return values
    replacement = new if isinstance(new, pa.Array) else pa.array(new, type=values.type)
    return pc.replace_with_mask(values, pa.array(mask), replacement)
