"""Tables of cross-institution care (exchange/care/): care relationships and access exceptions."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, DateTime, Index, String, Table, Text

from healthroam.db.metadata import BigId, metadata
from healthroam.db.tables_registry import master_persons

# Who is caring for whom: a card check-in or an active encounter at an institution opens a
# relationship with the master person until ``until``; a relationship gives that institution
# the resident's record from every institution.
care_relationships = Table(
    "care_relationships",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("master_index_id", String(64), nullable=False),
    Column("institution_code", String(64), nullable=False),
    Column("since", DateTime(timezone=True), nullable=False),
    Column("until", DateTime(timezone=True), nullable=False),
    Column("reason", String(16), nullable=False),  # check-in | encounter
    Column("encounter_ref", String(140), nullable=True),  # Encounter/<id>
    Column("card_id", String(32), nullable=True),
    Column("terminal_code", String(64), nullable=True),
    Column("client_id", String(64), nullable=True),
    Index("ix_care_relationships_lookup", "institution_code", "master_index_id", "until"),
    Index("ix_care_relationships_person", "master_index_id"),
)

# Break-the-glass accesses, kept for a privacy officer to review and close.
access_exceptions = Table(
    "access_exceptions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("institution_code", String(64), nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("end_user", String(200), nullable=True),
    Column("master_index_id", String(64), nullable=False),
    Column("access", String(32), nullable=False),  # summary | everything | everything-patient
    Column("reason", Text, nullable=False),
    Column("had_relationship", Boolean, nullable=False),
    Column("consent_overridden", Boolean, nullable=False),
    Column("status", String(16), nullable=False),  # open | closed
    Column("review_outcome", String(16), nullable=True),  # justified | unjustified
    Column("review_note", Text, nullable=True),
    Column("reviewed_by", String(200), nullable=True),
    Column("reviewed_at", DateTime(timezone=True), nullable=True),
    Index("ix_access_exceptions_status", "status", "occurred_at"),
    Index("ix_access_exceptions_person", "master_index_id"),
)

# Whole-record reads look up a person's merged-away predecessors (their golden Patient ids may
# be the subject of check-in Encounters) on every read: without this index that is a scan of
# the whole master person table.
Index("ix_master_persons_merged_into", master_persons.c.merged_into)
