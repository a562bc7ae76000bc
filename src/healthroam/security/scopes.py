"""SMART App Launch v2 system scopes (``system/Patient.cruds``), with v1 forms accepted.

A scope grants interactions on one resource type (or ``*``): c create, r read, u update,
d delete, s search. SMART v1's ``read`` means ``rs`` and ``write`` means ``cud``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from healthroam.errors import InvalidInput

INTERACTIONS = "cruds"
_V2 = re.compile(r"^(system|user|patient)/(\*|[A-Z][A-Za-z]+)\.([cruds]+|read|write|\*)$")
_V1_MAP = {"read": "rs", "write": "cud", "*": "cruds"}


@dataclass(frozen=True, slots=True, order=True)
class Scope:
    context: str
    resource_type: str
    interactions: str  # a subset of "cruds", in that order

    @classmethod
    def parse(cls, text: str) -> Scope:
        match = _V2.match(text)
        if not match:
            raise InvalidInput(
                f"'{text}' is not a SMART scope such as system/Patient.cruds", expression="scope"
            )
        context, resource_type, perms = match.groups()
        perms = _V1_MAP.get(perms, perms)
        if any(perms.count(letter) > 1 for letter in perms) or perms != "".join(
            letter for letter in INTERACTIONS if letter in perms
        ):
            raise InvalidInput(
                f"'{text}': interactions must be a subset of 'cruds' in that order",
                expression="scope",
            )
        return cls(context, resource_type, perms)

    def allows(self, resource_type: str, interaction: str) -> bool:
        return self.resource_type in ("*", resource_type) and interaction in self.interactions

    def covers(self, other: Scope) -> bool:
        """Whether holding this scope entitles a client to ask for ``other``."""
        return (
            self.context == other.context
            and self.resource_type in ("*", other.resource_type)
            and set(other.interactions) <= set(self.interactions)
        )

    def __str__(self) -> str:
        return f"{self.context}/{self.resource_type}.{self.interactions}"


@dataclass(frozen=True, slots=True)
class ScopeSet:
    scopes: tuple[Scope, ...]

    @classmethod
    def parse(cls, text: str) -> ScopeSet:
        parts = text.split()
        if not parts:
            raise InvalidInput("at least one scope is required", expression="scope")
        return cls(tuple(sorted({Scope.parse(p) for p in parts})))

    def allows(self, resource_type: str, interaction: str) -> bool:
        return any(s.allows(resource_type, interaction) for s in self.scopes)

    def grant(self, requested: ScopeSet | None) -> ScopeSet:
        """The scopes to put in a token: the requested ones this set covers (all if none asked).

        Raises ``InvalidInput`` when a requested scope is not covered: SMART asks servers to
        refuse rather than silently widen or drop.
        """
        if requested is None:
            return self
        for scope in requested.scopes:
            if not any(mine.covers(scope) for mine in self.scopes):
                raise InvalidInput(
                    f"scope '{scope}' is not granted to this client", expression="scope"
                )
        return requested

    def __str__(self) -> str:
        return " ".join(str(s) for s in self.scopes)
