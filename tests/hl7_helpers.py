"""HL7 v2 test helpers: sample messages, and a way to apply a message inside a real transaction
of the real platform, as the transport does."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hl7
from sqlalchemy import Connection

from healthroam.bootstrap import Platform
from healthroam.exchange.hl7.contract import Handled, MessageContext, Note, Sender
from healthroam.exchange.hl7.handlers import build_dispatcher
from healthroam.records.model import StoredResource
from healthroam.records.repository import ResourceRepository
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet

SAMPLES = Path(__file__).resolve().parent / "data" / "hl7"
HOSPITAL = "H001"


def sample(name: str) -> str:
    """A sample message with HL7 segment terminators (the files use newlines)."""
    return (SAMPLES / name).read_text(encoding="utf-8").strip().replace("\n", "\r")


class Gateway:
    """Applies messages like the transport: parse, one transaction, the dispatcher inside."""

    def __init__(self, platform: Platform, institution: str = HOSPITAL) -> None:
        self.platform, self.institution = platform, institution
        self.alerts: list[dict[str, Any]] = []
        self.scopes = "system/*.cruds"
        self.handler = build_dispatcher(
            platform.records, platform.registry, order_alerts=self._alert
        )

    def _alert(
        self, conn: Connection, context: MessageContext, request: dict[str, Any]
    ) -> list[Note]:
        self.alerts.append(request)
        return [Note(f"checked order {request['id']}")]

    def send(self, text: str) -> Handled:
        return self.send_parsed(hl7.parse(text))

    def send_parsed(self, message: Any) -> Handled:
        with self.platform.db.transaction() as conn:
            return self.handler(conn, self.context(message), message)

    def context(self, message: Any) -> MessageContext:
        msh = message.segment("MSH")
        kind = str(msh[9]).split("^")
        principal = Principal(
            client_id=f"hl7-{self.institution}",
            institution_code=self.institution,
            scopes=ScopeSet.parse(self.scopes),
        )
        return MessageContext(
            sender=Sender(str(msh[3]), str(msh[4]), self.institution),
            principal=principal,
            control_id=str(msh[10]),
            message_type=kind[0],
            trigger_event=kind[1] if len(kind) > 1 else "",
            version=str(msh[12]),
            received_at=datetime.now(UTC),
        )

    def read(self, resource_type: str, resource_id: str) -> StoredResource:
        with self.platform.db.transaction() as conn:
            stored, _ = ResourceRepository(conn).read(resource_type, resource_id)
        assert stored is not None, f"{resource_type}/{resource_id} missing"
        return stored

    def ids(self, handled: Handled, resource_type: str) -> list[str]:
        return [rid for rtype, rid in handled.written if rtype == resource_type]


def add_hospital(platform: Platform, code: str, name: str) -> None:
    platform.institutions.add(code=code, name=name, kind="hospital", region="460106", level=3)
