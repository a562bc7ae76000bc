"""registry: master persons, source records, blocking keys, reviews, events

Revision ID: 0002_registry
Revises: 0001
Create Date: 2026-11-25 19:01:53.423896
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002_registry"
down_revision = "0001"
branch_labels = ("registry",)
depends_on = None


def upgrade() -> None:

    op.create_table(
        "master_persons",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("master_index_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("merged_into", sa.BigInteger(), nullable=True),
        sa.Column(
            "golden",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("birth_date", sa.String(length=10), nullable=True),
        sa.Column("sex", sa.String(length=1), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["merged_into"],
            ["master_persons.id"],
            name=op.f("fk_master_persons_merged_into_master_persons"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_master_persons")),
        sa.UniqueConstraint("master_index_id", name=op.f("uq_master_persons_master_index_id")),
    )
    with op.batch_alter_table("master_persons", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_master_persons_birth_date"), ["birth_date"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_master_persons_name"), ["name"], unique=False)

    op.create_table(
        "mpi_name_counts",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_mpi_name_counts")),
    )
    op.create_table(
        "registry_loads",
        sa.Column("file_hash", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("rows_done", sa.BigInteger(), nullable=False),
        sa.Column("finished", sa.Integer(), nullable=False),
        sa.Column(
            "summary",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("file_hash", "source", name=op.f("pk_registry_loads")),
    )
    op.create_table(
        "source_records",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("institution_code", sa.String(length=64), nullable=False),
        sa.Column("id_system", sa.String(length=200), nullable=False),
        sa.Column("local_id", sa.String(length=200), nullable=False),
        sa.Column("master_id", sa.BigInteger(), nullable=False),
        sa.Column("link_type", sa.String(length=16), nullable=False),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "normalized",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("fhir_patient_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["institution_code"],
            ["institutions.code"],
            name=op.f("fk_source_records_institution_code_institutions"),
        ),
        sa.ForeignKeyConstraint(
            ["master_id"],
            ["master_persons.id"],
            name=op.f("fk_source_records_master_id_master_persons"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_source_records")),
        sa.UniqueConstraint(
            "institution_code", "id_system", "local_id", name="uq_source_records_key"
        ),
    )
    with op.batch_alter_table("source_records", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_source_records_fhir_patient_id"), ["fhir_patient_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_source_records_master_id"), ["master_id"], unique=False
        )

    op.create_table(
        "mpi_blocking_keys",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("source_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["source_records.id"],
            name=op.f("fk_mpi_blocking_keys_source_id_source_records"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key", "source_id", name=op.f("pk_mpi_blocking_keys")),
    )
    with op.batch_alter_table("mpi_blocking_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_mpi_blocking_keys_source_id"), ["source_id"], unique=False
        )

    op.create_table(
        "mpi_events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("master_id", sa.BigInteger(), nullable=False),
        sa.Column("other_master_id", sa.BigInteger(), nullable=True),
        sa.Column("source_id", sa.BigInteger(), nullable=True),
        sa.Column("actor_institution", sa.String(length=64), nullable=True),
        sa.Column("actor_user", sa.String(length=200), nullable=True),
        sa.Column("actor_client", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column(
            "institutions",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "detail",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.ForeignKeyConstraint(
            ["master_id"],
            ["master_persons.id"],
            name=op.f("fk_mpi_events_master_id_master_persons"),
        ),
        sa.ForeignKeyConstraint(
            ["other_master_id"],
            ["master_persons.id"],
            name=op.f("fk_mpi_events_other_master_id_master_persons"),
        ),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["source_records.id"],
            name=op.f("fk_mpi_events_source_id_source_records"),
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_mpi_events")),
    )
    with op.batch_alter_table("mpi_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_mpi_events_master_id"), ["master_id"], unique=False)

    op.create_table(
        "mpi_pair_decisions",
        sa.Column("low_source_id", sa.BigInteger(), nullable=False),
        sa.Column("high_source_id", sa.BigInteger(), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decided_agency", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["high_source_id"],
            ["source_records.id"],
            name=op.f("fk_mpi_pair_decisions_high_source_id_source_records"),
        ),
        sa.ForeignKeyConstraint(
            ["low_source_id"],
            ["source_records.id"],
            name=op.f("fk_mpi_pair_decisions_low_source_id_source_records"),
        ),
        sa.PrimaryKeyConstraint(
            "low_source_id", "high_source_id", name=op.f("pk_mpi_pair_decisions")
        ),
    )
    with op.batch_alter_table("mpi_pair_decisions", schema=None) as batch_op:
        batch_op.create_index("ix_mpi_pair_decisions_high", ["high_source_id"], unique=False)

    op.create_table(
        "mpi_reviews",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("source_id", sa.BigInteger(), nullable=False),
        sa.Column("candidate_source_id", sa.BigInteger(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column(
            "details",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decided_agency", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["candidate_source_id"],
            ["source_records.id"],
            name=op.f("fk_mpi_reviews_candidate_source_id_source_records"),
        ),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["source_records.id"],
            name=op.f("fk_mpi_reviews_source_id_source_records"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mpi_reviews")),
        sa.UniqueConstraint("source_id", "candidate_source_id", name="uq_mpi_reviews_pair"),
    )
    with op.batch_alter_table("mpi_reviews", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_mpi_reviews_source_id"), ["source_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_mpi_reviews_status"), ["status"], unique=False)

    op.create_table(
        "mpi_event_recipients",
        sa.Column("institution_code", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["seq"], ["mpi_events.seq"], name=op.f("fk_mpi_event_recipients_seq_mpi_events")
        ),
        sa.PrimaryKeyConstraint("institution_code", "seq", name=op.f("pk_mpi_event_recipients")),
    )


def downgrade() -> None:

    op.drop_table("mpi_event_recipients")
    with op.batch_alter_table("mpi_reviews", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mpi_reviews_status"))
        batch_op.drop_index(batch_op.f("ix_mpi_reviews_source_id"))

    op.drop_table("mpi_reviews")
    with op.batch_alter_table("mpi_pair_decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_mpi_pair_decisions_high")

    op.drop_table("mpi_pair_decisions")
    with op.batch_alter_table("mpi_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mpi_events_master_id"))

    op.drop_table("mpi_events")
    with op.batch_alter_table("mpi_blocking_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mpi_blocking_keys_source_id"))

    op.drop_table("mpi_blocking_keys")
    with op.batch_alter_table("source_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_source_records_master_id"))
        batch_op.drop_index(batch_op.f("ix_source_records_fhir_patient_id"))

    op.drop_table("source_records")
    op.drop_table("registry_loads")
    op.drop_table("mpi_name_counts")
    with op.batch_alter_table("master_persons", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_master_persons_name"))
        batch_op.drop_index(batch_op.f("ix_master_persons_birth_date"))

    op.drop_table("master_persons")
