from __future__ import annotations

import pytest

from healthroam.errors import InvalidInput
from healthroam.security.scopes import Scope, ScopeSet


@pytest.mark.parametrize(
    ("text", "resource", "interactions"),
    [
        ("system/Patient.cruds", "Patient", "cruds"),
        ("system/Observation.rs", "Observation", "rs"),
        ("system/*.r", "*", "r"),
        ("system/Patient.read", "Patient", "rs"),
        ("system/Patient.write", "Patient", "cud"),
        ("system/Patient.*", "Patient", "cruds"),
    ],
)
def test_parse(text: str, resource: str, interactions: str) -> None:
    scope = Scope.parse(text)
    assert (scope.context, scope.resource_type, scope.interactions) == (
        "system",
        resource,
        interactions,
    )


@pytest.mark.parametrize(
    "text",
    [
        "Patient.read",
        "system/patient.r",
        "system/Patient.rc",
        "system/Patient.rr",
        "system/Patient.x",
        "system/Patient.",
        "launch/patient",
        "",
    ],
)
def test_parse_refuses(text: str) -> None:
    with pytest.raises(InvalidInput):
        ScopeSet.parse(text) if text == "" else Scope.parse(text)


def test_allows() -> None:
    scopes = ScopeSet.parse("system/Patient.rs system/*.c")
    assert scopes.allows("Patient", "r")
    assert scopes.allows("Patient", "s")
    assert not scopes.allows("Patient", "u")
    assert scopes.allows("Observation", "c")
    assert not scopes.allows("Observation", "r")


def test_grant_narrows_and_refuses_widening() -> None:
    held = ScopeSet.parse("system/Patient.cruds system/Observation.rs")
    assert str(held.grant(ScopeSet.parse("system/Patient.r"))) == "system/Patient.r"
    assert held.grant(None) is held
    with pytest.raises(InvalidInput):
        held.grant(ScopeSet.parse("system/Observation.c"))
    with pytest.raises(InvalidInput):
        held.grant(ScopeSet.parse("system/*.r"))
    assert str(ScopeSet.parse("system/*.rs").grant(ScopeSet.parse("system/Encounter.r"))) == (
        "system/Encounter.r"
    )
