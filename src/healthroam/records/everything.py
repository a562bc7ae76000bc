"""`Patient/[id]/$everything`: a person's whole record, from one or several source Patients.

For a stored Patient: the Patient, every resource that refers to it (its compartment), and the
resources those refer to (practitioners, organisations, medications ...). For a golden Patient
(a master index ID): the same for every source Patient the registry links to that person, so
the answer is the resident's longitudinal record across institutions and follows merges and
splits at once (the registry's links are read at request time).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter

import psycopg
from psycopg.abc import Buffer
from sqlalchemy import Connection, select

from healthroam.db.engine import Database
from healthroam.db.raw import dbapi, sqlalchemy_errors
from healthroam.db.tables_records import fhir_idx_reference
from healthroam.errors import NotFound
from healthroam.records.deferred import deferred_on
from healthroam.records.model import StoredResource, json_string
from healthroam.records.repository import Key, ResourceRepository, key_conditions
from healthroam.records.searchset import entry_json
from healthroam.security.model import Principal
from healthroam.security.service import AuditTrail

MAX_RESOURCES = 20_000


@dataclass(frozen=True, slots=True)
class Everything:
    entries: list[str | bytes]  # the page asked for, as Bundle entries (JSON text), in order
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


# PostgreSQL: the resources of ``found`` (types and ids as comma-separated lists: store ids
# have no commas) and every resource they refer to, in one statement, each as its finished
# Bundle entry text when the resource has no stored ``meta`` - exactly what
# ``searchset.entry_json`` writes (ids and types never need escaping: the store checks them
# against ``ID_PATTERN``; the instant is cut to milliseconds like ``model.instant``). A
# resource with a stored ``meta`` comes as its body and meta texts, for Python to merge. The
# bodies are the texts stored with the rows (``body_tail``, decision 0055): writing each
# ``jsonb`` as text here was about a third of the statement's CPU.
_EVERYTHING_POSTGRES = """
WITH found(resource_type, id) AS (
    SELECT * FROM unnest(string_to_array(%(types)s, ','), string_to_array(%(ids)s, ','))
), wanted AS (
    SELECT resource_type, id FROM found
    UNION
    SELECT ref.target_type, ref.target_id
      FROM found
     -- the references of each found key by the owner index (OFFSET 0, as below: a join let
     -- PostgreSQL hash the whole reference index, a scan growing with the store)
     CROSS JOIN LATERAL (
           SELECT ref.target_type, ref.target_id
             FROM fhir_idx_reference ref
            WHERE ref.resource_type = found.resource_type AND ref.resource_id = found.id
              AND ref.target_type IS NOT NULL AND ref.target_id IS NOT NULL
           OFFSET 0
     ) ref
)
SELECT r.resource_type::text, r.id::text, r.last_updated, r.institution_code::text,
       CAST(CASE WHEN m.meta IS NULL THEN concat(
           '{"fullUrl":', CAST(%(prefix)s AS text), r.resource_type, '/', r.id,
           '","resource":{"resourceType":"', r.resource_type, '","id":"', r.id,
           '","meta":{"versionId":"', r.version, '","lastUpdated":"',
           to_char(r.last_updated AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), '"}',
           CASE WHEN r.body_tail = '}' THEN '}' ELSE ',' || r.body_tail END,
           ',"search":{"mode":"match"}}'
       ) END AS varchar) AS entry,
       r.version,
       CAST(CASE WHEN m.meta IS NOT NULL THEN '{' || r.body_tail END AS text) AS body,
       m.meta::text AS meta
  FROM wanted
 -- one primary-key look-up per wanted key (OFFSET 0 keeps the planner from hashing the
 -- whole table: it cannot estimate the unnested list)
 CROSS JOIN LATERAL (
       SELECT * FROM fhir_resources r
        WHERE r.resource_type = wanted.resource_type AND r.id = wanted.id AND NOT r.deleted
       OFFSET 0
 ) r
 CROSS JOIN LATERAL (SELECT r.content -> 'meta' AS meta) m
"""


class _Utf8Bytes(psycopg.adapt.Loader):
    """A ``varchar`` value as its UTF-8 bytes, not decoded: the finished entries go into the
    Bundle as bytes (``searchset.bundle_json``); decoding a 1 MB answer only to encode it
    again cost about a millisecond. (Casting ``text`` to ``varchar`` costs PostgreSQL
    nothing; only the entry column has that type in the statement: the others are cast to
    ``text``.)"""

    def load(self, data: Buffer) -> bytes:
        return bytes(data)


# (type, id, lastUpdated, institution, entry text or bytes, or a stored resource to turn into one)
_Row = tuple[str, str, datetime, str | None, str | bytes | StoredResource]
_TYPE_ID = itemgetter(0, 1)
_UPDATED = itemgetter(2)


def _not_patient(row: _Row) -> bool:
    return row[0] != "Patient"


def _rows_postgres(conn: Connection, found: Sequence[Key], prefix: str) -> list[_Row] | None:
    if deferred_on(conn) is not None:
        return None  # rows pending on this connection: the general path flushes them first
    types, ids = ",".join(k[0] for k in found), ",".join(k[1] for k in found)
    if types.count(",") != len(found) - 1 or ids.count(",") != len(found) - 1:
        return None  # a comma in a key: not from this store, take the general path
    rows: list[_Row] = []
    with sqlalchemy_errors("$everything"):
        cursor = dbapi(conn).cursor()
        cursor.adapters.register_loader("varchar", _Utf8Bytes)
        cursor.execute(_EVERYTHING_POSTGRES, {"types": types, "ids": ids, "prefix": prefix})
        found_rows = cursor.fetchall()
    for rtype, rid, updated, institution, entry, version, body, meta in found_rows:
        if entry is None:  # a stored meta: merged in Python (searchset.entry_json)
            entry = StoredResource(
                rtype,
                rid,
                version,
                updated,
                None,
                institution,
                raw=body,
                meta=json.loads(meta) if meta else None,
            )
        rows.append((rtype, rid, updated, institution, entry))
    return rows


def _rows_general(conn: Connection, found: Sequence[Key]) -> list[_Row]:
    keys = list(dict.fromkeys([*found, *_referenced(conn, found)]))
    return [
        (r.resource_type, r.id, r.last_updated, r.institution_code, r)
        for r in ResourceRepository(conn).load(keys)
    ]


def everything(
    db: Database,
    audit: AuditTrail,
    principal: Principal,
    patient_ids: Sequence[str],
    *,
    audit_refs: Sequence[str],
    base: str,
    since: datetime | None = None,
    types: frozenset[str] | None = None,
    count: int = 1000,
    offset: int = 0,
    visible: Callable[[str | None], bool] | None = None,
    detail: str | None = None,
    compartment: Sequence[Key] | None = None,
) -> Everything:
    """The compartment of ``patient_ids`` (readable types only), newest first, paged, as
    Bundle entries with ``fullUrl``s under ``base`` (``.../fhir``). ``visible`` says whose
    (which institution's) resources the caller may see (the cross-institution access gate);
    ``detail`` goes into the audit entries (how access was granted); ``compartment``: the
    resources about these Patients when the caller has just listed them (the access decision
    does), else they are looked up here."""
    with db.transaction() as conn:
        return everything_in(
            conn,
            audit,
            principal,
            patient_ids,
            audit_refs=audit_refs,
            base=base,
            since=since,
            types=types,
            count=count,
            offset=offset,
            visible=visible,
            detail=detail,
            compartment=compartment,
        )


def everything_in(
    conn: Connection,
    audit: AuditTrail,
    principal: Principal,
    patient_ids: Sequence[str],
    *,
    audit_refs: Sequence[str],
    base: str,
    since: datetime | None = None,
    types: frozenset[str] | None = None,
    count: int = 1000,
    offset: int = 0,
    visible: Callable[[str | None], bool] | None = None,
    detail: str | None = None,
    compartment: Sequence[Key] | None = None,
) -> Everything:
    """:func:`everything` in the caller's transaction (the golden record's access decision
    and its read share one); NotFound is raised before anything is written."""
    repo = ResourceRepository(conn)
    patients: list[Key] = [("Patient", pid) for pid in patient_ids]
    about = list(compartment) if compartment is not None else repo.pointing_at(patients)
    found: list[Key] = list(dict.fromkeys(patients + about))[:MAX_RESOURCES]
    rows = None
    if conn.dialect.name == "postgresql":
        rows = _rows_postgres(conn, found, json_string(f"{base}/")[:-1])
    if rows is None:
        rows = _rows_general(conn, found)
    wanted = set(patients)
    if not any((r[0], r[1]) in wanted for r in rows):
        raise NotFound("no such Patient", expression="Patient.id")
    allowed: dict[str, bool] = {}
    shown: dict[str | None, bool] = {}
    kept: list[_Row] = []
    for row in rows:
        rtype = row[0]
        ok = allowed.get(rtype)
        if ok is None:
            ok = allowed[rtype] = principal.scopes.allows(rtype, "r") and (
                types is None or rtype in types
            )
        if not ok:
            continue
        if visible is not None:
            seen = shown.get(row[3])
            if seen is None:
                seen = shown[row[3]] = visible(row[3])
            if not seen:
                continue
        if since is not None and _aware(row[2]) < since:
            continue
        kept.append(row)
    # Patients first, then newest first, then by type and id: three stable sorts, least
    # significant key first (lastUpdated compared as datetimes: all aware on PostgreSQL, all
    # naive UTC on SQLite).
    kept.sort(key=_TYPE_ID)
    kept.sort(key=_UPDATED, reverse=True)
    kept.sort(key=_not_patient)
    entries = [
        r[4] if isinstance(r[4], str | bytes) else entry_json(r[4], base, "match", None)
        for r in kept[offset : offset + count]
    ]
    audit.append(
        conn, audit.patient_queries(principal, audit_refs, subtype="everything", detail=detail)
    )
    return Everything(entries, len(kept))
