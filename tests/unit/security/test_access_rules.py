"""The cross-institution access policy as pure rules."""

from __future__ import annotations

import pytest

from healthroam.errors import InvalidInput
from healthroam.security.access import (
    AccessBasis,
    AccessRequest,
    check_break_glass_reason,
    decide,
)
from healthroam.security.consent import ConsentDecision, ConsentOutcome

SHARE = ConsentOutcome(ConsentDecision.SHARE)
REFUSE = ConsentOutcome(ConsentDecision.REFUSE, "c1")


def request(
    *,
    foreign: tuple[str, ...] = ("H002",),
    relationship: bool = False,
    consent: ConsentOutcome = SHARE,
    reason: str | None = None,
    care_provider: bool = True,
    own_data: bool = False,
) -> AccessRequest:
    return AccessRequest(
        institution="H001",
        care_provider=care_provider,
        institutions=frozenset((*foreign, *(("H001",) if own_data else ()))),
        relationship=relationship,
        consent=consent,
        break_glass_reason=reason,
    )


def test_own_data_only_needs_nothing() -> None:
    decision = decide(request(foreign=(), own_data=True))
    assert decision.basis is AccessBasis.OWN_DATA
    assert decision.allowed
    assert decision.visible("H001", "H001")


def test_relationship_shows_other_institutions() -> None:
    decision = decide(request(relationship=True))
    assert decision.basis is AccessBasis.RELATIONSHIP
    assert decision.visible("H001", "H002")
    assert decision.visible("H001", "H001")


def test_no_relationship_is_refused_with_guidance() -> None:
    decision = decide(request())
    assert not decision.allowed
    assert decision.guidance
    assert "X-Break-Glass-Reason" in decision.guidance
    assert "check-in" in decision.guidance


def test_without_relationship_a_writer_sees_its_own_data_only() -> None:
    decision = decide(request(own_data=True))
    assert decision.basis is AccessBasis.OWN_DATA
    assert decision.others_hidden
    assert decision.visible("H001", "H001")
    assert not decision.visible("H001", "H002")
    assert decision.guidance
    assert "X-Break-Glass-Reason" in decision.guidance


def test_break_glass_without_relationship_is_allowed_and_flagged() -> None:
    decision = decide(request(reason="unconscious patient in ED"))
    assert decision.basis is AccessBasis.BREAK_GLASS
    assert decision.break_glass
    assert decision.visible("H001", "H002")
    assert not decision.consent_overridden


def test_consent_refusal_hides_other_institutions_but_not_own_data() -> None:
    decision = decide(request(relationship=True, consent=REFUSE, own_data=True))
    assert decision.allowed
    assert decision.consent_refused
    assert decision.visible("H001", "H001")
    assert not decision.visible("H001", "H002")


@pytest.mark.parametrize("relationship", [True, False])
def test_break_glass_overrides_a_refusal_when_the_policy_says_so(relationship: bool) -> None:
    decision = decide(request(relationship=relationship, consent=REFUSE, reason="emergency"))
    assert decision.break_glass
    assert decision.consent_overridden
    assert decision.visible("H001", "H002")
    strict = decide(
        request(relationship=relationship, consent=REFUSE, reason="emergency"),
        overrides_consent=False,
    )
    assert strict.break_glass
    assert not strict.consent_overridden
    assert not strict.visible("H001", "H002")


def test_agencies_keep_their_scope_based_access() -> None:
    decision = decide(request(care_provider=False, consent=REFUSE))
    assert decision.basis is AccessBasis.CUSTODIAN
    assert decision.visible("HNWJW", "H002")


def test_break_glass_reason_must_be_stated() -> None:
    assert check_break_glass_reason(None) is None
    assert check_break_glass_reason("  chest   pain, unconscious ") == "chest pain, unconscious"
    for bad in ("", "   ", "ok", "x" * 501):
        with pytest.raises(InvalidInput):
            check_break_glass_reason(bad)
