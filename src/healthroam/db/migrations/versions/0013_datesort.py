"""datesort: date index rows carry their resource's lastUpdated (decision 0059)

Revision ID: 0013_datesort
Revises: 0007_tokenorder
Create Date: 2026-12-01 06:00:00

A search on one short date window (``Encounter?date=ge..&date=lt..``, a week) returns its page
in the default order, ``lastUpdated`` then id. The date rows did not know that order, so every
match's resource row was probed to sort them before the page of 20 was cut (decision 0039):
the work per page grew with the matches, five times from 10,000 to 50,000 people. Each date
row now carries its resource's ``lastUpdated`` (rewritten with every version, as the index
rows are), and ``ix_fhir_idx_date_span_updated`` (resource type, param, long_span, low, high,
lastUpdated, resource id) replaces ``ix_fhir_idx_date_span`` (its prefix): a window's rows,
with their order, are read from that index alone, and only the page's resources are probed.
Existing rows are stamped from ``fhir_resources``: an ``UPDATE`` of every date row (on
PostgreSQL about a minute per million rows on the development host, with the old span index
dropped first), then ``VACUUM (ANALYZE) fhir_idx_date`` is advisable (the old row versions, and
the visibility map that index-only scans need).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_datesort"
down_revision = "0007_tokenorder"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    # Dropped before the rewrite: one index fewer to update for every row.
    op.drop_index("ix_fhir_idx_date_span", table_name="fhir_idx_date")
    op.add_column(
        "fhir_idx_date", sa.Column("last_updated", sa.DateTime(timezone=True), nullable=True)
    )
    if conn.dialect.name == "postgresql":
        op.execute(
            "UPDATE fhir_idx_date AS d SET last_updated = r.last_updated FROM fhir_resources AS r "
            "WHERE r.resource_type = d.resource_type AND r.id = d.resource_id"
        )
    else:
        op.execute(
            "UPDATE fhir_idx_date SET last_updated = (SELECT r.last_updated FROM fhir_resources "
            "AS r WHERE r.resource_type = fhir_idx_date.resource_type "
            "AND r.id = fhir_idx_date.resource_id)"
        )
    # Rows of no current resource (none are written so; a deleted resource has no index rows)
    # would have no time: they match nothing a search returns, and go.
    op.execute("DELETE FROM fhir_idx_date WHERE last_updated IS NULL")
    with op.batch_alter_table("fhir_idx_date") as batch_op:
        batch_op.alter_column(
            "last_updated", existing_type=sa.DateTime(timezone=True), nullable=False
        )
        batch_op.create_index(
            "ix_fhir_idx_date_span_updated",
            [
                "resource_type",
                "param",
                "long_span",
                "low",
                "high",
                "last_updated",
                "resource_id",
            ],
        )


def downgrade() -> None:
    with op.batch_alter_table("fhir_idx_date") as batch_op:
        batch_op.drop_index("ix_fhir_idx_date_span_updated")
        batch_op.drop_column("last_updated")
    op.create_index(
        "ix_fhir_idx_date_span", "fhir_idx_date", ["resource_type", "param", "long_span", "low"]
    )
