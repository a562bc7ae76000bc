"""tokenorder: token index rows carry their resource's lastUpdated (decision 0039)

Revision ID: 0007_tokenorder
Revises: 0006_datespan
Create Date: 2026-11-30 12:30:00

A search on one code (``Condition?code=system|code``) returns its page in the default order,
``lastUpdated`` then id. The token rows did not know the order, so every match's resource row
was read and sorted for a page of 20 (832 rows for one ICD-10 code at 10,000 people, growing
with the store). Each token row now carries the resource's ``lastUpdated`` (rewritten with
every version, as the index rows are), and ``ix_fhir_idx_token_system_code_updated``
(resource type, param, system, code, lastUpdated, resource id) gives a code's rows in page
order. It replaces ``ix_fhir_idx_token_system_code`` (resource type, param, system, code), its
prefix, so that no other index with the same four equality columns competes for the search.
Existing rows are stamped from ``fhir_resources``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_tokenorder"
down_revision = "0006_datespan"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "fhir_idx_token", sa.Column("last_updated", sa.DateTime(timezone=True), nullable=True)
    )
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        op.execute(
            "UPDATE fhir_idx_token AS t SET last_updated = r.last_updated FROM fhir_resources AS r "
            "WHERE r.resource_type = t.resource_type AND r.id = t.resource_id"
        )
    else:
        op.execute(
            "UPDATE fhir_idx_token SET last_updated = (SELECT r.last_updated FROM fhir_resources "
            "AS r WHERE r.resource_type = fhir_idx_token.resource_type "
            "AND r.id = fhir_idx_token.resource_id)"
        )
    # Rows of no current resource (none are written so; a deleted resource has no index rows)
    # would have no time: they match nothing a search returns, and go.
    op.execute("DELETE FROM fhir_idx_token WHERE last_updated IS NULL")
    with op.batch_alter_table("fhir_idx_token") as batch_op:
        batch_op.alter_column(
            "last_updated", existing_type=sa.DateTime(timezone=True), nullable=False
        )
        batch_op.drop_index("ix_fhir_idx_token_system_code")
        batch_op.create_index(
            "ix_fhir_idx_token_system_code_updated",
            ["resource_type", "param", "system", "code", "last_updated", "resource_id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("fhir_idx_token") as batch_op:
        batch_op.drop_index("ix_fhir_idx_token_system_code_updated")
        batch_op.create_index(
            "ix_fhir_idx_token_system_code", ["resource_type", "param", "system", "code"]
        )
        batch_op.drop_column("last_updated")
