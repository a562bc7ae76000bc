"""records: FHIR search index tables

Revision ID: 0004_records
Revises: 0003_cards
Create Date: 2026-11-25 19:44:27.381123
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_records"
down_revision = "0003_cards"
branch_labels = ("records",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fhir_idx_composite",
        sa.Column(
            "row_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("c1_system", sa.String(length=255), nullable=True),
        sa.Column("c1_code", sa.String(length=255), nullable=True),
        sa.Column("c2_system", sa.String(length=255), nullable=True),
        sa.Column("c2_code", sa.String(length=255), nullable=True),
        sa.Column("c2_low", sa.Double(), nullable=True),
        sa.Column("c2_high", sa.Double(), nullable=True),
        sa.Column("c2_date_low", sa.DateTime(timezone=True), nullable=True),
        sa.Column("c2_date_high", sa.DateTime(timezone=True), nullable=True),
        sa.Column("c2_string", sa.String(length=255), nullable=True),
        sa.Column("c3_low", sa.Double(), nullable=True),
        sa.Column("c3_high", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("row_id", name=op.f("pk_fhir_idx_composite")),
    )
    with op.batch_alter_table("fhir_idx_composite", schema=None) as batch_op:
        batch_op.create_index(
            "ix_fhir_idx_composite_c1",
            ["resource_type", "param", "c1_code", "c1_system"],
            unique=False,
        )
        batch_op.create_index(
            "ix_fhir_idx_composite_owner", ["resource_type", "resource_id"], unique=False
        )

    op.create_table(
        "fhir_idx_date",
        sa.Column(
            "row_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("low", sa.DateTime(timezone=True), nullable=False),
        sa.Column("high", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("row_id", name=op.f("pk_fhir_idx_date")),
    )
    with op.batch_alter_table("fhir_idx_date", schema=None) as batch_op:
        batch_op.create_index(
            "ix_fhir_idx_date_owner", ["resource_type", "resource_id"], unique=False
        )
        batch_op.create_index(
            "ix_fhir_idx_date_range", ["resource_type", "param", "low", "high"], unique=False
        )

    op.create_table(
        "fhir_idx_number",
        sa.Column(
            "row_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("row_id", name=op.f("pk_fhir_idx_number")),
    )
    with op.batch_alter_table("fhir_idx_number", schema=None) as batch_op:
        batch_op.create_index(
            "ix_fhir_idx_number_owner", ["resource_type", "resource_id"], unique=False
        )
        batch_op.create_index(
            "ix_fhir_idx_number_value", ["resource_type", "param", "value"], unique=False
        )

    op.create_table(
        "fhir_idx_quantity",
        sa.Column(
            "row_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("low", sa.Double(), nullable=True),
        sa.Column("high", sa.Double(), nullable=True),
        sa.Column("system", sa.String(length=255), nullable=True),
        sa.Column("code", sa.String(length=100), nullable=True),
        sa.Column("unit", sa.String(length=100), nullable=True),
        sa.Column("canonical_low", sa.Double(), nullable=True),
        sa.Column("canonical_high", sa.Double(), nullable=True),
        sa.Column("canonical_code", sa.String(length=100), nullable=True),
        sa.PrimaryKeyConstraint("row_id", name=op.f("pk_fhir_idx_quantity")),
    )
    with op.batch_alter_table("fhir_idx_quantity", schema=None) as batch_op:
        batch_op.create_index(
            "ix_fhir_idx_quantity_canonical",
            ["resource_type", "param", "canonical_code"],
            unique=False,
        )
        batch_op.create_index(
            "ix_fhir_idx_quantity_owner", ["resource_type", "resource_id"], unique=False
        )
        batch_op.create_index(
            "ix_fhir_idx_quantity_value", ["resource_type", "param", "code", "low"], unique=False
        )

    op.create_table(
        "fhir_idx_reference",
        sa.Column(
            "row_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("target_type", sa.String(length=64), nullable=True),
        sa.Column("target_id", sa.String(length=64), nullable=True),
        sa.Column("url", sa.String(length=500), nullable=True),
        sa.Column("version", sa.String(length=64), nullable=True),
        sa.Column("identifier_system", sa.String(length=255), nullable=True),
        sa.Column("identifier_value", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("row_id", name=op.f("pk_fhir_idx_reference")),
    )
    with op.batch_alter_table("fhir_idx_reference", schema=None) as batch_op:
        batch_op.create_index(
            "ix_fhir_idx_reference_owner", ["resource_type", "resource_id"], unique=False
        )
        batch_op.create_index(
            "ix_fhir_idx_reference_pointed", ["target_type", "target_id"], unique=False
        )
        batch_op.create_index(
            "ix_fhir_idx_reference_target",
            ["resource_type", "param", "target_type", "target_id"],
            unique=False,
        )

    op.create_table(
        "fhir_idx_string",
        sa.Column(
            "row_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("value", sa.String(length=500), nullable=False),
        sa.Column("normalized", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("row_id", name=op.f("pk_fhir_idx_string")),
    )
    with op.batch_alter_table("fhir_idx_string", schema=None) as batch_op:
        batch_op.create_index(
            "ix_fhir_idx_string_normalized",
            ["resource_type", "param", "normalized"],
            unique=False,
            postgresql_ops={"normalized": "text_pattern_ops"},
        )
        batch_op.create_index(
            "ix_fhir_idx_string_owner", ["resource_type", "resource_id"], unique=False
        )

    op.create_table(
        "fhir_idx_token",
        sa.Column(
            "row_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("system", sa.String(length=255), nullable=True),
        sa.Column("code", sa.String(length=255), nullable=True),
        sa.Column("text", sa.String(length=255), nullable=True),
        sa.Column("type_system", sa.String(length=255), nullable=True),
        sa.Column("type_code", sa.String(length=100), nullable=True),
        sa.PrimaryKeyConstraint("row_id", name=op.f("pk_fhir_idx_token")),
    )
    with op.batch_alter_table("fhir_idx_token", schema=None) as batch_op:
        batch_op.create_index(
            "ix_fhir_idx_token_code", ["resource_type", "param", "code"], unique=False
        )
        batch_op.create_index(
            "ix_fhir_idx_token_owner", ["resource_type", "resource_id"], unique=False
        )
        batch_op.create_index(
            "ix_fhir_idx_token_system_code",
            ["resource_type", "param", "system", "code"],
            unique=False,
        )

    op.create_table(
        "fhir_idx_uri",
        sa.Column(
            "row_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("uri", sa.String(length=500), nullable=False),
        sa.PrimaryKeyConstraint("row_id", name=op.f("pk_fhir_idx_uri")),
    )
    with op.batch_alter_table("fhir_idx_uri", schema=None) as batch_op:
        batch_op.create_index(
            "ix_fhir_idx_uri_owner", ["resource_type", "resource_id"], unique=False
        )
        batch_op.create_index(
            "ix_fhir_idx_uri_uri", ["resource_type", "param", "uri"], unique=False
        )

    op.create_table(
        "fhir_search_results",
        sa.Column("search_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("search_id", "position", name=op.f("pk_fhir_search_results")),
    )
    with op.batch_alter_table("fhir_search_results", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_fhir_search_results_created_at"), ["created_at"], unique=False
        )

    op.create_table(
        "fhir_search_totals",
        sa.Column("search_id", sa.String(length=36), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("search_id", name=op.f("pk_fhir_search_totals")),
    )
    with op.batch_alter_table("fhir_resource_versions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_fhir_resource_versions_type_updated",
            ["resource_type", "last_updated"],
            unique=False,
        )
        batch_op.create_index(
            "ix_fhir_resource_versions_updated", ["last_updated", "resource_type"], unique=False
        )

    with op.batch_alter_table("fhir_resources", schema=None) as batch_op:
        batch_op.create_index("ix_fhir_resources_updated", ["last_updated"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("fhir_resources", schema=None) as batch_op:
        batch_op.drop_index("ix_fhir_resources_updated")

    with op.batch_alter_table("fhir_resource_versions", schema=None) as batch_op:
        batch_op.drop_index("ix_fhir_resource_versions_updated")
        batch_op.drop_index("ix_fhir_resource_versions_type_updated")

    op.drop_table("fhir_search_totals")
    with op.batch_alter_table("fhir_search_results", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fhir_search_results_created_at"))

    op.drop_table("fhir_search_results")
    with op.batch_alter_table("fhir_idx_uri", schema=None) as batch_op:
        batch_op.drop_index("ix_fhir_idx_uri_uri")
        batch_op.drop_index("ix_fhir_idx_uri_owner")

    op.drop_table("fhir_idx_uri")
    with op.batch_alter_table("fhir_idx_token", schema=None) as batch_op:
        batch_op.drop_index("ix_fhir_idx_token_system_code")
        batch_op.drop_index("ix_fhir_idx_token_owner")
        batch_op.drop_index("ix_fhir_idx_token_code")

    op.drop_table("fhir_idx_token")
    with op.batch_alter_table("fhir_idx_string", schema=None) as batch_op:
        batch_op.drop_index("ix_fhir_idx_string_owner")
        batch_op.drop_index(
            "ix_fhir_idx_string_normalized", postgresql_ops={"normalized": "text_pattern_ops"}
        )

    op.drop_table("fhir_idx_string")
    with op.batch_alter_table("fhir_idx_reference", schema=None) as batch_op:
        batch_op.drop_index("ix_fhir_idx_reference_target")
        batch_op.drop_index("ix_fhir_idx_reference_pointed")
        batch_op.drop_index("ix_fhir_idx_reference_owner")

    op.drop_table("fhir_idx_reference")
    with op.batch_alter_table("fhir_idx_quantity", schema=None) as batch_op:
        batch_op.drop_index("ix_fhir_idx_quantity_value")
        batch_op.drop_index("ix_fhir_idx_quantity_owner")
        batch_op.drop_index("ix_fhir_idx_quantity_canonical")

    op.drop_table("fhir_idx_quantity")
    with op.batch_alter_table("fhir_idx_number", schema=None) as batch_op:
        batch_op.drop_index("ix_fhir_idx_number_value")
        batch_op.drop_index("ix_fhir_idx_number_owner")

    op.drop_table("fhir_idx_number")
    with op.batch_alter_table("fhir_idx_date", schema=None) as batch_op:
        batch_op.drop_index("ix_fhir_idx_date_range")
        batch_op.drop_index("ix_fhir_idx_date_owner")

    op.drop_table("fhir_idx_date")
    with op.batch_alter_table("fhir_idx_composite", schema=None) as batch_op:
        batch_op.drop_index("ix_fhir_idx_composite_owner")
        batch_op.drop_index("ix_fhir_idx_composite_c1")

    op.drop_table("fhir_idx_composite")
