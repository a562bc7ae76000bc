"""recognition: duplicate-test alerts and their outcomes

Revision ID: 0005_recognition
Revises: 0004_records
Create Date: 2026-11-29 23:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_recognition"
down_revision = "0004_records"
branch_labels = ("recognition",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recognition_alerts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("test_id", sa.String(length=64), nullable=False),
        sa.Column("loinc", sa.String(length=32), nullable=False),
        sa.Column("ordering_institution", sa.String(length=64), nullable=False),
        sa.Column("result_type", sa.String(length=64), nullable=False),
        sa.Column("result_id", sa.String(length=64), nullable=False),
        sa.Column("result_institution", sa.String(length=64), nullable=True),
        sa.Column("result_date", sa.Date(), nullable=False),
        sa.Column("recognised", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("alerted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("outcome_source", sa.String(length=32), nullable=True),
        sa.Column("outcome_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recognition_alerts")),
        sa.UniqueConstraint(
            "order_id", "result_type", "result_id", name="uq_recognition_alerts_pair"
        ),
    )
    op.create_index(
        "ix_recognition_alerts_alerted_at", "recognition_alerts", ["alerted_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_recognition_alerts_alerted_at", table_name="recognition_alerts")
    op.drop_table("recognition_alerts")
