"""clinicians: clinician accounts and clinician-page sessions

Revision ID: 0005_clinicians
Revises: 0004_records
Create Date: 2026-11-29 22:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_clinicians"
down_revision = "0004_records"
branch_labels = ("clinicians",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clinicians",
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("institution_code", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["institution_code"],
            ["institutions.code"],
            name=op.f("fk_clinicians_institution_code_institutions"),
        ),
        sa.PrimaryKeyConstraint("username", name=op.f("pk_clinicians")),
    )
    with op.batch_alter_table("clinicians", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_clinicians_institution_code"), ["institution_code"], unique=False
        )

    op.create_table(
        "clinician_sessions",
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["username"],
            ["clinicians.username"],
            name=op.f("fk_clinician_sessions_username_clinicians"),
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_clinician_sessions")),
    )
    with op.batch_alter_table("clinician_sessions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_clinician_sessions_expires_at"), ["expires_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_clinician_sessions_username"), ["username"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("clinician_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_clinician_sessions_username"))
        batch_op.drop_index(batch_op.f("ix_clinician_sessions_expires_at"))
    op.drop_table("clinician_sessions")
    with op.batch_alter_table("clinicians", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_clinicians_institution_code"))
    op.drop_table("clinicians")
