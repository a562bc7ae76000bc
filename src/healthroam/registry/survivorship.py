"""The golden record: one value per field from a person's linked source records.

Rules (docs/registry-stewards.md): for each field, take the value from the most trusted
source that has one; among equally trusted sources, the most recently updated. Trust: the
population base and the insurer (agencies) 3, level-3 hospitals 2, other institutions 1.
Identifiers are the union of all sources'. A death date from any trusted source wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from healthroam.registry.model import NATIONAL_ID_SYSTEM

FIELDS = (
    "name",
    "latin_name",
    "sex",
    "birth_date",
    "national_id",
    "phone",
    "address",
    "region",
    "ethnicity",
    "death_date",
)


@dataclass(frozen=True, slots=True)
class LinkedRecord:
    """What survivorship needs of one linked source record."""

    source_id: int
    institution: str
    trust: int
    updated_at: datetime
    values: dict[str, Any]  # FIELDS -> value as sent (display form), plus "identifiers"
    fhir_patient_id: str | None = None


def trust_of(kind: str, level: int | None) -> int:
    if kind == "agency":
        return 3
    if kind == "hospital" and level == 3:
        return 2
    return 1


def golden_record(records: Sequence[LinkedRecord]) -> dict[str, Any]:
    ordered = sorted(records, key=lambda r: (r.trust, r.updated_at, r.source_id), reverse=True)
    golden: dict[str, Any] = {}
    provenance: dict[str, int] = {}
    for field in FIELDS:
        for record in ordered:
            value = record.values.get(field)
            if value not in (None, "", []):
                golden[field] = value
                provenance[field] = record.source_id
                break
    identifiers: dict[str, str] = {}
    for record in ordered:
        for identifier in record.values.get("identifiers") or []:
            system, _, value = str(identifier).partition("|")
            identifiers.setdefault(f"{system}|{value}", system)
    if golden.get("national_id"):
        identifiers.setdefault(f"{NATIONAL_ID_SYSTEM}|{golden['national_id']}", NATIONAL_ID_SYSTEM)
    golden["identifiers"] = sorted(identifiers)
    golden["sources"] = len(records)
    golden["provenance"] = provenance
    return golden


def golden_of_one(source_id: int, values: dict[str, Any]) -> dict[str, Any]:
    """``golden_record`` of a person with one source record (``values`` as in
    :class:`LinkedRecord`, ``source_id`` its id): the same document, keys in the same order,
    without the sorting and the loops over records (the bulk loader's new persons)."""
    golden: dict[str, Any] = {}
    provenance: dict[str, int] = {}
    get = values.get
    for field in FIELDS:
        value = get(field)
        if value not in (None, "", []):
            golden[field] = value
            provenance[field] = source_id
    identifiers: dict[str, str] = {}
    for identifier in get("identifiers") or []:
        system, _, value = str(identifier).partition("|")
        identifiers.setdefault(f"{system}|{value}", system)
    if golden.get("national_id"):
        identifiers.setdefault(f"{NATIONAL_ID_SYSTEM}|{golden['national_id']}", NATIONAL_ID_SYSTEM)
    golden["identifiers"] = sorted(identifiers)
    golden["sources"] = 1
    golden["provenance"] = provenance
    return golden
