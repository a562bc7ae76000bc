"""loadnames: an initial load's name counts staged per chunk (decision 0056)

Revision ID: 0012_loadnames
Revises: 0009_eventfeed
Create Date: 2026-12-01 02:50:00

Adds ``registry_load_names`` (name, count), without keys or indexes: an initial registry load
appends each chunk's name counts to it with COPY and adds them into ``mpi_name_counts`` once,
when it rebuilds its indexes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_loadnames"
down_revision = "0009_eventfeed"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registry_load_names",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("registry_load_names")
