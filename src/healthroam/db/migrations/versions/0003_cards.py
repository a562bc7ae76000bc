"""cards: cards, events, uses, keys, issuance runs, trust lists

Revision ID: 0003_cards
Revises: 0002_registry
Create Date: 2026-11-25 19:07:10.795461
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003_cards"
down_revision = "0002_registry"
branch_labels = ("cards",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "card_issue_runs",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("last_master_id", sa.BigInteger(), nullable=False),
        sa.Column("issued", sa.BigInteger(), nullable=False),
        sa.Column("skipped", sa.BigInteger(), nullable=False),
        sa.Column("finished", sa.Boolean(), nullable=False),
        sa.Column(
            "summary",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_card_issue_runs")),
    )
    op.create_table(
        "card_keys",
        sa.Column("key_id", sa.String(length=8), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("algorithm", sa.String(length=8), nullable=False),
        sa.Column("region", sa.String(length=6), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("backend", sa.String(length=16), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=True),
        sa.Column("sealed_secret", sa.LargeBinary(), nullable=True),
        sa.Column("certificate", sa.LargeBinary(), nullable=True),
        sa.Column("valid_from", sa.BigInteger(), nullable=False),
        sa.Column("valid_until", sa.BigInteger(), nullable=True),
        sa.Column("publish_until", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_card_keys")),
    )
    with op.batch_alter_table("card_keys", schema=None) as batch_op:
        batch_op.create_index("ix_card_keys_purpose_region", ["purpose", "region"], unique=False)

    op.create_table(
        "card_trust_lists",
        sa.Column("sequence", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("issued_at", sa.BigInteger(), nullable=False),
        sa.Column("signed", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(length=8), nullable=False),
        sa.PrimaryKeyConstraint("sequence", name=op.f("pk_card_trust_lists")),
    )
    op.create_table(
        "card_uses",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("institution_code", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("terminal_code", sa.String(length=64), nullable=False),
        sa.Column("channel_code", sa.String(length=16), nullable=False),
        sa.Column("step_code", sa.String(length=8), nullable=False),
        sa.Column("code_kind", sa.String(length=16), nullable=False),
        sa.Column("card_id", sa.String(length=32), nullable=True),
        sa.Column("master_index_id", sa.String(length=64), nullable=True),
        sa.Column("accepted", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_card_uses")),
    )
    with op.batch_alter_table("card_uses", schema=None) as batch_op:
        batch_op.create_index(
            "ix_card_uses_day_institution", ["day", "institution_code"], unique=False
        )

    op.create_table(
        "cards",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("master_person_id", sa.BigInteger(), nullable=False),
        sa.Column("master_index_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("card_no", sa.String(length=32), nullable=True),
        sa.Column("ehc_id", sa.String(length=128), nullable=True),
        sa.Column("card_ref", sa.LargeBinary(length=16), nullable=True),
        sa.Column("id_type", sa.String(length=2), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("status_version", sa.Integer(), nullable=False),
        sa.Column("region", sa.String(length=6), nullable=False),
        sa.Column("issuer", sa.String(length=64), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issuing_key_id", sa.String(length=8), nullable=True),
        sa.Column("ehc_root_key_id", sa.String(length=8), nullable=True),
        sa.Column("credential", sa.Text(), nullable=True),
        sa.Column("credential_version", sa.Integer(), nullable=True),
        sa.Column("static_code", sa.Text(), nullable=True),
        sa.Column("replaces", sa.String(length=32), nullable=True),
        sa.Column("replaced_by", sa.String(length=32), nullable=True),
        sa.Column("batch_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["master_person_id"],
            ["master_persons.id"],
            name=op.f("fk_cards_master_person_id_master_persons"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cards")),
        sa.UniqueConstraint("card_no", name=op.f("uq_cards_card_no")),
    )
    with op.batch_alter_table("cards", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cards_batch_id"), ["batch_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_cards_card_ref"), ["card_ref"], unique=False)
        batch_op.create_index("ix_cards_ehc_id", ["ehc_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_cards_master_index_id"), ["master_index_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_cards_master_person_id"), ["master_person_id"], unique=False
        )
        batch_op.create_index("ix_cards_status", ["status"], unique=False)
        batch_op.create_index(
            "uq_cards_live_ehc_id",
            ["ehc_id"],
            unique=True,
            sqlite_where=sa.text("status != 'cancelled'"),
            postgresql_where=sa.text("status != 'cancelled'"),
        )

    op.create_table(
        "card_events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("card_id", sa.String(length=32), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=24), nullable=False),
        sa.Column("from_status", sa.String(length=24), nullable=True),
        sa.Column("to_status", sa.String(length=24), nullable=False),
        sa.Column("status_version", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=True),
        sa.Column("institution_code", sa.String(length=64), nullable=True),
        sa.Column("end_user", sa.String(length=200), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["card_id"], ["cards.id"], name=op.f("fk_card_events_card_id_cards")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_card_events")),
    )
    with op.batch_alter_table("card_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_card_events_card_id"), ["card_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("card_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_card_events_card_id"))

    op.drop_table("card_events")
    with op.batch_alter_table("cards", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_cards_live_ehc_id",
            sqlite_where=sa.text("status != 'cancelled'"),
            postgresql_where=sa.text("status != 'cancelled'"),
        )
        batch_op.drop_index("ix_cards_status")
        batch_op.drop_index(batch_op.f("ix_cards_master_person_id"))
        batch_op.drop_index(batch_op.f("ix_cards_master_index_id"))
        batch_op.drop_index("ix_cards_ehc_id")
        batch_op.drop_index(batch_op.f("ix_cards_card_ref"))
        batch_op.drop_index(batch_op.f("ix_cards_batch_id"))

    op.drop_table("cards")
    with op.batch_alter_table("card_uses", schema=None) as batch_op:
        batch_op.drop_index("ix_card_uses_day_institution")

    op.drop_table("card_uses")
    op.drop_table("card_trust_lists")
    with op.batch_alter_table("card_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_card_keys_purpose_region")

    op.drop_table("card_keys")
    op.drop_table("card_issue_runs")
