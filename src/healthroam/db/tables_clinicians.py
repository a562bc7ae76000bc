"""Tables of clinician accounts (clinicians/) and their sign-in sessions."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, DateTime, ForeignKey, Integer, LargeBinary, String, Table

from healthroam.db.metadata import Document, metadata

# One row per clinician; the password only as an Argon2id hash. Never deleted: audit records
# keep naming disabled accounts.
clinicians = Table(
    "clinicians",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("display_name", String(200), nullable=False),
    Column(
        "institution_code",
        String(64),
        ForeignKey("institutions.code"),
        nullable=False,
        index=True,
    ),
    Column("password_hash", String(200), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("failed_logins", Integer, nullable=False),  # wrong passwords in a row
    Column("locked_until", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("disabled_at", DateTime(timezone=True), nullable=True),
)

# Sessions of the clinician page. The cookie holds a random token; only its SHA-256 is stored,
# so a copy of this table opens no session.
clinician_sessions = Table(
    "clinician_sessions",
    metadata,
    Column("token_hash", LargeBinary(32), primary_key=True),
    Column(
        "username",
        String(64),
        ForeignKey("clinicians.username"),
        nullable=False,
        index=True,
    ),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)

# Failed sign-ins per source address, shared by every server process (decision 0052): the
# SHA-256 of the address (not the address itself), the times of its latest failures (epoch
# seconds, at most the per-address limit of them) and when the newest leaves the window; rows
# past that are deleted.
clinician_login_failures = Table(
    "clinician_login_failures",
    metadata,
    Column("address_hash", LargeBinary(32), primary_key=True),
    Column("failures", Document, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)
