"""The audit trail's records and hash chain (pure: no storage, no framework).

Each entry's hash is SM3 over the previous entry's hash and the entry's canonical JSON, so
editing, inserting or deleting any entry breaks every hash after it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives import hashes

GENESIS_HASH = bytes(32)


class Action(StrEnum):
    """FHIR AuditEvent.action."""

    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"


class Outcome(StrEnum):
    """FHIR AuditEvent.outcome."""

    SUCCESS = "0"
    MINOR_FAILURE = "4"
    SERIOUS_FAILURE = "8"
    MAJOR_FAILURE = "12"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audited action: who, what, when, why and how it ended."""

    recorded_at: datetime
    action: Action
    event_type: str  # rest | query | auth | admin
    subtype: str  # read | vread | create | search-type | token | ...
    outcome: Outcome
    purpose_of_use: str
    client_id: str | None = None
    institution_code: str | None = None
    end_user: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    patient_ref: str | None = None  # e.g. "Patient/123": whose data it was
    query: str | None = None
    source_address: str | None = None
    detail: str | None = None


def _canonical_time(value: datetime) -> str:
    # Stored timestamps come back naive from SQLite and in the session zone from PostgreSQL;
    # hash them as UTC with microseconds so both spellings agree.
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    if value.year >= 1000:  # what strftime below writes, without its format parsing
        return value.isoformat(timespec="microseconds")
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f")


_FIELD_NAMES = tuple(f.name for f in fields(AuditRecord))
FIELD_NAMES = _FIELD_NAMES  # in the dataclass's order
ACTION_CODES = frozenset(str(a) for a in Action)
OUTCOME_CODES = frozenset(str(o) for o in Outcome)


def record_dict(record: AuditRecord) -> dict[str, Any]:
    """The record's fields by name. Every field is a scalar, so a shallow dict is exact;
    ``dataclasses.asdict`` deep-copies each value and was most of the cost of sealing."""
    return {name: getattr(record, name) for name in _FIELD_NAMES}


def canonical_bytes(seq: int, record: AuditRecord) -> bytes:
    values = record_dict(record)
    values["action"] = str(record.action)
    values["outcome"] = str(record.outcome)
    return canonical_row_bytes(seq, values)


def canonical_row_bytes(seq: int, values: dict[str, Any]) -> bytes:
    """:func:`canonical_bytes` of a record given as its fields by name (``action`` and
    ``outcome`` as their codes, ``recorded_at`` a datetime): the sealer hashes the inbox's
    rows so, without building records. Changes ``values``."""
    values["recorded_at"] = _canonical_time(values["recorded_at"])
    values["seq"] = seq
    return json.dumps(values, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def chain_hash(prev_hash: bytes, seq: int, record: AuditRecord) -> bytes:
    return row_hash(prev_hash, canonical_bytes(seq, record))


def row_hash(prev_hash: bytes, canonical: bytes) -> bytes:
    """SM3 over the previous entry's hash and this entry's canonical bytes."""
    digest = hashes.Hash(hashes.SM3())
    digest.update(prev_hash)
    digest.update(canonical)
    return digest.finalize()


@dataclass(frozen=True, slots=True)
class ChainProblem:
    seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    entries: int
    problems: tuple[ChainProblem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems
