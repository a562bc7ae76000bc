"""Results (Observation, DiagnosticReport) of a set of Patients, with the institution that
wrote each one: the store-side query behind duplicate-test alerts (exchange/recognition).

One SQL query over the resource table and its reference and token indexes; the caller
applies its own rules (equivalence, validity, recognition) to the rows it gets back.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    and_,
    false,
    literal,
    select,
)

from healthroam.db.raw import RawSelect, is_postgres
from healthroam.db.schema import fhir_resources
from healthroam.db.tables_records import fhir_idx_reference, fhir_idx_token
from healthroam.records.deferred import deferred_on
from healthroam.records.model import StoredResource

SUBJECT_PARAM = "subject"
MAX_RESULTS = 5_000  # per query: a person's results of the asked-for tests


@dataclass(frozen=True, slots=True)
class ResultRow:
    stored: StoredResource
    institution_code: str | None  # the institution whose client wrote the resource


def patient_results(
    conn: Connection,
    patient_ids: Sequence[str],
    types: Collection[str],
    *,
    codes: Collection[tuple[str, str]] | None = None,
) -> list[ResultRow]:
    """Current resources of ``types`` whose subject is one of ``patient_ids``, newest first;
    only those with a ``code`` coding among ``codes`` (system, code) when given."""
    if not patient_ids or not types or (codes is not None and not codes):
        return []
    keyed = sorted(f"code|{system}|{code}" for system, code in codes) if codes is not None else None
    deferred = deferred_on(conn)
    if is_postgres(conn):
        # Asked for every order (duplicate-test alerts): one statement compiled once, sent
        # through psycopg (db/raw.py), which no deferral listener sees: flush here when what
        # is deferred could change the answer.
        if deferred and deferred.concerns(types, SUBJECT_PARAM, "Patient", patient_ids):
            from healthroam.records.repository import ResourceRepository

            deferred.flush(ResourceRepository(conn))
        ids = list(dict.fromkeys(patient_ids))  # one look-up each (the IN list's meaning)
        params: dict[str, Any] = {"patient_ids": ids, "types": list(types)}
        if keyed is None:
            rows = _PG_RESULTS.rows(conn, params)
        else:
            rows = _PG_RESULTS_CODED.rows(conn, {**params, "codes": keyed})
    else:
        query = _results_query(list(patient_ids), list(types), keyed)
        if deferred and not deferred.concerns(types, SUBJECT_PARAM, "Patient", patient_ids):
            with deferred.bypass():  # nothing deferred could change the answer: no flush
                rows = list(conn.execute(query).all())
        else:
            rows = list(conn.execute(query).all())
    return [
        ResultRow(
            StoredResource(row.resource_type, row.id, row.version, row.last_updated, row.content),
            row.institution_code,
        )
        for row in rows
    ]


def _results_query(
    patient_ids: list[str], types: list[str], keyed: list[str] | None
) -> Select[Any]:
    """The portable results query (SQLite), ``keyed``: the ``code|system|code`` keys."""
    r = fhir_resources.c
    ref = fhir_idx_reference.alias("subject_ref")

    # Driven from the reference index (the rows pointing at these Patients), joined to each
    # resource by its primary key: never a pass over every result. ``subject`` only: the
    # ``patient`` parameter indexes the same reference again.
    joined = ref.join(
        fhir_resources, and_(r.resource_type == ref.c.resource_type, r.id == ref.c.resource_id)
    )
    conditions = [
        ref.c.target_type == "Patient",
        ref.c.target_id.in_(patient_ids),
        ref.c.param == SUBJECT_PARAM,
        ref.c.resource_type.in_(types),
        r.deleted == false(),
    ]
    if keyed is not None:
        token = fhir_idx_token.alias("code_token")
        # One expression over param, system and code, so that no index on the code applies:
        # the lookup goes through the owner index (this resource's few token rows) instead of
        # every result in the province with that code (SQLite has no statistics to know).
        conditions.append(
            select(literal(1))
            .where(
                token.c.resource_type == r.resource_type,
                token.c.resource_id == r.id,
                (token.c.param + "|" + token.c.system + "|" + token.c.code).in_(keyed),
            )
            .exists()
        )
    return (
        select(r.resource_type, r.id, r.version, r.last_updated, r.content, r.institution_code)
        .select_from(joined)
        .where(and_(*conditions))
        .order_by(r.last_updated.desc(), r.resource_type, r.id)
        .limit(MAX_RESULTS)
    )


# On PostgreSQL each Patient drives its own look-up of the reference index by (target_type,
# target_id) (a LATERAL sub-query kept apart by OFFSET 0): with `target_id = ANY(...)` the
# planner, on tables without statistics (autovacuum off, a new database), read the index by
# target_type alone and filtered every reference to any Patient (decision 0057).
_RESULTS_SQL = (  # constant text (no input in it)
    "SELECT r.resource_type, r.id, r.version, r.last_updated, r.content, r.institution_code"  # noqa: S608
    " FROM unnest(%(patient_ids)s::text[]) AS t(id)"
    " JOIN LATERAL (SELECT x.resource_type, x.resource_id FROM fhir_idx_reference x"
    " WHERE x.target_type = 'Patient' AND x.target_id = t.id AND x.param = 'subject'"
    " AND x.resource_type = ANY(%(types)s::text[]) OFFSET 0) ref ON true"
    " JOIN fhir_resources r ON r.resource_type = ref.resource_type AND r.id = ref.resource_id"
    " WHERE r.deleted = false{codes}"
    f" ORDER BY r.last_updated DESC, r.resource_type, r.id LIMIT {MAX_RESULTS}"
)
_COLUMNS = ("resource_type", "id", "version", "last_updated", "content", "institution_code")
_PG_RESULTS = RawSelect(_RESULTS_SQL.format(codes=""), _COLUMNS)
# One expression over param, system and code (as in the portable query): the owner index.
# The EXISTS is kept a sub-plan of each result row by OFFSET 0 (decision 0063): pulled up as a
# semi-join, the planner weighed join orders and methods over the token table at every
# execution (the connections plan each one: ``force_custom_plan``), about 1.2 ms of planning
# out of 1.7; as a sub-plan it is the same owner-index look-up per result row.
_PG_RESULTS_CODED = RawSelect(
    _RESULTS_SQL.format(
        codes=" AND EXISTS (SELECT 1 FROM fhir_idx_token k"
        " WHERE k.resource_type = r.resource_type AND k.resource_id = r.id"
        " AND (k.param || '|' || k.system || '|' || k.code) = ANY(%(codes)s::text[]) OFFSET 0)"
    ),
    _COLUMNS,
)
