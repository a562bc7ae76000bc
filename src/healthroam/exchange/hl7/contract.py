"""The interface between the HL7 v2 transport (framing, ACKs, idempotency, senders) and the
message handlers (segments -> FHIR resources through the platform's services).

Plain data and one error type; no web or database framework imports beyond typing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from healthroam.errors import HealthroamError

if TYPE_CHECKING:
    from healthroam.security.model import Principal


class AckCode(StrEnum):
    """MSA-1 in original acknowledgement mode."""

    ACCEPT = "AA"
    ERROR = "AE"  # the message was understood but could not be applied
    REJECT = "AR"  # the message was refused (unknown sender, unsupported type/version, framing)


class ErrorCode(StrEnum):
    """HL7 table 0357 (message error condition codes) - the ones the gateway reports."""

    SEGMENT_SEQUENCE = "100"
    REQUIRED_FIELD_MISSING = "101"
    DATA_TYPE_ERROR = "102"
    TABLE_VALUE_NOT_FOUND = "103"
    UNSUPPORTED_MESSAGE_TYPE = "200"
    UNSUPPORTED_EVENT = "201"
    UNSUPPORTED_PROCESSING_ID = "202"
    UNSUPPORTED_VERSION = "203"
    UNKNOWN_KEY = "204"
    DUPLICATE_KEY = "205"
    RECORD_LOCKED = "206"
    INTERNAL_ERROR = "207"


class Severity(StrEnum):
    """HL7 table 0516 (ERR-4)."""

    ERROR = "E"
    WARNING = "W"
    INFORMATION = "I"


@dataclass(frozen=True, slots=True)
class Location:
    """Where in the message a problem is: ERR-2 (v2.5) / ERR-1 (v2.3, v2.4).

    ``segment`` is the segment id (``PID``), ``sequence`` its 1-based occurrence in the message,
    ``field``/``component`` 1-based positions (0 = the whole segment / field)."""

    segment: str
    sequence: int = 1
    field: int = 0
    component: int = 0

    def __str__(self) -> str:
        text = self.segment if self.sequence == 1 else f"{self.segment}[{self.sequence}]"
        if self.field:
            text += f"-{self.field}"
            if self.component:
                text += f".{self.component}"
        return text


class Hl7Problem(HealthroamError):
    """A message the gateway answers with AE or AR and an ERR segment naming field and reason."""

    status, code, title = 400, "invalid", "HL7 v2 message refused"

    def __init__(
        self,
        detail: str,
        *,
        location: Location | None = None,
        error_code: ErrorCode = ErrorCode.DATA_TYPE_ERROR,
        ack: AckCode = AckCode.ERROR,
    ) -> None:
        super().__init__(detail, expression=str(location) if location else None)
        self.location = location
        self.error_code = error_code
        self.ack = ack


@dataclass(frozen=True, slots=True)
class Note:
    """Something the ACK reports without failing the message: an ERR segment with severity W
    or I (for example "an equivalent result already exists at another hospital")."""

    detail: str
    severity: Severity = Severity.INFORMATION
    location: Location | None = None
    code: str = "0"  # ERR-3 application error code (0 = message accepted)


@dataclass(frozen=True, slots=True)
class Sender:
    """An HL7 sender (MSH-3 application, MSH-4 facility) bound to a registered institution."""

    application: str
    facility: str
    institution_code: str


@dataclass(frozen=True, slots=True)
class MessageContext:
    """What the transport knows about a message before it is handled."""

    sender: Sender
    principal: Principal  # the institution's principal; writes are audited as it
    control_id: str  # MSH-10
    message_type: str  # MSH-9.1, e.g. "ADT"
    trigger_event: str  # MSH-9.2, e.g. "A04"
    version: str  # MSH-12, e.g. "2.5.1"
    received_at: datetime


@dataclass(slots=True)
class Handled:
    """What a handler did: the resources it wrote and any notes for the ACK."""

    written: list[tuple[str, str]] = field(default_factory=list)  # (resource type, id)
    master_index_id: str | None = None
    notes: list[Note] = field(default_factory=list)


class MessageHandler(Protocol):
    """Applies one parsed message (a :class:`healthroam.exchange.hl7.codec.Er7Message`: its
    segments' field texts, and python-hl7's ``hl7.Message`` API - ``segment()``,
    ``segments()``, ``unescape()`` - on request, decision 0040) inside the caller's open
    transaction. Raises :class:`Hl7Problem` (or any HealthroamError) to refuse it; the transport
    then rolls the transaction back and answers AE/AR. Never commits."""

    def __call__(self, conn: Any, context: MessageContext, message: Any) -> Handled: ...


# Connection.info key, True while the gateway applies a group of messages without a savepoint
# per message (GatewayService.apply_batch with savepoints=False). A handler may then write
# without savepoints of its own: any error after a message started writing makes the gateway
# roll the whole group back and apply it again with one savepoint per message, where the
# handler's own savepoints (a create that lost a race to a concurrent message) apply again.
NO_SAVEPOINTS = "healthroam.hl7.no_savepoints"


def without_savepoints(conn: Any) -> bool:
    """Whether ``conn`` is applying a group without savepoints (see NO_SAVEPOINTS)."""
    return bool(conn.info.get(NO_SAVEPOINTS))
