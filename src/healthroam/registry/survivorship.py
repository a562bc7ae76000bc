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


# FIELDS and the golden record's own keys in the order PostgreSQL's JSONB keeps object keys
# (shorter first, then by bytes; codec.jsonb_key): golden_of_one writes its document in this
# order, which spares the server a sort of each of its two objects (decision 0056).
_FIELDS_JSONB = (
    "sex",
    "name",
    "phone",
    "region",
    "address",
    "ethnicity",
    "birth_date",
    "death_date",
    "latin_name",
    "national_id",
)
# Where "sources" (after "address"), "provenance" and "identifiers" (after "latin_name") go.
_BEFORE_SOURCES = _FIELDS_JSONB[:5]
_BEFORE_PROVENANCE = _FIELDS_JSONB[5:9]


def golden_of_one(source_id: int, values: dict[str, Any]) -> dict[str, Any]:
    """``golden_record`` of a person with one source record (``values`` as in
    :class:`LinkedRecord`, ``source_id`` its id): the same document without the sorting and
    the loops over records (the bulk loader's new persons), its keys and its provenance's in
    JSONB's order (the loader sends it only to PostgreSQL's ``jsonb`` column)."""
    get = values.get
    present = {f: v for f in _FIELDS_JSONB if (v := get(f)) not in (None, "", [])}
    identifiers: dict[str, str] = {}
    for identifier in get("identifiers") or []:
        system, _, value = str(identifier).partition("|")
        identifiers.setdefault(f"{system}|{value}", system)
    national_id = present.get("national_id")
    if national_id:
        identifiers.setdefault(f"{NATIONAL_ID_SYSTEM}|{national_id}", NATIONAL_ID_SYSTEM)
    golden = {f: present[f] for f in _BEFORE_SOURCES if f in present}
    golden["sources"] = 1
    for field in _BEFORE_PROVENANCE:
        if field in present:
            golden[field] = present[field]
    golden["provenance"] = dict.fromkeys(present, source_id)
    golden["identifiers"] = sorted(identifiers)
    if national_id is not None:
        golden["national_id"] = national_id
    return golden
