"""Institutions, API clients and who is asking: plain data, no framework imports."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from healthroam.errors import InvalidInput
from healthroam.security.scopes import ScopeSet


class InstitutionKind(StrEnum):
    """What an institution is (机构类别)."""

    HOSPITAL = "hospital"  # 医院
    CLINIC = "clinic"  # 诊所 / 门诊部
    TOWNSHIP_HEALTH_CENTRE = "township-health-centre"  # 乡镇卫生院 / 社区卫生服务中心
    AGENCY = "agency"  # 卫健委, 工信厅, 医保局 ...


# 一级/二级/三级 hospital grades (医院等级); only hospitals carry one.
HOSPITAL_LEVELS = (1, 2, 3)
_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_REGION = re.compile(r"^\d{6}$")


@dataclass(frozen=True, slots=True)
class Institution:
    """A hospital, clinic, township health centre or agency known to the platform."""

    code: str
    name: str
    kind: InstitutionKind
    region: str  # GB/T 2260 six-digit administrative division code
    level: int | None = None
    active: bool = True

    def __post_init__(self) -> None:
        if not _CODE.match(self.code):
            raise InvalidInput(
                "institution code must be 1-64 letters, digits, '.', '_' or '-'",
                expression="code",
            )
        if not self.name.strip():
            raise InvalidInput("institution name must not be empty", expression="name")
        if not _REGION.match(self.region):
            raise InvalidInput(
                "region must be a six-digit GB/T 2260 administrative division code",
                expression="region",
            )
        if self.kind is InstitutionKind.HOSPITAL:
            if self.level not in HOSPITAL_LEVELS:
                raise InvalidInput(
                    "a hospital needs a level: 1, 2 or 3 (一级/二级/三级)", expression="level"
                )
        elif self.level is not None:
            raise InvalidInput("only hospitals carry a level", expression="level")


@dataclass(frozen=True, slots=True)
class ApiClient:
    """A system that calls the platform on behalf of one institution."""

    client_id: str
    institution_code: str
    name: str
    scopes: ScopeSet
    active: bool
    created_at: datetime
    has_secret: bool = False
    jwks: dict[str, object] | None = None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is making a request: the client, its institution, and optionally the end user."""

    client_id: str
    institution_code: str
    scopes: ScopeSet
    end_user: str | None = None
    purpose_of_use: str = "TREAT"
    source_address: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    # X-Break-Glass-Reason as sent (checked where it is used: security/access.py)
    break_glass_reason: str | None = None
