"""care: care relationships and access exceptions (cross-institution care)

Revision ID: 0005_care
Revises: 0004_records
Create Date: 2026-11-29 22:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_care"
down_revision = "0004_records"
branch_labels = ("care",)
depends_on = None


def _id() -> sa.Column[int]:
    return sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        autoincrement=True,
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "care_relationships",
        _id(),
        sa.Column("master_index_id", sa.String(length=64), nullable=False),
        sa.Column("institution_code", sa.String(length=64), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("encounter_ref", sa.String(length=140), nullable=True),
        sa.Column("card_id", sa.String(length=32), nullable=True),
        sa.Column("terminal_code", sa.String(length=64), nullable=True),
        sa.Column("client_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_care_relationships")),
    )
    op.create_index(
        "ix_care_relationships_lookup",
        "care_relationships",
        ["institution_code", "master_index_id", "until"],
    )
    op.create_index("ix_care_relationships_person", "care_relationships", ["master_index_id"])
    op.create_table(
        "access_exceptions",
        _id(),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("institution_code", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("end_user", sa.String(length=200), nullable=True),
        sa.Column("master_index_id", sa.String(length=64), nullable=False),
        sa.Column("access", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("had_relationship", sa.Boolean(), nullable=False),
        sa.Column("consent_overridden", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("review_outcome", sa.String(length=16), nullable=True),
        sa.Column("review_note", sa.Text(), nullable=True),
        sa.Column("reviewed_by", sa.String(length=200), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_exceptions")),
    )
    op.create_index("ix_access_exceptions_status", "access_exceptions", ["status", "occurred_at"])
    op.create_index("ix_access_exceptions_person", "access_exceptions", ["master_index_id"])
    op.create_index("ix_master_persons_merged_into", "master_persons", ["merged_into"])


def downgrade() -> None:
    op.drop_index("ix_master_persons_merged_into", table_name="master_persons")
    op.drop_table("access_exceptions")
    op.drop_table("care_relationships")
