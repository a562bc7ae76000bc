"""datespan: date index rows flagged short or long, so a date range is sought from both ends

Revision ID: 0006_datespan
Revises: 0004_records
Create Date: 2026-11-30 05:30:00

A date search asks for index rows whose interval overlaps the searched one (``high >= start
AND low < end``). The B-tree on ``low`` alone reads every row that began before ``end``, and
PostgreSQL, taking the two bounds as independent, expected many matches and walked the whole
store in ``last_updated`` order instead (88 ms for 14 of 10,039 Encounters). Rows whose span is
at most 32 days (dates to the day or month, most visits) also satisfy ``low >= start - 32
days``: the search adds that bound for them, and takes the few long or open-ended rows
(``long_span``) on their own index.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_datespan"
down_revision = "0004_records"
branch_labels = ("datespan",)
depends_on = None

# 32 days below: records.repository.SHORT_SPAN at the time of this migration.


def upgrade() -> None:
    op.add_column(
        "fhir_idx_date",
        sa.Column("long_span", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        op.execute(
            "UPDATE fhir_idx_date SET long_span = true WHERE high - low > interval '32 days'"
        )
    else:
        op.execute(
            "UPDATE fhir_idx_date SET long_span = 1 WHERE julianday(high) - julianday(low) > 32"
        )
    op.create_index(
        "ix_fhir_idx_date_span", "fhir_idx_date", ["resource_type", "param", "long_span", "low"]
    )


def downgrade() -> None:
    op.drop_index("ix_fhir_idx_date_span", table_name="fhir_idx_date")
    op.drop_column("fhir_idx_date", "long_span")
