"""carevisible: the Patients a care provider may see now, as a PostgreSQL function (decision 0066)

Revision ID: 0014_carevisible
Revises: 0005_care
Create Date: 2026-12-01 09:40:00

PostgreSQL only (SQLite: nothing). ``care_visible_patients(institution, at)`` returns the
Patient ids of every person ``institution`` has a care relationship with at ``at``, leaving
out every such person with a privacy Consent on record: the rows of
``exchange/care/repository.py``'s ``related_patient_ids``, which a care provider's search
across residents embedded as CTEs. The function exists to choose the plan:

- that part of every such search was planned again for each search (the platform's
  connections run ``plan_cache_mode = force_custom_plan``): about 1.1 ms of a search's 1.5 ms
  of planning at 30,000 people, more than executing the whole search;
- the function runs with ``plan_cache_mode = force_generic_plan`` (its ``SET`` clause; the
  session keeps ``force_custom_plan``), so PL/pgSQL plans its query once per connection, and
  with ``enable_seqscan = off``, so that plan reaches each table by its index whatever the
  statistics when it was made (a plan made on an empty table is kept for the connection's
  life: decision 0049's lesson); every table it reads has the index for its look-up.

The tables are resolved when the function runs (PL/pgSQL), so it needs no other area's
revision but the care tables'.
"""

from __future__ import annotations

from alembic import op

revision = "0014_carevisible"
down_revision = "0005_care"
branch_labels = None
depends_on = None

FUNCTION = """
CREATE OR REPLACE FUNCTION care_visible_patients(p_institution varchar, p_at timestamptz)
RETURNS TABLE (patient_id varchar)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $fn$
BEGIN
  RETURN QUERY
  WITH related_persons AS (
    SELECT mp.id FROM master_persons mp
    WHERE mp.master_index_id IN (
      SELECT cr.master_index_id FROM care_relationships cr
      WHERE cr.institution_code = p_institution AND cr.since <= p_at AND cr.until > p_at
    )
  ),
  related_patients AS (
    SELECT sr.master_id AS person, sr.fhir_patient_id AS pid FROM source_records sr
    WHERE sr.master_id IN (SELECT rp.id FROM related_persons rp)
      AND sr.fhir_patient_id IS NOT NULL
    UNION ALL
    SELECT mp.id, mp.master_index_id FROM master_persons mp
    WHERE mp.id IN (SELECT rp.id FROM related_persons rp)
    UNION ALL
    SELECT mp.merged_into, mp.master_index_id FROM master_persons mp
    WHERE mp.merged_into IN (SELECT rp.id FROM related_persons rp)
  ),
  consenting_persons AS (
    SELECT p.person FROM related_patients p
    JOIN fhir_idx_reference con_ref
      ON con_ref.target_type = 'Patient' AND con_ref.target_id = p.pid
     AND con_ref.resource_type = 'Consent'
    JOIN fhir_resources con ON con.resource_type = 'Consent' AND con.id = con_ref.resource_id
    JOIN fhir_idx_token con_scope
      ON con_scope.resource_type = 'Consent' AND con_scope.resource_id = con.id
     AND con_scope.param = 'scope' AND con_scope.code = 'patient-privacy'
    WHERE con.deleted = false
  )
  SELECT s.pid FROM related_patients s
  WHERE NOT EXISTS (SELECT 1 FROM consenting_persons c WHERE c.person = s.person);
END
$fn$"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS care_visible_patients(varchar, timestamptz)")
