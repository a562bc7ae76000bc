"""The one ``MetaData`` and the column types shared by every area's tables."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Integer, MetaData
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# JSON on SQLite, JSONB on PostgreSQL.
Document = JSON().with_variant(JSONB(), "postgresql")
# 64-bit autoincrement keys that SQLite also auto-increments (SQLite only does INTEGER PKs).
BigId = BigInteger().with_variant(Integer(), "sqlite")
