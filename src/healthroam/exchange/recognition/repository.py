"""SQL of result recognition: alerts, their outcomes and the counts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, case, func, select, true, update

from healthroam.db.tables_recognition import recognition_alerts
from healthroam.exchange.recognition.model import Finding, local_day

ALERTS = recognition_alerts.c


@dataclass(frozen=True, slots=True)
class AlertRow:
    id: int
    order_id: str
    test_id: str
    ordering_institution: str
    result_type: str
    result_id: str
    result_institution: str | None
    result_date: date
    recognised: bool
    alerted_at: datetime
    outcome: str | None

    @property
    def result_reference(self) -> str:
        return f"{self.result_type}/{self.result_id}"


@dataclass(frozen=True, slots=True)
class CountRow:
    test_id: str
    institution: str | None
    orders: int  # orders that got at least one alert
    alerts: int
    recognised: int  # alerts whose result was recognised
    avoided: int  # orders not repeated (one per order, attributed to one result)
    declined: int

    def as_dict(self) -> dict[str, Any]:
        """The row as GET /recognition/counts and `healthroam recognition counts --json` give
        it."""
        return {
            "test": self.test_id,
            "institution": self.institution,
            "orders": self.orders,
            "alerts": self.alerts,
            "recognised": self.recognised,
            "avoided": self.avoided,
            "declined": self.declined,
        }


def _alert(row: Any) -> AlertRow:
    return AlertRow(
        row.id,
        row.order_id,
        row.test_id,
        row.ordering_institution,
        row.result_type,
        row.result_id,
        row.result_institution,
        row.result_date,
        bool(row.recognised),
        row.alerted_at,
        row.outcome,
    )


class RecognitionRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def record(
        self,
        order_id: str,
        ordering_institution: str,
        findings: Sequence[Finding],
        channel: str,
        now: datetime,
    ) -> int:
        """Store the alerts of an order; an (order, result) pair already stored is kept as it
        was (the same order may be seen by the FHIR listener and by the HL7 handler)."""
        if not findings:
            return 0
        known = {
            (row.result_type, row.result_id)
            for row in self.conn.execute(
                select(ALERTS.result_type, ALERTS.result_id).where(ALERTS.order_id == order_id)
            )
        }
        rows = [
            {
                "order_id": order_id,
                "test_id": f.test.id,
                "loinc": f.loinc,
                "ordering_institution": ordering_institution,
                "result_type": f.resource_type,
                "result_id": f.resource_id,
                "result_institution": f.institution,
                "result_date": local_day(f.taken),
                "recognised": f.decision.recognised,
                "reason": f.decision.reason,
                "channel": channel,
                "alerted_at": now,
            }
            for f in findings
            if (f.resource_type, f.resource_id) not in known
        ]
        if rows:
            self.conn.execute(recognition_alerts.insert(), rows)
        if known and channel == "hl7":
            # The FHIR listener saw the order first (the HL7 handler writes through the record
            # service): it arrived over HL7 all the same.
            self.conn.execute(
                update(recognition_alerts)
                .where(ALERTS.order_id == order_id, ALERTS.outcome.is_(None))
                .values(channel=channel)
            )
        return len(rows)

    def channels_of(self, order_id: str) -> set[str]:
        rows = self.conn.execute(
            select(ALERTS.channel).where(ALERTS.order_id == order_id).distinct()
        )
        return {row.channel for row in rows}

    def alerts_of(self, order_id: str) -> list[AlertRow]:
        rows = self.conn.execute(
            select(recognition_alerts)
            .where(ALERTS.order_id == order_id)
            .order_by(ALERTS.recognised.desc(), ALERTS.result_date.desc(), ALERTS.id)
        )
        return [_alert(r) for r in rows]

    def set_outcome(self, alert_id: int, outcome: str, source: str, now: datetime) -> None:
        self.conn.execute(
            update(recognition_alerts)
            .where(ALERTS.id == alert_id)
            .values(outcome=outcome, outcome_source=source, outcome_at=now)
        )

    def counts(self, since: datetime, until: datetime | None, by: str) -> list[CountRow]:
        """Per test and institution (``by`` ``ordering`` or ``result``), alerts given from
        ``since`` (inclusive) to ``until`` (exclusive)."""
        institution = ALERTS.ordering_institution if by == "ordering" else ALERTS.result_institution
        where = [ALERTS.alerted_at >= since]
        if until is not None:
            where.append(ALERTS.alerted_at < until)
        query = (
            select(
                ALERTS.test_id,
                institution.label("institution"),
                func.count(func.distinct(ALERTS.order_id)).label("orders"),
                func.count().label("alerts"),
                func.sum(case((ALERTS.recognised == true(), 1), else_=0)).label("recognised"),
                func.sum(case((ALERTS.outcome == "avoided", 1), else_=0)).label("avoided"),
                func.sum(case((ALERTS.outcome == "declined", 1), else_=0)).label("declined"),
            )
            .where(*where)
            .group_by(ALERTS.test_id, institution)
            .order_by(ALERTS.test_id, institution)
        )
        return [
            CountRow(
                row.test_id,
                row.institution,
                int(row.orders),
                int(row.alerts),
                int(row.recognised or 0),
                int(row.avoided or 0),
                int(row.declined or 0),
            )
            for row in self.conn.execute(query)
        ]
