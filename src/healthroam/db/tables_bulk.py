"""FHIR Bulk Data export jobs (records area): one row per `$export` kick-off."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, DateTime, Index, String, Table, Text

from healthroam.db.metadata import Document, metadata

bulk_export_jobs = Table(
    "bulk_export_jobs",
    metadata,
    Column("id", String(36), primary_key=True),
    # Who asked: the job runs later, in a worker, with exactly the caller's scopes.
    Column("client_id", String(100), nullable=False),
    Column("institution_code", String(64), nullable=False),
    Column("scopes", Text, nullable=False),
    Column("purpose_of_use", String(20), nullable=False),
    Column("end_user", String(200), nullable=True),
    # A care provider exports only what it wrote itself; an agency all its scopes allow.
    Column("own_only", Boolean, nullable=False),
    Column("level", String(16), nullable=False),  # system | patient | group
    Column("group_id", String(64), nullable=True),
    Column("types", Text, nullable=True),  # comma-separated _type, or NULL for all readable
    Column("since", DateTime(timezone=True), nullable=True),
    Column("request_url", Text, nullable=False),
    # accepted -> running -> completed | failed; cancelled and expired at any time
    Column("status", String(16), nullable=False),
    Column("progress", String(200), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # The claim of the runner that holds a running job (decision 0052): a token checked at
    # every write of progress and completion, and the name of the claim's file directory.
    Column("owner", String(32), nullable=True),
    Column("heartbeat_at", DateTime(timezone=True), nullable=True),
    Column("transaction_time", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("manifest", Document, nullable=True),
    Column("error", Text, nullable=True),
    Index("ix_bulk_export_jobs_status", "status", "created_at"),
)
