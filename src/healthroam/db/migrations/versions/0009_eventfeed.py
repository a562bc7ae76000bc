"""eventfeed: the registry's event feed read in commit order (decision 0044)

Revision ID: 0009_eventfeed
Revises: 0008_keycollation
Create Date: 2026-11-30 18:30:00

Adds ``mpi_events.position`` (the feed's order, handed out after commit) with its unique index
and the partial index of events still waiting for one, and the one-row ``mpi_event_head``.
Existing events get ``position = seq``, so a cursor an institution already holds (a ``seq``
from before this revision) stays valid.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_eventfeed"
down_revision = "0008_keycollation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mpi_event_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mpi_event_head")),
    )
    with op.batch_alter_table("mpi_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("position", sa.BigInteger(), nullable=True))
    op.execute("UPDATE mpi_events SET position = seq")
    op.execute(
        "INSERT INTO mpi_event_head (id, position) SELECT 1, COALESCE(MAX(seq), 0) FROM mpi_events"
    )
    with op.batch_alter_table("mpi_events", schema=None) as batch_op:
        batch_op.create_index("ux_mpi_events_position", ["position"], unique=True)
        batch_op.create_index(
            "ix_mpi_events_unpositioned",
            ["seq"],
            unique=False,
            postgresql_where=sa.text("position IS NULL"),
            sqlite_where=sa.text("position IS NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("mpi_events", schema=None) as batch_op:
        batch_op.drop_index("ix_mpi_events_unpositioned")
        batch_op.drop_index("ux_mpi_events_position")
        batch_op.drop_column("position")
    op.drop_table("mpi_event_head")
