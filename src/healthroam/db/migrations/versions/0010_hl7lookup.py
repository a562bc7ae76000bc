"""hl7lookup: the HL7 gateway's per-message look-up query as a PostgreSQL function (decision 0049)

Revision ID: 0010_hl7lookup
Revises: 0005_exchange
Create Date: 2026-11-30 23:55:00

PostgreSQL only (SQLite: nothing). ``hl7_lookup(key_types, key_ids, wanted_types,
wanted_systems, wanted_codes)`` returns the current rows of ``(resource_type, id)`` keys (a
Patient's with the master index id of the person it was registered as) and the live rows
indexed with ``identifier=system|value``: the rows of the query that
``exchange/hl7/repository.py`` sent itself before. The function exists to choose the plan:

- it runs with ``plan_cache_mode = force_generic_plan`` (its ``SET`` clause; the session keeps
  ``force_custom_plan``), so PL/pgSQL plans its query once per connection instead of once per
  message (about 0.5 ms of the backend's CPU each time), and with ``enable_seqscan = off``;
- every table is reached by an index look-up: each key and identifier drives a ``LATERAL``
  sub-query kept apart by ``OFFSET 0`` (a nested loop whatever the statistics), the master
  index id by two scalar sub-queries (``source_records`` by ``fhir_patient_id``, then
  ``master_persons`` by its primary key);
- the generic plan is made only once ``fhir_resources`` has at least 64 pages (512 kB, a few
  hundred resources): below, the planner estimates a resource-type-only scan of
  ``ix_fhir_resources_type_updated`` at one row, as cheap as the primary key, and takes it
  (with ``EXPLAIN`` on an empty table, analysed or not); a plan made then would be kept for
  the connection's life. Below the threshold the same query is run through ``EXECUTE`` and
  planned for its values each time, as before.

The tables are resolved when the function runs (PL/pgSQL), so it needs no other area's
revision to be created.
"""

from __future__ import annotations

from alembic import op

revision = "0010_hl7lookup"
down_revision = "0005_exchange"
branch_labels = None
depends_on = None

# The query, with $1-$5 for the function's arguments in the EXECUTE form.
_QUERY = """
SELECT r.resource_type, r.id, r.deleted, r.institution_code, r.content,
  CASE WHEN r.resource_type = 'Patient' THEN (
    SELECT m.master_index_id FROM master_persons m WHERE m.id = (
      SELECT s.master_id FROM source_records s WHERE s.fhir_patient_id = r.id LIMIT 1))
  END,
  NULL::varchar, NULL::varchar, NULL::timestamptz
FROM unnest({0}, {1}) AS k(resource_type, id)
CROSS JOIN LATERAL (
  SELECT * FROM fhir_resources r WHERE r.resource_type = k.resource_type AND r.id = k.id
  OFFSET 0
) AS r
UNION ALL
SELECT r.resource_type, r.id, r.deleted, r.institution_code, r.content, NULL,
  t.system, t.code, r.last_updated
FROM unnest({2}, {3}, {4}) AS w(resource_type, system, code)
CROSS JOIN LATERAL (
  SELECT t.resource_type, t.resource_id, t.system, t.code FROM fhir_idx_token t
  WHERE t.resource_type = w.resource_type AND t.param = 'identifier'
    AND t.system = w.system AND t.code = w.code
  OFFSET 0
) AS t
CROSS JOIN LATERAL (
  SELECT * FROM fhir_resources r
  WHERE r.resource_type = t.resource_type AND r.id = t.resource_id AND r.deleted IS false
  OFFSET 0
) AS r"""
_ARGUMENTS = ("key_types", "key_ids", "wanted_types", "wanted_systems", "wanted_codes")
# fhir_resources' size from which the generic plan is made (64 pages of 8 kB).
GENERIC_FROM_BYTES = 64 * 8192

FUNCTION = f"""
CREATE OR REPLACE FUNCTION hl7_lookup(
  key_types varchar[], key_ids varchar[],
  wanted_types varchar[], wanted_systems varchar[], wanted_codes varchar[]
) RETURNS TABLE (
  resource_type varchar, id varchar, deleted boolean, institution_code varchar, content jsonb,
  master_index_id varchar, system varchar, code varchar, last_updated timestamptz
)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $fn$
#variable_conflict use_column
BEGIN
  IF pg_relation_size('fhir_resources') >= {GENERIC_FROM_BYTES} THEN
    RETURN QUERY {_QUERY.format(*_ARGUMENTS)};
  ELSE
    RETURN QUERY EXECUTE $q${_QUERY.format(*(f"${n}" for n in range(1, 6)))}$q$
      USING {", ".join(_ARGUMENTS)};
  END IF;
END
$fn$"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION IF EXISTS hl7_lookup(varchar[], varchar[], varchar[], varchar[],"
            " varchar[])"
        )
