"""keycollation: the registry's lookup keys compared byte by byte on PostgreSQL (decision 0041)

Revision ID: 0008_keycollation
Revises: 0007_initial_load
Create Date: 2026-11-30 15:00:00

Blocking keys and source keys (identifier system, local id) are only ever compared with
values, never ordered for people: with the "C" collation their indexes sort and compare with
memcmp instead of the database locale. Rewrites the two tables' indexes on PostgreSQL (on a
populated registry, minutes per ten million records); nothing on SQLite, whose default
comparison is already binary.
"""

from __future__ import annotations

from alembic import op

revision = "0008_keycollation"
down_revision = "0007_initial_load"
branch_labels = None
depends_on = None


def _collate(collation: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"ALTER TABLE mpi_blocking_keys ALTER COLUMN key TYPE varchar(255) COLLATE {collation}"
    )
    op.execute(
        f"ALTER TABLE source_records"
        f" ALTER COLUMN id_system TYPE varchar(200) COLLATE {collation},"
        f" ALTER COLUMN local_id TYPE varchar(200) COLLATE {collation}"
    )


def upgrade() -> None:
    _collate('"C"')


def downgrade() -> None:
    _collate('"default"')
