"""Tables of result recognition (exchange/recognition): the duplicate-test alerts given on
orders, and what became of each order, for the avoided-duplicate indicators.

No personal data: an alert names the order and the result by resource id, the test, the two
institutions and dates; who the patient is stays in the FHIR store.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Date, DateTime, Index, String, Table, UniqueConstraint

from healthroam.db.metadata import BigId, metadata

# One row per (order, equivalent valid result) found when the order arrived.
recognition_alerts = Table(
    "recognition_alerts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("order_id", String(64), nullable=False),  # ServiceRequest id
    Column("test_id", String(64), nullable=False),  # the recognition table's test id
    Column("loinc", String(32), nullable=False),  # the result's LOINC code
    Column("ordering_institution", String(64), nullable=False),
    Column("result_type", String(64), nullable=False),  # Observation | DiagnosticReport
    Column("result_id", String(64), nullable=False),
    Column("result_institution", String(64), nullable=True),
    Column("result_date", Date, nullable=False),  # the day the result was taken (Beijing time)
    Column("recognised", Boolean, nullable=False),
    Column("reason", String(32), nullable=False),
    Column("channel", String(8), nullable=False),  # fhir | hl7
    Column("alerted_at", DateTime(timezone=True), nullable=False),
    # avoided (the order was not repeated) | declined (repeated on purpose); NULL: unknown yet
    Column("outcome", String(16), nullable=True),
    Column("outcome_source", String(32), nullable=True),  # revoked | completed | acknowledged
    Column("outcome_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("order_id", "result_type", "result_id", name="uq_recognition_alerts_pair"),
    Index("ix_recognition_alerts_alerted_at", "alerted_at"),
)
