"""HL7 senders bound to institutions, and the principal a sender's messages act as.

Plain data and rules; no web or database framework imports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from healthroam.errors import InvalidInput
from healthroam.exchange.hl7.contract import Sender
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet

# The resource types HL7 v2 messages write (ADT -> Patient, Encounter; ORU -> Observation,
# DiagnosticReport; ORM/OML -> ServiceRequest), as SMART v2 system scopes.
HL7_SCOPES = ScopeSet.parse(
    " ".join(
        f"system/{t}.cruds"
        for t in ("Patient", "Encounter", "Observation", "DiagnosticReport", "ServiceRequest")
    )
)
_NAMESPACE_ID = re.compile(r"^[^\x00-\x1f|^~\\&]{1,180}$")


def check_namespace_id(value: str, what: str) -> str:
    """MSH-3 / MSH-4 namespace ids as stored: 1-180 characters, no HL7 delimiters."""
    value = value.strip()
    if not _NAMESPACE_ID.match(value):
        raise InvalidInput(
            f"{what} must be 1-180 characters without control characters or HL7 delimiters "
            "(| ^ ~ \\ &)",
            expression=what,
        )
    return value


@dataclass(frozen=True, slots=True)
class SenderBinding:
    """A row of the sender table: who may send, for which institution, and whether now."""

    application: str
    facility: str
    institution_code: str
    active: bool
    created_at: datetime
    description: str | None = None

    @property
    def sender(self) -> Sender:
        return Sender(self.application, self.facility, self.institution_code)


def client_id(application: str, facility: str) -> str:
    """How a sender appears in the audit trail: ``hl7:<application>@<facility>``."""
    return f"hl7:{application}@{facility}"[:64]


def principal_for(sender: Sender, *, source_address: str | None = None) -> Principal:
    """The principal a sender's messages write as: its institution, with system scopes on
    the resource types HL7 v2 writes."""
    return Principal(
        client_id=client_id(sender.application, sender.facility),
        institution_code=sender.institution_code,
        scopes=HL7_SCOPES,
        source_address=source_address,
        extra={"channel": "hl7v2"},
    )
