"""Who may see a resident's whole record across institutions: pure rules, no storage.

- An institution always sees the data it wrote itself.
- Agencies (data stewards, auditors, public health) are not care providers: the rules below do
  not narrow them; their SMART scopes alone decide, as before.
- A care provider sees other institutions' data when it has a care relationship with the
  resident (a card check-in or an active encounter there), unless the resident's consent
  directive refuses sharing with it.
- Without a relationship, or against a refusal, a care provider may break the glass by stating
  a reason: access is allowed, audited with purpose of use ``BTG`` and flagged for review.
  Whether break-the-glass overrides a consent refusal is the ``overrides_consent`` policy.
- Otherwise a caller that wrote data about the resident itself sees that data only (and is
  told that more exists and how to get it); any other caller is refused with the same advice.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from healthroam.errors import InvalidInput
from healthroam.security.consent import ConsentOutcome

BREAK_GLASS_PURPOSE = "BTG"  # HL7 v3 ActReason: break the glass
REASON_MIN, REASON_MAX = 5, 500


class AccessBasis(StrEnum):
    OWN_DATA = "own-data"  # nothing written by another institution
    RELATIONSHIP = "care-relationship"
    BREAK_GLASS = "break-the-glass"
    CUSTODIAN = "custodian"  # an agency: steward, auditor, public health
    DENIED = "denied"


@dataclass(frozen=True, slots=True)
class AccessRequest:
    institution: str
    care_provider: bool  # hospital, clinic or township health centre
    institutions: frozenset[str]  # every institution that wrote data about the resident
    relationship: bool
    consent: ConsentOutcome
    break_glass_reason: str | None = None


@dataclass(frozen=True, slots=True)
class AccessDecision:
    basis: AccessBasis
    show_foreign: bool = False
    consent_refused: bool = False  # the resident refused sharing with this institution
    consent_overridden: bool = False  # ... and break-the-glass showed the data anyway
    others_hidden: bool = False  # other institutions' data exists but is not shown (no access)
    guidance: str | None = None  # for a refusal or hidden data: what the caller can do

    @property
    def allowed(self) -> bool:
        return self.basis is not AccessBasis.DENIED

    @property
    def break_glass(self) -> bool:
        return self.basis is AccessBasis.BREAK_GLASS

    def visible(self, own: str, institution: str | None) -> bool:
        """Whether a resource written by ``institution`` may be shown to ``own``."""
        return institution == own or self.show_foreign


NO_RELATIONSHIP_GUIDANCE = (
    "no care relationship with this resident at your institution: check the resident in by "
    "health card (POST /care/check-in) or record an active Encounter, or break the glass by "
    "sending the header X-Break-Glass-Reason with the clinical reason (audited and reviewed)"
)


def check_break_glass_reason(reason: str | None) -> str | None:
    """The stated reason, stripped; None when none was given; refuse an empty or long one."""
    if reason is None:
        return None
    text = " ".join(reason.split())
    if not REASON_MIN <= len(text) <= REASON_MAX:
        raise InvalidInput(
            f"a break-the-glass reason is {REASON_MIN}-{REASON_MAX} characters of clinical "
            "justification",
            expression="X-Break-Glass-Reason",
        )
    return text


def decide(request: AccessRequest, *, overrides_consent: bool = True) -> AccessDecision:
    if not request.care_provider:
        return AccessDecision(AccessBasis.CUSTODIAN, show_foreign=True)
    foreign = request.institutions - {request.institution}
    if not foreign:
        return AccessDecision(AccessBasis.OWN_DATA)
    refused = request.consent.refused
    glass = request.break_glass_reason is not None
    if request.relationship and not (refused and glass):
        return AccessDecision(
            AccessBasis.RELATIONSHIP, show_foreign=not refused, consent_refused=refused
        )
    if glass:
        show = not refused or overrides_consent
        return AccessDecision(
            AccessBasis.BREAK_GLASS,
            show_foreign=show,
            consent_refused=refused,
            consent_overridden=refused and show,
        )
    if request.institution in request.institutions:
        return AccessDecision(
            AccessBasis.OWN_DATA, others_hidden=True, guidance=NO_RELATIONSHIP_GUIDANCE
        )
    return AccessDecision(AccessBasis.DENIED, guidance=NO_RELATIONSHIP_GUIDANCE)
