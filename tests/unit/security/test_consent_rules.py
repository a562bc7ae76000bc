"""Consent directives (FHIR R4 Consent, patient-privacy) as pure rules."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from healthroam.security.consent import (
    ConsentDecision,
    evaluate,
    parse_consent,
)

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)


def consent(
    kind: str = "deny",
    *,
    actors: list[str] | None = None,
    nested: list[dict[str, Any]] | None = None,
    status: str = "active",
    scope: str = "patient-privacy",
    when: str = "2026-01-01T00:00:00Z",
    period: dict[str, str] | None = None,
) -> dict[str, Any]:
    provision: dict[str, Any] = {"type": kind}
    if actors is not None:
        provision["actor"] = [
            {"role": {"text": "recipient"}, "reference": {"reference": f"Organization/{a}"}}
            for a in actors
        ]
    if nested:
        provision["provision"] = nested
    if period:
        provision["period"] = period
    return {
        "resourceType": "Consent",
        "status": status,
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": scope,
                }
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/p1"},
        "dateTime": when,
        "provision": provision,
    }


def decide(*resources: dict[str, Any], institution: str = "H002") -> ConsentDecision:
    directives = [
        d for i, r in enumerate(resources) if (d := parse_consent(f"c{i}", r)) is not None
    ]
    return evaluate(directives, institution, NOW).decision


def test_no_directive_means_sharing() -> None:
    assert decide() is ConsentDecision.SHARE


def test_deny_without_actor_refuses_every_institution() -> None:
    assert decide(consent("deny")) is ConsentDecision.REFUSE


def test_deny_naming_an_institution_refuses_only_that_one() -> None:
    directive = consent("deny", actors=["H002"])
    assert decide(directive, institution="H002") is ConsentDecision.REFUSE
    assert decide(directive, institution="H003") is ConsentDecision.SHARE


def test_actor_by_institution_identifier() -> None:
    resource = consent("deny")
    resource["provision"]["actor"] = [
        {"reference": {"identifier": {"system": "urn:healthroam:institution", "value": "H002"}}}
    ]
    assert decide(resource, institution="H002") is ConsentDecision.REFUSE
    assert decide(resource, institution="H009") is ConsentDecision.SHARE


def test_nested_permit_is_an_exception_to_a_deny() -> None:
    directive = consent(
        "deny",
        nested=[{"type": "permit", "actor": [{"reference": {"reference": "Organization/H001"}}]}],
    )
    assert decide(directive, institution="H001") is ConsentDecision.SHARE
    assert decide(directive, institution="H002") is ConsentDecision.REFUSE


def test_newest_directive_wins() -> None:
    old_deny = consent("deny", when="2025-01-01")
    new_permit = consent("permit", when="2026-06-01")
    assert decide(old_deny, new_permit) is ConsentDecision.SHARE
    assert decide(consent("permit", when="2025-01-01"), consent("deny")) is (ConsentDecision.REFUSE)


def test_inactive_other_scope_and_expired_directives_do_not_count() -> None:
    assert decide(consent(status="inactive")) is ConsentDecision.SHARE
    assert decide(consent(status="proposed")) is ConsentDecision.SHARE
    assert decide(consent(scope="research")) is ConsentDecision.SHARE
    assert decide(consent(period={"end": "2026-06-01"})) is ConsentDecision.SHARE
    assert decide(consent(period={"start": "2027-01-01"})) is ConsentDecision.SHARE
    assert decide(consent(period={"start": "2026-01-01", "end": "2027-01-01"})) is (
        ConsentDecision.REFUSE
    )


def test_a_consent_without_provision_type_is_no_directive() -> None:
    resource = consent()
    del resource["provision"]["type"]
    assert parse_consent("x", resource) is None


def test_outcome_names_the_deciding_directive() -> None:
    directives = [parse_consent("deny-1", consent())]
    outcome = evaluate([d for d in directives if d], "H002", NOW)
    assert outcome.refused
    assert outcome.directive_id == "deny-1"
