"""Tables of the population registry and master patient index (registry/)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from healthroam.db.metadata import BigId, Document, key_text, metadata

# 主索引: one row per resident, never deleted; a merged-away row points at its survivor.
master_persons = Table(
    "master_persons",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("master_index_id", String(64), nullable=False, unique=True),
    Column("status", String(16), nullable=False),  # active | merged
    Column("merged_into", BigInteger, ForeignKey("master_persons.id"), nullable=True),
    Column("golden", Document, nullable=False),
    # Golden values that PDQm searches on, beside the document.
    Column("name", String(200), nullable=True, index=True),
    Column("birth_date", String(10), nullable=True, index=True),
    Column("sex", String(1), nullable=True),
    Column("version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# A person as one source knows them, keyed by (institution, identifier system, local id).
source_records = Table(
    "source_records",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("institution_code", String(64), ForeignKey("institutions.code"), nullable=False),
    Column("id_system", key_text(200), nullable=False),
    Column("local_id", key_text(200), nullable=False),
    Column("master_id", BigInteger, ForeignKey("master_persons.id"), nullable=False, index=True),
    Column("link_type", String(16), nullable=False),
    Column("data", Document, nullable=False),  # the record as sent (normalised by the source)
    Column("normalized", Document, nullable=False),  # NormalizedRecord, for scoring
    Column("content_hash", String(64), nullable=False),
    Column("fhir_patient_id", String(64), nullable=True, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("institution_code", "id_system", "local_id", name="uq_source_records_key"),
)

# Blocking keys (see registry/blocking.py): the real-time matcher's index.
mpi_blocking_keys = Table(
    "mpi_blocking_keys",
    metadata,
    Column("key", key_text(255), primary_key=True),
    Column(
        "source_id",
        BigInteger,
        ForeignKey("source_records.id", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    ),
)

# How often each normalised name occurs, for term-frequency adjustment; name '' holds the total.
mpi_name_counts = Table(
    "mpi_name_counts",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("count", BigInteger, nullable=False),
)

# Possible matches waiting for a steward.
mpi_reviews = Table(
    "mpi_reviews",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("source_id", BigInteger, ForeignKey("source_records.id"), nullable=False, index=True),
    Column("candidate_source_id", BigInteger, ForeignKey("source_records.id"), nullable=False),
    Column("weight", Float, nullable=False),
    Column("details", Document, nullable=False),
    Column("status", String(16), nullable=False, index=True),  # open | same | different | stale
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    Column("decided_by", String(200), nullable=True),
    Column("decided_agency", String(64), nullable=True),
    Column("reason", Text, nullable=True),
    UniqueConstraint("source_id", "candidate_source_id", name="uq_mpi_reviews_pair"),
)

# Steward decisions on pairs of source records (low id first); 'different' is never undone by
# the matcher.
mpi_pair_decisions = Table(
    "mpi_pair_decisions",
    metadata,
    Column("low_source_id", BigInteger, ForeignKey("source_records.id"), primary_key=True),
    Column("high_source_id", BigInteger, ForeignKey("source_records.id"), primary_key=True),
    Column("decision", String(16), nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False),
    Column("decided_by", String(200), nullable=True),
    Column("decided_agency", String(64), nullable=True),
    Index("ix_mpi_pair_decisions_high", "high_source_id"),
)

# History and notification log: every link, unlink, merge, split, golden-record change.
# ``seq`` is taken when the event is written, so concurrent transactions can commit their
# events out of ``seq`` order; ``position`` is the feed's order, handed out after commit (or
# by a bulk load inside its own transaction) under the lock of ``mpi_event_head``, so a reader
# polling ``position > after`` never steps past an event that commits later (decision 0044).
mpi_events = Table(
    "mpi_events",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("position", BigInteger, nullable=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("master_id", BigInteger, ForeignKey("master_persons.id"), nullable=False, index=True),
    Column("other_master_id", BigInteger, ForeignKey("master_persons.id"), nullable=True),
    Column("source_id", BigInteger, ForeignKey("source_records.id"), nullable=True),
    Column("actor_institution", String(64), nullable=True),
    Column("actor_user", String(200), nullable=True),
    Column("actor_client", String(64), nullable=True),
    Column("reason", Text, nullable=True),
    Column("institutions", Document, nullable=False),  # institutions holding affected records
    Column("detail", Document, nullable=True),
    Index("ux_mpi_events_position", "position", unique=True),
    Index(
        "ix_mpi_events_unpositioned",
        "seq",
        postgresql_where=text("position IS NULL"),
        sqlite_where=text("position IS NULL"),
    ),
)

# One row: the last position handed out. Whoever hands out positions locks it until commit,
# so positions become visible in the order they were given.
mpi_event_head = Table(
    "mpi_event_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("position", BigInteger, nullable=False),
)

# Who is told about an event: each institution holding a record of an affected person.
mpi_event_recipients = Table(
    "mpi_event_recipients",
    metadata,
    Column("institution_code", String(64), primary_key=True),
    Column("seq", BigInteger, ForeignKey("mpi_events.seq"), primary_key=True),
)

# Resumable bulk loads: how far each file got.
registry_loads = Table(
    "registry_loads",
    metadata,
    Column("file_hash", String(64), primary_key=True),
    Column("source", String(64), primary_key=True),
    Column("rows_done", BigInteger, nullable=False),
    Column("finished", Integer, nullable=False),
    Column("summary", Document, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# An initial load's rows that wait for the matcher until its indexes are rebuilt
# (registry/initial_load.py). Written with the chunk that read them, deleted once matched.
registry_load_deferred = Table(
    "registry_load_deferred",
    metadata,
    Column("file_hash", String(64), primary_key=True),
    Column("source", String(64), primary_key=True),
    Column("row_number", BigInteger, primary_key=True),
    Column("local_id", String(200), nullable=True),
    Column("id_system", String(200), nullable=False),
    Column("record_data", Text, nullable=False),  # the mapped record, as JSON text
    Column("normalized", Text, nullable=False),  # its NormalizedRecord, as JSON text
)

# An initial load's name counts, chunk by chunk (registry/initial_load.py): each chunk appends
# its names here with COPY (no index to maintain) instead of upserting them into
# mpi_name_counts; the rebuild adds them up into mpi_name_counts once (decision 0056).
registry_load_names = Table(
    "registry_load_names",
    metadata,
    Column("name", String(200), nullable=False),
    Column("count", BigInteger, nullable=False),
)
