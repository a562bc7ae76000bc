"""exchange: HL7 v2 senders and message log

Revision ID: 0005_exchange
Revises: 0004_records
Create Date: 2026-11-29 22:33:58.489923
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_exchange"
down_revision = "0004_records"
branch_labels = ("exchange",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hl7_messages",
        sa.Column("application", sa.String(length=180), nullable=False),
        sa.Column("facility", sa.String(length=180), nullable=False),
        sa.Column("control_id", sa.String(length=199), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("institution_code", sa.String(length=64), nullable=False),
        sa.Column("message_type", sa.String(length=3), nullable=False),
        sa.Column("trigger_event", sa.String(length=3), nullable=False),
        sa.Column("version", sa.String(length=8), nullable=False),
        sa.Column("charset", sa.String(length=32), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("written", sa.Integer(), nullable=False),
        sa.Column("ack_code", sa.String(length=2), nullable=False),
        sa.Column("ack", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint(
            "application", "facility", "control_id", name=op.f("pk_hl7_messages")
        ),
    )
    with op.batch_alter_table("hl7_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_hl7_messages_received_at"), ["received_at"], unique=False
        )

    op.create_table(
        "hl7_rejections",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("application", sa.String(length=180), nullable=True),
        sa.Column("facility", sa.String(length=180), nullable=True),
        sa.Column("control_id", sa.String(length=199), nullable=True),
        sa.Column("institution_code", sa.String(length=64), nullable=True),
        sa.Column("message_type", sa.String(length=3), nullable=True),
        sa.Column("trigger_event", sa.String(length=3), nullable=True),
        sa.Column("version", sa.String(length=8), nullable=True),
        sa.Column("ack_code", sa.String(length=2), nullable=False),
        sa.Column("error_code", sa.String(length=8), nullable=False),
        sa.Column("location", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("peer", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hl7_rejections")),
    )
    with op.batch_alter_table("hl7_rejections", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_hl7_rejections_received_at"), ["received_at"], unique=False
        )

    op.create_table(
        "hl7_senders",
        sa.Column("application", sa.String(length=180), nullable=False),
        sa.Column("facility", sa.String(length=180), nullable=False),
        sa.Column("institution_code", sa.String(length=64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["institution_code"],
            ["institutions.code"],
            name=op.f("fk_hl7_senders_institution_code_institutions"),
        ),
        sa.PrimaryKeyConstraint("application", "facility", name=op.f("pk_hl7_senders")),
    )
    with op.batch_alter_table("hl7_senders", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_hl7_senders_institution_code"), ["institution_code"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("hl7_senders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hl7_senders_institution_code"))

    op.drop_table("hl7_senders")
    with op.batch_alter_table("hl7_rejections", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hl7_rejections_received_at"))

    op.drop_table("hl7_rejections")
    with op.batch_alter_table("hl7_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hl7_messages_received_at"))

    op.drop_table("hl7_messages")
