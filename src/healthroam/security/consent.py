"""A resident's privacy consent directives (FHIR R4 ``Consent``), evaluated as pure rules.

Only directives about sharing count: ``scope`` patient-privacy, ``status`` active, inside
``provision.period`` when one is given. The platform's base policy is to share (the resident
opts out). A directive's top-level ``provision.type`` (``deny`` or ``permit``) applies to the
institutions named in ``provision.actor`` (``Organization/<institution code>`` or an identifier
of system ``urn:healthroam:institution``), or to every institution when it names none. One level
of nested provisions is read as exceptions that name institutions (for example: deny everyone,
permit hospital H001). The newest applicable directive (``dateTime``, then id) decides.

A refusal concerns other institutions' data: an institution always sees what it wrote itself
(see :mod:`healthroam.security.access`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

CONSENT_SCOPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentscope"
PRIVACY_SCOPE = "patient-privacy"
INSTITUTION_SYSTEM = "urn:healthroam:institution"
_FAR_PAST = datetime(1, 1, 2, tzinfo=UTC)


class ConsentDecision(StrEnum):
    SHARE = "share"
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class Provision:
    """``type`` for ``actors`` (None: everybody)."""

    type: ConsentDecision
    actors: frozenset[str] | None


@dataclass(frozen=True, slots=True)
class ConsentDirective:
    id: str
    recorded: datetime
    base: Provision
    exceptions: tuple[Provision, ...] = ()
    start: datetime | None = None
    end: datetime | None = None

    def in_force(self, now: datetime) -> bool:
        return (self.start is None or self.start <= now) and (self.end is None or now < self.end)

    def decision_for(self, institution: str) -> ConsentDecision | None:
        """What this directive says about ``institution`` (None: it does not speak of it)."""
        for exception in self.exceptions:
            if exception.actors is not None and institution in exception.actors:
                return exception.type
        if self.base.actors is None or institution in self.base.actors:
            return self.base.type
        return None


@dataclass(frozen=True, slots=True)
class ConsentOutcome:
    decision: ConsentDecision
    directive_id: str | None = None  # the directive that decided (None: base policy)

    @property
    def refused(self) -> bool:
        return self.decision is ConsentDecision.REFUSE


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    if len(text) == 4:
        text += "-01-01"
    elif len(text) == 7:
        text += "-01"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _actor_codes(provision: dict[str, Any]) -> frozenset[str] | None:
    actors = provision.get("actor")
    if not isinstance(actors, list) or not actors:
        return None
    codes: set[str] = set()
    for actor in actors:
        reference = actor.get("reference") if isinstance(actor, dict) else None
        if not isinstance(reference, dict):
            continue
        text = reference.get("reference")
        if isinstance(text, str) and text.startswith("Organization/"):
            codes.add(text.split("/", 1)[1])
        identifier = reference.get("identifier")
        if (
            isinstance(identifier, dict)
            and identifier.get("system") == INSTITUTION_SYSTEM
            and isinstance(identifier.get("value"), str)
        ):
            codes.add(identifier["value"])
    # Actors that name no institution cannot narrow the directive: it speaks of everybody.
    return frozenset(codes) if codes else None


def _provision(provision: Any, default: ConsentDecision | None) -> Provision | None:
    if not isinstance(provision, dict):
        return None
    kind = provision.get("type")
    decision = (
        ConsentDecision.REFUSE
        if kind == "deny"
        else ConsentDecision.SHARE
        if kind == "permit"
        else default
    )
    if decision is None:
        return None
    return Provision(decision, _actor_codes(provision))


def is_privacy_consent(resource: dict[str, Any]) -> bool:
    scope = resource.get("scope")
    codings = scope.get("coding") if isinstance(scope, dict) else None
    return any(
        isinstance(c, dict)
        and c.get("code") == PRIVACY_SCOPE
        and c.get("system") in (None, CONSENT_SCOPE_SYSTEM)
        for c in codings or []
    )


def parse_consent(resource_id: str, resource: dict[str, Any]) -> ConsentDirective | None:
    """The sharing directive a stored Consent expresses, or None when it is not one (another
    scope, not active, or no provision type)."""
    if resource.get("status") != "active" or not is_privacy_consent(resource):
        return None
    top = resource.get("provision")
    base = _provision(top, None)
    if base is None or not isinstance(top, dict):
        return None
    exceptions: list[Provision] = []
    for nested in top.get("provision") or []:
        opposite = (
            ConsentDecision.SHARE if base.type is ConsentDecision.REFUSE else ConsentDecision.REFUSE
        )
        exception = _provision(nested, opposite)
        if exception is not None and exception.actors is not None:
            exceptions.append(exception)
    period = top.get("period") if isinstance(top.get("period"), dict) else {}
    assert isinstance(period, dict)
    return ConsentDirective(
        id=resource_id,
        recorded=_instant(resource.get("dateTime")) or _FAR_PAST,
        base=base,
        exceptions=tuple(exceptions),
        start=_instant(period.get("start")),
        end=_instant(period.get("end")),
    )


def evaluate(
    directives: Iterable[ConsentDirective], institution: str, now: datetime
) -> ConsentOutcome:
    """Whether the resident lets ``institution`` see data written by other institutions."""
    applicable = [
        (d.recorded, d.id, decision, d)
        for d in directives
        if d.in_force(now) and (decision := d.decision_for(institution)) is not None
    ]
    if not applicable:
        return ConsentOutcome(ConsentDecision.SHARE)
    _, directive_id, decision, _ = max(applicable, key=lambda a: (a[0], a[1]))
    return ConsentOutcome(decision, directive_id)
