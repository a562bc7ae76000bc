"""leases: export claims with an owner, sign-in failures per address shared (decision 0052)

Revision ID: 0011_leases
Revises: 0005_bulk, 0005_clinicians
Create Date: 2026-12-01 00:00:00

Adds ``bulk_export_jobs.owner`` (the token of the claim that runs a job; jobs finished before
keep NULL and their files where they are) and the table ``clinician_login_failures`` (failed
sign-ins per source address hash, shared by every server process).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011_leases"
down_revision = ("0005_bulk", "0005_clinicians")  # joins the two areas' branches
branch_labels = ("leases",)
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("bulk_export_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(length=32), nullable=True))
    op.create_table(
        "clinician_login_failures",
        sa.Column("address_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("failures", _JSON, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("address_hash", name=op.f("pk_clinician_login_failures")),
    )
    with op.batch_alter_table("clinician_login_failures", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_clinician_login_failures_expires_at"), ["expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("clinician_login_failures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_clinician_login_failures_expires_at"))
    op.drop_table("clinician_login_failures")
    with op.batch_alter_table("bulk_export_jobs", schema=None) as batch_op:
        batch_op.drop_column("owner")
