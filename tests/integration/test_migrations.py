"""The migrations build exactly the schema the code declares (no drift between the two)."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from healthroam.db.engine import create_database_engine
from healthroam.db.schema import metadata

# Objects the migrations create outside the declared tables on purpose: SQLite's full-text
# table and its shadow tables, and PostgreSQL's expression index over the text index's
# tsvector (decision 0029).
UNDECLARED = ("fhir_idx_text_fts", "ix_fhir_idx_text_tsv")


def _name(diff: Any) -> str:
    subject = diff[1] if isinstance(diff, tuple) and len(diff) > 1 else diff
    return str(getattr(subject, "name", subject))


def test_the_migrated_schema_matches_the_declared_tables(database_url: str) -> None:
    engine = create_database_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diffs = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    drift = [d for d in diffs if not _name(d).startswith(UNDECLARED)]
    assert drift == []
