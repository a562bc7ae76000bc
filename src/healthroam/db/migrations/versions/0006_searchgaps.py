"""searchgaps: full-text index for _text and _content (decision 0029)

Revision ID: 0006_searchgaps
Revises: 0004_records
Create Date: 2026-12-01 10:00:00

``fhir_idx_text`` holds one row per resource for ``_content`` and one for ``_text`` (when it has
a narrative). PostgreSQL indexes it with GIN on ``to_tsvector('simple', body)``; SQLite with an
FTS5 table over it (external content, triggers keep it in step in the writer's transaction).
Without FTS5 in the SQLite build, no FTS5 table is made and searches fall back to ``LIKE`` on
the body (decision 0029). Existing resources are indexed here.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006_searchgaps"
down_revision = "0004_records"
branch_labels = ("searchgaps",)
depends_on = None

_BATCH = 1000


def _has_fts5(conn: sa.Connection) -> bool:
    options = {row[0] for row in conn.exec_driver_sql("PRAGMA compile_options")}
    return "ENABLE_FTS5" in options


def upgrade() -> None:
    op.create_table(
        "fhir_idx_text",
        sa.Column(
            "row_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("row_id", name=op.f("pk_fhir_idx_text")),
    )
    op.create_index(
        "ix_fhir_idx_text_owner", "fhir_idx_text", ["resource_type", "resource_id"], unique=False
    )
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        op.execute(
            "CREATE INDEX ix_fhir_idx_text_tsv ON fhir_idx_text "
            "USING gin (to_tsvector('simple'::regconfig, body))"
        )
    elif _has_fts5(conn):
        op.execute(
            "CREATE VIRTUAL TABLE fhir_idx_text_fts USING "
            "fts5(body, content='fhir_idx_text', content_rowid='row_id')"
        )
        op.execute(
            "CREATE TRIGGER fhir_idx_text_ai AFTER INSERT ON fhir_idx_text BEGIN "
            "INSERT INTO fhir_idx_text_fts(rowid, body) VALUES (new.row_id, new.body); END"
        )
        op.execute(
            "CREATE TRIGGER fhir_idx_text_ad AFTER DELETE ON fhir_idx_text BEGIN "
            "INSERT INTO fhir_idx_text_fts(fhir_idx_text_fts, rowid, body) "
            "VALUES ('delete', old.row_id, old.body); END"
        )
        op.execute(
            "CREATE TRIGGER fhir_idx_text_au AFTER UPDATE ON fhir_idx_text BEGIN "
            "INSERT INTO fhir_idx_text_fts(fhir_idx_text_fts, rowid, body) "
            "VALUES ('delete', old.row_id, old.body); "
            "INSERT INTO fhir_idx_text_fts(rowid, body) VALUES (new.row_id, new.body); END"
        )
    _index_existing(conn)


def _index_existing(conn: sa.Connection) -> None:
    """The text rows of every stored (not deleted) resource, a batch at a time."""
    from healthroam.records.fulltext import NO_NARRATIVE, index_bodies

    resources = sa.table(
        "fhir_resources",
        sa.column("resource_type", sa.String()),
        sa.column("id", sa.String()),
        sa.column("deleted", sa.Boolean()),
        sa.column("content", sa.JSON()),
    )
    target = sa.table(
        "fhir_idx_text",
        sa.column("resource_type", sa.String()),
        sa.column("resource_id", sa.String()),
        sa.column("param", sa.String()),
        sa.column("body", sa.Text()),
    )
    r = resources.c
    after: tuple[str, str] | None = None
    while True:
        query = sa.select(r.resource_type, r.id, r.content).where(r.deleted == sa.false())
        if after is not None:
            query = query.where(sa.tuple_(r.resource_type, r.id) > sa.tuple_(*after))
        batch = conn.execute(query.order_by(r.resource_type, r.id).limit(_BATCH)).all()
        if not batch:
            return
        rows: list[dict[str, Any]] = []
        for rtype, rid, content in batch:
            doc = json.loads(content) if isinstance(content, str) else content
            if not isinstance(doc, dict):
                continue
            for param, body in index_bodies(doc, rtype not in NO_NARRATIVE):
                rows.append(
                    {"resource_type": rtype, "resource_id": rid, "param": param, "body": body}
                )
        if rows:
            conn.execute(sa.insert(target), rows)
        after = (batch[-1][0], batch[-1][1])


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS fhir_idx_text_ai")
        op.execute("DROP TRIGGER IF EXISTS fhir_idx_text_ad")
        op.execute("DROP TRIGGER IF EXISTS fhir_idx_text_au")
        op.execute("DROP TABLE IF EXISTS fhir_idx_text_fts")
    else:
        op.execute("DROP INDEX IF EXISTS ix_fhir_idx_text_tsv")
    op.drop_index("ix_fhir_idx_text_owner", table_name="fhir_idx_text")
    op.drop_table("fhir_idx_text")
