"""Hainan's county-level region codes (GB/T 2260 行政区划代码), current and historical.

The table is data (``data/hainan_regions.csv``): code, name, prefecture, population (2020
census, approximate), and for abolished codes the year they went out of use and the code that
took over their area. Historical codes still appear in ID numbers issued before the change
(an ID number never changes when its region is renamed), so they are valid in ID numbers.
"""

from __future__ import annotations

import csv
import functools
import io
from dataclasses import dataclass
from importlib import resources

from healthroam.errors import NotFound


@dataclass(frozen=True, slots=True)
class Region:
    """One county-level division (县级行政区划)."""

    code: str
    name: str
    prefecture: str
    population: int
    abolished: int | None  # year the code went out of use; None if current
    successor: str | None  # current code that covers (most of) its area

    @property
    def historical(self) -> bool:
        return self.abolished is not None

    @property
    def full_name(self) -> str:
        """Name with its prefecture, as written in addresses (e.g. 海口市龙华区)."""
        if self.prefecture in (self.name, "省直辖县级行政单位"):
            return self.name
        return self.prefecture + self.name


@functools.cache
def all_regions() -> tuple[Region, ...]:
    """Every region in the table, current ones first, in table order."""
    text = resources.files("healthroam.registry").joinpath("data/hainan_regions.csv")
    rows = csv.DictReader(io.StringIO(text.read_text(encoding="utf-8")))
    return tuple(
        Region(
            code=row["code"],
            name=row["name"],
            prefecture=row["prefecture"],
            population=int(row["population"]),
            abolished=int(row["abolished"]) if row["abolished"] else None,
            successor=row["successor"] or None,
        )
        for row in rows
    )


@functools.cache
def _by_code() -> dict[str, Region]:
    return {region.code: region for region in all_regions()}


def get(code: str) -> Region:
    """The region with this code; ``NotFound`` if the table does not have it."""
    try:
        return _by_code()[code]
    except KeyError:
        raise NotFound("unknown region code", expression="region") from None


def name_of(code: str) -> str | None:
    """The region's name, or None for an unknown code."""
    region = _by_code().get(code)
    return None if region is None else region.name


def is_known(code: str) -> bool:
    """True for a current or historical code in the table."""
    return code in _by_code()


def is_historical(code: str) -> bool:
    """True for an abolished code (still valid inside old ID numbers)."""
    region = _by_code().get(code)
    return region is not None and region.historical


def valid_codes(*, include_historical: bool = False) -> frozenset[str]:
    """Codes in use today, optionally with the historical ones."""
    return frozenset(r.code for r in all_regions() if include_historical or not r.historical)


def current_regions() -> tuple[Region, ...]:
    """The regions in use today, in table order."""
    return tuple(r for r in all_regions() if not r.historical)


def weights() -> dict[str, float]:
    """Each current region's share of the population (sums to 1)."""
    current = current_regions()
    total = sum(r.population for r in current)
    return {r.code: r.population / total for r in current}


def predecessors(code: str) -> tuple[Region, ...]:
    """Historical codes whose area is now (mostly) covered by ``code``."""
    return tuple(r for r in all_regions() if r.successor == code)
