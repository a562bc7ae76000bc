"""Results (Observation, DiagnosticReport) of a set of Patients, with the institution that
wrote each one: the store-side query behind duplicate-test alerts (exchange/recognition).

One SQL query over the resource table and its reference and token indexes; the caller
applies its own rules (equivalence, validity, recognition) to the rows it gets back.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, and_, false, literal, select

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
        ref.c.target_id.in_(list(patient_ids)),
        ref.c.param == SUBJECT_PARAM,
        ref.c.resource_type.in_(list(types)),
        r.deleted == false(),
    ]
    if codes is not None:
        token = fhir_idx_token.alias("code_token")
        # One expression over param, system and code, so that no index on the code applies:
        # the lookup goes through the owner index (this resource's few token rows) instead of
        # every result in the province with that code (SQLite has no statistics to know).
        keyed = token.c.param + "|" + token.c.system + "|" + token.c.code
        conditions.append(
            select(literal(1))
            .where(
                token.c.resource_type == r.resource_type,
                token.c.resource_id == r.id,
                keyed.in_(sorted(f"code|{system}|{code}" for system, code in codes)),
            )
            .exists()
        )
    query = (
        select(r.resource_type, r.id, r.version, r.last_updated, r.content, r.institution_code)
        .select_from(joined)
        .where(and_(*conditions))
        .order_by(r.last_updated.desc(), r.resource_type, r.id)
        .limit(MAX_RESULTS)
    )
    deferred = deferred_on(conn)
    if deferred and not deferred.concerns(types, SUBJECT_PARAM, "Patient", patient_ids):
        with deferred.bypass():  # nothing deferred could change the answer: no flush
            rows = conn.execute(query).all()
    else:
        rows = conn.execute(query).all()
    return [
        ResultRow(
            StoredResource(row.resource_type, row.id, row.version, row.last_updated, row.content),
            row.institution_code,
        )
        for row in rows
    ]
