"""Cross-institution care: check-ins, care relationships, access exceptions and the summary.

Plain data; no web or database framework.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from healthroam.errors import InvalidInput
from healthroam.security.access import AccessBasis


class RelationshipReason(StrEnum):
    CHECK_IN = "check-in"  # a health card was scanned at one of the institution's terminals
    ENCOUNTER = "encounter"  # the institution has an active (arrived / in-progress) Encounter


@dataclass(frozen=True, slots=True)
class VisitPurpose:
    """What a check-in is for: the Encounter class it opens and the card-use step it logs."""

    code: str
    act_code: str  # HL7 v3 ActCode (Encounter.class)
    act_display: str
    step: str  # card-use step (用卡环节)


VISIT_PURPOSES: dict[str, VisitPurpose] = {
    p.code: p
    for p in (
        VisitPurpose("outpatient", "AMB", "ambulatory", "01"),
        VisitPurpose("emergency", "EMER", "emergency", "01"),
        VisitPurpose("inpatient", "IMP", "inpatient encounter", "06"),
        VisitPurpose("examination", "AMB", "ambulatory", "05"),
        VisitPurpose("public-health", "AMB", "ambulatory", "08"),
    )
}


def visit_purpose(code: str) -> VisitPurpose:
    try:
        return VISIT_PURPOSES[code]
    except KeyError:
        allowed = ", ".join(VISIT_PURPOSES)
        raise InvalidInput(f"purpose must be one of: {allowed}", expression="purpose") from None


@dataclass(frozen=True, slots=True)
class CareRelationship:
    id: int
    master_index_id: str
    institution_code: str
    since: datetime
    until: datetime
    reason: RelationshipReason
    encounter_ref: str | None = None
    card_id: str | None = None


class ReviewStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class ReviewOutcome(StrEnum):
    JUSTIFIED = "justified"
    UNJUSTIFIED = "unjustified"


@dataclass(frozen=True, slots=True)
class AccessException:
    """One break-the-glass access, waiting for (or closed by) a privacy officer's review."""

    id: int
    occurred_at: datetime
    institution_code: str
    client_id: str
    end_user: str | None
    master_index_id: str
    access: str
    reason: str
    had_relationship: bool
    consent_overridden: bool
    status: ReviewStatus
    review_outcome: ReviewOutcome | None = None
    review_note: str | None = None
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SourceInstitution:
    """Where a summary item came from."""

    code: str | None
    name: str | None
    level: int | None = None
    kind: str | None = None


@dataclass(frozen=True, slots=True)
class SummaryItem:
    resource_type: str
    id: str
    display: str
    date: str | None
    status: str | None
    source: SourceInstitution
    detail: str | None = None  # value of a result, criticality of an allergy, dose ...


SECTIONS = (
    "problems",
    "allergies",
    "medications",
    "encounters",
    "results",
    "immunizations",
    "documents",
)


@dataclass(frozen=True, slots=True)
class PersonHeader:
    master_index_id: str
    name: str | None
    sex: str | None
    birth_date: str | None


@dataclass(slots=True)
class Summary:
    """A resident's record from every institution, grouped for a clinician."""

    person: PersonHeader
    generated_at: datetime
    access: AccessBasis
    consent_restricted: bool = False  # other institutions' data hidden by the resident's consent
    break_glass_exception: int | None = None  # the access exception to be reviewed
    others_hidden: bool = False  # other institutions' data exists; no relationship to see it
    guidance: str | None = None  # how to see it (check in, or break the glass)
    problems: list[SummaryItem] = field(default_factory=list)
    allergies: list[SummaryItem] = field(default_factory=list)
    medications: list[SummaryItem] = field(default_factory=list)
    encounters: list[SummaryItem] = field(default_factory=list)
    results: list[SummaryItem] = field(default_factory=list)
    immunizations: list[SummaryItem] = field(default_factory=list)
    documents: list[SummaryItem] = field(default_factory=list)
    institutions: list[SourceInstitution] = field(default_factory=list)

    def section(self, name: str) -> list[SummaryItem]:
        items: list[SummaryItem] = getattr(self, name)
        return items


@dataclass(frozen=True, slots=True)
class CheckIn:
    """The answer to a card check-in."""

    master_index_id: str
    encounter_ref: str
    relationship: CareRelationship
    subject_ref: str
