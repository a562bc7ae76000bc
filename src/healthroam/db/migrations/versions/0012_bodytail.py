"""bodytail: each current resource's JSON text beside its document (decision 0055)

Revision ID: 0012_bodytail
Revises: 0004_records
Create Date: 2026-12-01 03:00:00

Adds ``fhir_resources.body_tail``, a generated column: the stored document's JSON text without
``meta`` and without its opening brace, i.e. what the read paths computed with
``substr((content - 'meta')::text, 2)`` (schema.StoredBodyTail). Reads, search pages and
``$everything`` serve it instead of having PostgreSQL write every ``jsonb`` as text again.

PostgreSQL: a ``STORED`` column, so ``ALTER TABLE`` rewrites ``fhir_resources`` under an
``ACCESS EXCLUSIVE`` lock and computes the text of every row (with the rebuild of its
indexes): 58 s for half a million rows on the shared 2-core bench host at load 20, about 2
minutes per million (decision 0055); plan it as downtime for a big store, and run
``VACUUM (ANALYZE) fhir_resources`` after it (the rewritten rows' hint bits, the visibility
map). SQLite: a ``VIRTUAL`` column (computed when read, as the read
paths did; SQLite's ``ALTER TABLE`` adds no stored generated column), no rewrite.
"""

from __future__ import annotations

from alembic import op

revision = "0012_bodytail"
down_revision = "0004_records"
branch_labels = ("bodytail",)
depends_on = None

# The same expressions as schema.StoredBodyTail's (a migration keeps its own copy).
_POSTGRESQL = (
    "CASE WHEN jsonb_typeof(content) = 'object' THEN substr(("
    "CASE WHEN content ? 'meta' THEN content - 'meta' ELSE content END)::text, 2) END"
)
_SQLITE = (
    "CASE WHEN json_type(content) = 'object' THEN substr(json_remove(content, '$.meta'), 2) END"
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE fhir_resources ADD COLUMN body_tail TEXT "
            f"GENERATED ALWAYS AS ({_POSTGRESQL}) STORED"
        )
    else:
        op.execute(
            "ALTER TABLE fhir_resources ADD COLUMN body_tail TEXT "
            f"GENERATED ALWAYS AS ({_SQLITE}) VIRTUAL"
        )


def downgrade() -> None:
    op.execute("ALTER TABLE fhir_resources DROP COLUMN body_tail")
