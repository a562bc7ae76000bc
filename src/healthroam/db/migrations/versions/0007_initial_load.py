"""initial_load: rows an initial registry load keeps for the matcher (decision 0038)

Revision ID: 0007_initial_load
Revises: 0002_registry
Create Date: 2026-11-30 12:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_initial_load"
down_revision = "0002_registry"
branch_labels = ("initial_load",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registry_load_deferred",
        sa.Column("file_hash", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("row_number", sa.BigInteger(), nullable=False),
        sa.Column("local_id", sa.String(length=200), nullable=True),
        sa.Column("id_system", sa.String(length=200), nullable=False),
        sa.Column("record_data", sa.Text(), nullable=False),
        sa.Column("normalized", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "file_hash", "source", "row_number", name=op.f("pk_registry_load_deferred")
        ),
    )


def downgrade() -> None:
    op.drop_table("registry_load_deferred")
