"""Tables of the HL7 v2 gateway (exchange/hl7/): bound senders and the message log."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
)

from healthroam.db.metadata import BigId, metadata

# An HL7 sender (MSH-3 namespace id, MSH-4 namespace id) bound to a registered institution.
# Messages from a sender that is not here, or not active, are refused (AR) and write nothing.
hl7_senders = Table(
    "hl7_senders",
    metadata,
    Column("application", String(180), primary_key=True),
    Column("facility", String(180), primary_key=True),
    Column(
        "institution_code",
        String(64),
        ForeignKey("institutions.code"),
        nullable=False,
        index=True,
    ),
    Column("active", Boolean, nullable=False),
    Column("description", String(200), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Every accepted message (MSA-1 AA), committed in the same transaction as the data it wrote.
# The primary key is the idempotency key: a repeated MSH-10 from the same sender finds its row
# and is answered with the stored ACK, byte for byte. The message itself is not kept (its data
# lives in the FHIR store); its SHA-256 tells a true repeat from a reused control id.
hl7_messages = Table(
    "hl7_messages",
    metadata,
    Column("application", String(180), primary_key=True),
    Column("facility", String(180), primary_key=True),
    Column("control_id", String(199), primary_key=True),
    Column("received_at", DateTime(timezone=True), nullable=False, index=True),
    Column("institution_code", String(64), nullable=False),
    Column("message_type", String(3), nullable=False),
    Column("trigger_event", String(3), nullable=False),
    Column("version", String(8), nullable=False),
    Column("charset", String(32), nullable=False),
    Column("size", Integer, nullable=False),
    Column("digest", LargeBinary(32), nullable=False),
    Column("written", Integer, nullable=False),  # resources the handler wrote
    Column("ack_code", String(2), nullable=False),
    Column("ack", LargeBinary, nullable=False),  # the ACK as sent (encoded, without framing)
)

# Refused messages (AE/AR): a log for operators, not a final answer. A corrected message sent
# again with the same control id is processed afresh.
hl7_rejections = Table(
    "hl7_rejections",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("received_at", DateTime(timezone=True), nullable=False, index=True),
    Column("application", String(180), nullable=True),
    Column("facility", String(180), nullable=True),
    Column("control_id", String(199), nullable=True),
    Column("institution_code", String(64), nullable=True),
    Column("message_type", String(3), nullable=True),
    Column("trigger_event", String(3), nullable=True),
    Column("version", String(8), nullable=True),
    Column("ack_code", String(2), nullable=False),
    Column("error_code", String(8), nullable=False),
    Column("location", String(64), nullable=True),
    Column("detail", Text, nullable=False),
    Column("peer", String(64), nullable=True),
)
