from __future__ import annotations

import pytest

from healthroam.errors import InvalidInput
from healthroam.security.model import Institution, InstitutionKind


def test_valid_hospital_and_agency() -> None:
    Institution("H001", "海南省人民医院", InstitutionKind.HOSPITAL, "460106", level=3)
    Institution("HNWJW", "海南省卫生健康委员会", InstitutionKind.AGENCY, "460000")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"code": "bad code"}, "code"),
        ({"name": " "}, "name"),
        ({"region": "4601"}, "region"),
        ({"level": None}, "level"),
        ({"level": 4}, "level"),
        ({"kind": InstitutionKind.CLINIC, "level": 2}, "level"),
    ],
)
def test_invalid_institutions_name_the_field(kwargs: dict[str, object], field: str) -> None:
    values: dict[str, object] = {
        "code": "H1",
        "name": "医院",
        "kind": InstitutionKind.HOSPITAL,
        "region": "460106",
        "level": 3,
        **kwargs,
    }
    with pytest.raises(InvalidInput) as caught:
        Institution(**values)  # type: ignore[arg-type]
    assert caught.value.expression == field
