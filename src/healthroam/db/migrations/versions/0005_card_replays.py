"""card_replays: dynamic codes already accepted, shared by every server process

Revision ID: 0005_card_replays
Revises: 0004_records
Create Date: 2026-11-29 23:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_card_replays"
down_revision = "0004_records"
branch_labels = ("card_replays",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "card_replays",
        sa.Column("code_hash", sa.LargeBinary(length=16), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("code_hash", name=op.f("pk_card_replays")),
    )
    op.create_index(
        op.f("ix_card_replays_expires_at"), "card_replays", ["expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_card_replays_expires_at"), table_name="card_replays")
    op.drop_table("card_replays")
