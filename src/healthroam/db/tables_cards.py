"""Tables of the health card service (cards/) and its key management (keys/)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    text,
)

from healthroam.db.metadata import BigId, Document, metadata

# 密管: every key of the card hierarchy. Software keys hold their secret sealed (AES-256-GCM
# under the key-encryption key); HSM keys hold only a handle. Never deleted: old public keys
# keep verifying credentials they signed.
card_keys = Table(
    "card_keys",
    metadata,
    Column("key_id", String(8), primary_key=True),
    Column("purpose", String(16), nullable=False),  # root | issuing | trust-list | ehc-root | qr
    Column("algorithm", String(8), nullable=False),  # SM2 | ES256 | SM4
    Column("region", String(6), nullable=True),  # issuing keys: the region they sign for
    Column("version", Integer, nullable=False),
    Column("backend", String(16), nullable=False),  # software | pkcs11
    Column("public_key", LargeBinary, nullable=True),
    Column("sealed_secret", LargeBinary, nullable=True),
    Column("certificate", LargeBinary, nullable=True),  # COSE_Sign1 by the root key
    Column("valid_from", BigInteger, nullable=False),  # epoch seconds: starts signing / use
    Column("valid_until", BigInteger, nullable=True),  # stops signing (set by rotation)
    Column("publish_until", BigInteger, nullable=True),  # leaves the trust list
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_card_keys_purpose_region", "purpose", "region"),
)

# 卡管: one row per card. Electronic and temporary cards carry an EHC ID (unique among cards
# that are not cancelled: a re-issued electronic card keeps its EHC ID), physical CPU cards a
# card number.
cards = Table(
    "cards",
    metadata,
    Column("id", String(32), primary_key=True),
    Column(
        "master_person_id", BigInteger, ForeignKey("master_persons.id"), nullable=False, index=True
    ),
    Column("master_index_id", String(64), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # physical | electronic | temporary
    Column("card_no", String(32), nullable=True, unique=True),
    Column("ehc_id", String(128), nullable=True),
    Column("card_ref", LargeBinary(16), nullable=True, index=True),  # SM3(EHC ID)[:16]
    Column("id_type", String(2), nullable=False),
    Column("status", String(24), nullable=False),
    Column("status_version", Integer, nullable=False),
    Column("region", String(6), nullable=False),
    Column("issuer", String(64), nullable=False),
    Column("valid_from", DateTime(timezone=True), nullable=False),
    Column("valid_until", DateTime(timezone=True), nullable=False),
    Column("issuing_key_id", String(8), nullable=True),
    Column("ehc_root_key_id", String(8), nullable=True),
    Column("credential", Text, nullable=True),  # HR1: offline emergency credential
    # Status version the credential was signed with: older credentials of the same EHC ID
    # (a card since re-issued) are refused as superseded.
    Column("credential_version", Integer, nullable=True),
    Column("static_code", Text, nullable=True),  # EHCID:S1: static QR text
    Column("replaces", String(32), nullable=True),
    Column("replaced_by", String(32), nullable=True),
    Column("batch_id", String(64), nullable=True, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index(
        "uq_cards_live_ehc_id",
        "ehc_id",
        unique=True,
        sqlite_where=text("status != 'cancelled'"),
        postgresql_where=text("status != 'cancelled'"),
    ),
    Index("ix_cards_ehc_id", "ehc_id"),
    Index("ix_cards_status", "status"),
)

# Card history: every lifecycle transition, attributed.
card_events = Table(
    "card_events",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("card_id", String(32), ForeignKey("cards.id"), nullable=False, index=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("action", String(24), nullable=False),
    Column("from_status", String(24), nullable=True),
    Column("to_status", String(24), nullable=False),
    Column("status_version", Integer, nullable=False),
    Column("client_id", String(64), nullable=True),
    Column("institution_code", String(64), nullable=True),
    Column("end_user", String(200), nullable=True),
    Column("reason", Text, nullable=True),
)

# 用卡监控: every verification at a terminal, accepted or refused.
card_uses = Table(
    "card_uses",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("used_at", DateTime(timezone=True), nullable=False),
    Column("day", String(10), nullable=False),  # Beijing date, for daily summaries
    Column("institution_code", String(64), nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("terminal_code", String(64), nullable=False),
    Column("channel_code", String(16), nullable=False),
    Column("step_code", String(8), nullable=False),
    Column("code_kind", String(16), nullable=False),  # dynamic | static | credential | card-no
    Column("card_id", String(32), nullable=True),
    Column("master_index_id", String(64), nullable=True),
    Column("accepted", Boolean, nullable=False),
    Column("reason", String(32), nullable=True),
    Index("ix_card_uses_day_institution", "day", "institution_code"),
)

# Dynamic codes already accepted (anti-replay), shared by every server process: the primary
# key makes a second use of the same code fail whichever process sees it. ``code_hash`` is
# BLAKE2b-128 of the QR text; rows are deleted once the code has expired (``expires_at``,
# epoch seconds).
card_replays = Table(
    "card_replays",
    metadata,
    Column("code_hash", LargeBinary(16), primary_key=True),
    Column("expires_at", BigInteger, nullable=False, index=True),
)

# Bulk issuance runs: the resume point of each scope.
card_issue_runs = Table(
    "card_issue_runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("scope", String(16), nullable=False),
    Column("last_master_id", BigInteger, nullable=False),
    Column("issued", BigInteger, nullable=False),
    Column("skipped", BigInteger, nullable=False),
    Column("finished", Boolean, nullable=False),
    Column("summary", Document, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# The signed trust lists handed to terminals (the newest is served until it is refreshed).
card_trust_lists = Table(
    "card_trust_lists",
    metadata,
    Column("sequence", BigInteger, primary_key=True, autoincrement=False),
    Column("issued_at", BigInteger, nullable=False),
    Column("signed", LargeBinary, nullable=False),
    Column("key_id", String(8), nullable=False),
)
