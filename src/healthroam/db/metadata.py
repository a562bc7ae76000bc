"""The one ``MetaData`` and the column types shared by every area's tables."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Integer, MetaData, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeEngine

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


def key_text(length: int) -> TypeEngine[str]:
    """A string compared byte by byte: identifiers and lookup keys, never shown in order to
    people. On PostgreSQL it has the "C" collation, whatever the database's, so that its
    indexes sort and compare with memcmp instead of the locale (index builds of a
    10-million-person registry took about twice as long under the locale; decision 0041)."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")
