"""FHIR store search indexes (records area), shaped like HAPI FHIR's HFJ_SPIDX_* tables.

``fhir_resources`` (current version) and ``fhir_resource_versions`` (every version) live in
``schema.py``; this module adds one typed index table per search parameter type, written in
the same transaction as the resource from ``records.search_params.extract_index_values``, plus
the stored result lists that keep ``_sort`` paging stable while others write.

Every index row names its resource by ``(resource_type, resource_id)``; open date ends are
stored as far-past / far-future instants so range tests need no NULL logic.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Double,
    Index,
    Integer,
    String,
    Table,
    Text,
    false,
    func,
    literal_column,
)

from healthroam.db.metadata import BigId, metadata
from healthroam.db.schema import fhir_resource_versions, fhir_resources


def _owner() -> list[Column[str]]:
    return [
        Column("resource_type", String(64), nullable=False),
        Column("resource_id", String(64), nullable=False),
        Column("param", String(100), nullable=False),
    ]


fhir_idx_token = Table(
    "fhir_idx_token",
    metadata,
    Column("row_id", BigId, primary_key=True, autoincrement=True),
    *_owner(),
    Column("system", String(255), nullable=True),
    Column("code", String(255), nullable=True),
    Column("text", String(255), nullable=True),  # folded display/text, for :text
    Column("type_system", String(255), nullable=True),  # Identifier.type, for :of-type
    Column("type_code", String(100), nullable=True),
    # The resource's lastUpdated, written with the row (index rows are rewritten with every
    # version): a search on one system|code reads its page in the default order (lastUpdated,
    # id) from ix_fhir_idx_token_system_code_updated instead of sorting every match (migration
    # 0007_tokenorder, decision 0039).
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Index(
        "ix_fhir_idx_token_system_code_updated",
        "resource_type",
        "param",
        "system",
        "code",
        "last_updated",
        "resource_id",
    ),
    Index("ix_fhir_idx_token_code", "resource_type", "param", "code"),
    Index("ix_fhir_idx_token_owner", "resource_type", "resource_id"),
)

fhir_idx_string = Table(
    "fhir_idx_string",
    metadata,
    Column("row_id", BigId, primary_key=True, autoincrement=True),
    *_owner(),
    Column("value", String(500), nullable=False),
    Column("normalized", String(255), nullable=False),
    Index(
        "ix_fhir_idx_string_normalized",
        "resource_type",
        "param",
        "normalized",
        postgresql_ops={"normalized": "text_pattern_ops"},
    ),
    Index("ix_fhir_idx_string_owner", "resource_type", "resource_id"),
)

fhir_idx_date = Table(
    "fhir_idx_date",
    metadata,
    Column("row_id", BigId, primary_key=True, autoincrement=True),
    *_owner(),
    Column("low", DateTime(timezone=True), nullable=False),
    Column("high", DateTime(timezone=True), nullable=False),
    # True when high - low exceeds records.repository.SHORT_SPAN (open ends included): the
    # short rows can then be sought from ``low >= start - SHORT_SPAN`` (migration 0006_datespan).
    Column("long_span", Boolean, nullable=False, server_default=false()),
    # The resource's lastUpdated, written with the row (index rows are rewritten with every
    # version): a short date window's page is then ordered from the index alone, without
    # probing each match's resource row (migration 0013_datesort, decision 0059).
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Index("ix_fhir_idx_date_range", "resource_type", "param", "low", "high"),
    # Its (resource_type, param, long_span, low) prefix seeks a window's short and long rows
    # (decision 0031); the trailing columns make that scan index-only (decision 0059).
    Index(
        "ix_fhir_idx_date_span_updated",
        "resource_type",
        "param",
        "long_span",
        "low",
        "high",
        "last_updated",
        "resource_id",
    ),
    Index("ix_fhir_idx_date_owner", "resource_type", "resource_id"),
)

fhir_idx_reference = Table(
    "fhir_idx_reference",
    metadata,
    Column("row_id", BigId, primary_key=True, autoincrement=True),
    *_owner(),
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("url", String(500), nullable=True),
    Column("version", String(64), nullable=True),
    Column("identifier_system", String(255), nullable=True),
    Column("identifier_value", String(255), nullable=True),
    Index("ix_fhir_idx_reference_target", "resource_type", "param", "target_type", "target_id"),
    # Reverse lookups (_has, _revinclude, $everything): who points at this resource.
    Index("ix_fhir_idx_reference_pointed", "target_type", "target_id"),
    Index("ix_fhir_idx_reference_owner", "resource_type", "resource_id"),
)

fhir_idx_quantity = Table(
    "fhir_idx_quantity",
    metadata,
    Column("row_id", BigId, primary_key=True, autoincrement=True),
    *_owner(),
    Column("low", Double, nullable=True),
    Column("high", Double, nullable=True),
    Column("system", String(255), nullable=True),
    Column("code", String(100), nullable=True),
    Column("unit", String(100), nullable=True),
    Column("canonical_low", Double, nullable=True),
    Column("canonical_high", Double, nullable=True),
    Column("canonical_code", String(100), nullable=True),
    Index("ix_fhir_idx_quantity_value", "resource_type", "param", "code", "low"),
    Index("ix_fhir_idx_quantity_canonical", "resource_type", "param", "canonical_code"),
    Index("ix_fhir_idx_quantity_owner", "resource_type", "resource_id"),
)

fhir_idx_uri = Table(
    "fhir_idx_uri",
    metadata,
    Column("row_id", BigId, primary_key=True, autoincrement=True),
    *_owner(),
    Column("uri", String(500), nullable=False),
    Index("ix_fhir_idx_uri_uri", "resource_type", "param", "uri"),
    Index("ix_fhir_idx_uri_owner", "resource_type", "resource_id"),
)

fhir_idx_number = Table(
    "fhir_idx_number",
    metadata,
    Column("row_id", BigId, primary_key=True, autoincrement=True),
    *_owner(),
    Column("value", Double, nullable=False),
    Index("ix_fhir_idx_number_value", "resource_type", "param", "value"),
    Index("ix_fhir_idx_number_owner", "resource_type", "resource_id"),
)

# Composite parameters (R4: token$token, token$quantity, token$number$number, token$date,
# token$string, reference$token): the components of one row come from the same element
# (e.g. the same Observation.component), which separate index rows could not tell.
fhir_idx_composite = Table(
    "fhir_idx_composite",
    metadata,
    Column("row_id", BigId, primary_key=True, autoincrement=True),
    *_owner(),
    Column("c1_system", String(255), nullable=True),  # token system, or reference type
    Column("c1_code", String(255), nullable=True),  # token code, or reference id
    Column("c2_system", String(255), nullable=True),  # token / quantity system
    Column("c2_code", String(255), nullable=True),  # token / quantity code
    Column("c2_low", Double, nullable=True),  # quantity / number
    Column("c2_high", Double, nullable=True),
    Column("c2_date_low", DateTime(timezone=True), nullable=True),
    Column("c2_date_high", DateTime(timezone=True), nullable=True),
    Column("c2_string", String(255), nullable=True),
    Column("c3_low", Double, nullable=True),
    Column("c3_high", Double, nullable=True),
    Index("ix_fhir_idx_composite_c1", "resource_type", "param", "c1_code", "c1_system"),
    Index("ix_fhir_idx_composite_owner", "resource_type", "resource_id"),
)

# _text (the narrative) and _content (the whole resource): one row each per resource, the body
# being the terms of records/fulltext.py joined by spaces. The full-text index is the backend's
# own (decision 0029): on PostgreSQL a GIN index on to_tsvector('simple', body); on SQLite an
# FTS5 table ``fhir_idx_text_fts`` over this one (external content, kept by triggers in the
# same transaction; created by migration 0006_searchgaps, not part of this metadata).
fhir_idx_text = Table(
    "fhir_idx_text",
    metadata,
    Column("row_id", BigId, primary_key=True, autoincrement=True),
    *_owner(),
    Column("body", Text, nullable=False),
    Index("ix_fhir_idx_text_owner", "resource_type", "resource_id"),
)
Index(
    "ix_fhir_idx_text_tsv",
    func.to_tsvector(literal_column("'simple'::regconfig"), fhir_idx_text.c.body),
    postgresql_using="gin",
).ddl_if(dialect="postgresql")
FTS5_TABLE = "fhir_idx_text_fts"

# Result lists of sorted searches, so later pages are read from the list the first page made.
fhir_search_results = Table(
    "fhir_search_results",
    metadata,
    Column("search_id", String(36), primary_key=True),
    Column("position", Integer, primary_key=True, autoincrement=False),
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
)

fhir_search_totals = Table(
    "fhir_search_totals",
    metadata,
    Column("search_id", String(36), primary_key=True),
    Column("total", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# History and keyset paging over the existing resource tables.
Index(
    "ix_fhir_resource_versions_updated",
    fhir_resource_versions.c.last_updated,
    fhir_resource_versions.c.resource_type,
)
Index(
    "ix_fhir_resource_versions_type_updated",
    fhir_resource_versions.c.resource_type,
    fhir_resource_versions.c.last_updated,
)
Index("ix_fhir_resources_updated", fhir_resources.c.last_updated)

INDEX_TABLES = (
    fhir_idx_token,
    fhir_idx_string,
    fhir_idx_date,
    fhir_idx_reference,
    fhir_idx_quantity,
    fhir_idx_uri,
    fhir_idx_number,
    fhir_idx_composite,
    fhir_idx_text,
)
# The store's tables whose planner statistics are kept fresh (db/statistics.py), the first
# deciding when: its growth stands for the others'.
STORE_TABLES = (fhir_resources, fhir_resource_versions, *INDEX_TABLES)
