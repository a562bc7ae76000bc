"""`Patient/[id]/$everything`: a person's whole record, from one or several source Patients.

For a stored Patient: the Patient, every resource that refers to it (its compartment), and the
resources those refer to (practitioners, organisations, medications ...). For a golden Patient
(a master index ID): the same for every source Patient the registry links to that person, so
the answer is the resident's longitudinal record across institutions and follows merges and
splits at once (the registry's links are read at request time).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, select

from healthroam.db.engine import Database
from healthroam.db.tables_records import fhir_idx_reference
from healthroam.errors import NotFound
from healthroam.records.model import StoredResource
from healthroam.records.repository import Key, ResourceRepository, key_conditions
from healthroam.security.model import Principal
from healthroam.security.service import AuditTrail

MAX_RESOURCES = 20_000


@dataclass(frozen=True, slots=True)
class Everything:
    resources: list[StoredResource]  # the page asked for
    total: int


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _referenced(conn: Connection, keys: Sequence[Key]) -> list[Key]:
    ref = fhir_idx_reference.c
    found: list[Key] = []
    postgres = conn.dialect.name == "postgresql"
    for condition in key_conditions(postgres, ref.resource_type, ref.resource_id, keys):
        rows = conn.execute(
            select(ref.target_type, ref.target_id)
            .where(condition, ref.target_type.is_not(None), ref.target_id.is_not(None))
            .distinct()
        )
        found.extend((row[0], row[1]) for row in rows)
    return found


def everything(
    db: Database,
    audit: AuditTrail,
    principal: Principal,
    patient_ids: Sequence[str],
    *,
    audit_refs: Sequence[str],
    since: datetime | None = None,
    types: frozenset[str] | None = None,
    count: int = 1000,
    offset: int = 0,
    keep: Callable[[StoredResource], bool] | None = None,
    detail: str | None = None,
    compartment: Sequence[Key] | None = None,
) -> Everything:
    """The compartment of ``patient_ids`` (readable types only), newest first, paged.
    ``keep`` filters what the caller may see (the cross-institution access gate); ``detail``
    goes into the audit entries (how access was granted); ``compartment``: the resources
    about these Patients when the caller has just listed them (the access decision does),
    else they are looked up here."""
    with db.transaction() as conn:
        repo = ResourceRepository(conn)
        patients: list[Key] = [("Patient", pid) for pid in patient_ids]
        if not repo.load(patients):
            raise NotFound("no such Patient", expression="Patient.id")
        about = list(compartment) if compartment is not None else repo.pointing_at(patients)
        found: list[Key] = list(dict.fromkeys(patients + about))[:MAX_RESOURCES]
        keys = list(dict.fromkeys(found + _referenced(conn, found)))
        keys = [
            k
            for k in keys
            if principal.scopes.allows(k[0], "r") and (types is None or k[0] in types)
        ]
        resources = repo.load(keys)
        if keep is not None:
            resources = [r for r in resources if keep(r)]
        if since is not None:
            resources = [r for r in resources if _aware(r.last_updated) >= since]
        resources.sort(
            key=lambda r: (
                r.resource_type != "Patient",
                -_aware(r.last_updated).timestamp(),
                r.resource_type,
                r.id,
            )
        )
        page = resources[offset : offset + count]
        audit.append(
            conn, audit.patient_queries(principal, audit_refs, subtype="everything", detail=detail)
        )
    return Everything(page, len(resources))
