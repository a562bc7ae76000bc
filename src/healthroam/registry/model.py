"""The population registry's domain: source records, master persons, links, decisions.

全员人口信息库 / 主索引 (master patient index). Plain data; no framework imports.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

from healthroam.errors import InvalidInput

NATIONAL_ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"  # 居民身份证号
MASTER_INDEX_SYSTEM = "urn:healthroam:master-index-id"
_MASTER_INDEX_ID = re.compile(r"^[0-9A-F]{64}$")


def new_master_index_id() -> str:
    """A fresh master index ID (主索引ID): 256 random bits as 64 uppercase hex characters."""
    return secrets.token_hex(32).upper()


def new_master_index_ids(count: int) -> list[str]:
    """``count`` fresh master index IDs, as :func:`new_master_index_id` makes them, from one
    read of the operating system's random source (the bulk loader makes millions)."""
    text = secrets.token_hex(32 * count).upper()
    return [text[i : i + 64] for i in range(0, 64 * count, 64)]


def check_master_index_id(value: str, expression: str = "masterIndexId") -> str:
    if not _MASTER_INDEX_ID.match(value):
        raise InvalidInput(
            "a master index ID is 64 uppercase hexadecimal characters", expression=expression
        )
    return value


class LinkType(StrEnum):
    """How a source record came to belong to its master person."""

    AUTO = "auto"  # linked by the matcher
    STEWARD = "steward"  # linked or moved by a data steward
    VERIFIED = "verified"  # confirmed by a steward after review


class MatchOutcome(StrEnum):
    LINKED = "linked"  # joined an existing master person
    NEW = "new"  # became a new master person
    REVIEW = "review"  # a new master person, with possible matches sent to stewards
    UNCHANGED = "unchanged"  # the same record was loaded again


class MatchGrade(StrEnum):
    """IHE PDQm match-grade (http://hl7.org/fhir/StructureDefinition/match-grade)."""

    CERTAIN = "certain"
    PROBABLE = "probable"
    POSSIBLE = "possible"
    CERTAINLY_NOT = "certainly-not"


class Decision(StrEnum):
    SAME = "same"
    DIFFERENT = "different"


@dataclass(frozen=True, slots=True)
class SourceKey:
    """Who holds the record: (institution, identifier system, local id)."""

    institution: str
    system: str
    local_id: str

    def __post_init__(self) -> None:
        institution, system, local_id = self.institution, self.system, self.local_id
        if (  # the usual case, in one test (the bulk loader makes millions of keys)
            institution
            and system
            and local_id
            and len(institution) <= 200
            and len(system) <= 200
            and len(local_id) <= 200
        ):
            return
        for name in ("institution", "system", "local_id"):
            value = getattr(self, name)
            if not value or len(value) > 200:
                raise InvalidInput(
                    f"source record {name} must be 1-200 characters", expression=name
                )


@dataclass(frozen=True, slots=True)
class Identifier:
    system: str
    value: str


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """A person as one source knows them (a hospital registration, an insurer enrolment ...).

    Values are as the source sent them; :mod:`healthroam.registry.normalize` cleans them.
    """

    key: SourceKey
    name: str | None = None  # full name as written (Chinese or Latin)
    family: str | None = None  # the family name the source gave separately, if any
    sex: str | None = None  # any spelling parse_sex accepts (1/2, male/female, 男/女 ...)
    birth_date: date | None = None
    national_id: str | None = None  # 居民身份证号, 18 digits or a legacy 15
    identifiers: tuple[Identifier, ...] = ()  # passports, permits, insurance, record numbers
    phones: tuple[str, ...] = ()
    address: str | None = None
    region: str | None = None  # GB/T 2260 county code of residence
    ethnicity: str | None = None
    death_date: date | None = None
    fhir_patient_id: str | None = None  # when it came in as a FHIR Patient


@dataclass(frozen=True, slots=True)
class NormalizedRecord:
    """The comparable form of a source record: what blocking and scoring look at."""

    name: str | None  # simplified Han name (or None for Latin-only names)
    latin_name: str | None  # order-insensitive Latin key
    pinyin: str | None  # preferred pinyin reading, e.g. "zhang wei"
    pinyin_keys: frozenset[str]  # every plausible reading (heteronyms, surname table)
    birth_date: str | None  # ISO date
    sex: str | None  # "1" or "2" (GB/T 2261.1); None when unknown
    national_id: str | None  # valid 18-digit form
    region: str | None
    address: str | None  # comparison key
    address_tokens: frozenset[str]
    phone: str | None  # canonical number
    identifiers: frozenset[str]  # "system|value"
    ethnicity: str | None = None
    death_date: str | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def prefecture(self) -> str | None:
        return self.region[:4] if self.region else None
