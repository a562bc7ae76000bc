from __future__ import annotations

from typing import Any

import pytest

from healthroam.errors import HealthroamError
from healthroam.records.validation import validate_resource


def test_accepts_a_full_patient() -> None:
    patient = {
        "resourceType": "Patient",
        "id": "abc-1",
        "active": True,
        "gender": "unknown",
        "birthDate": "1990",
        "deceasedDateTime": "2020-02-29T10:00:00+08:00",
        "name": [
            {
                "family": "阿卜杜拉·买买提",
                "_family": {"extension": [{"url": "http://example.org/x", "valueCode": "a"}]},
            }
        ],
        "multipleBirthInteger": 2,
        "link": [{"other": {"reference": "Patient/x"}, "type": "seealso"}],
    }
    assert validate_resource(patient, "Patient") is patient


@pytest.mark.parametrize(
    ("patch", "expression"),
    [
        ({"id": "has space"}, "Patient.id"),
        ({"birthDate": "2023-02-29"}, "Patient.birthDate"),
        ({"birthDate": "19900101"}, "Patient.birthDate"),
        ({"deceasedDateTime": "2020-01-01T10:00:00"}, "Patient.deceasedDateTime"),
        ({"deceasedBoolean": True, "deceasedDateTime": "2020"}, "Patient.deceased"),
        ({"multipleBirthInteger": True}, "Patient.multipleBirthInteger"),
        ({"telecom": [{"system": "pigeon", "value": "x"}]}, "Patient.telecom[0].system"),
        ({"identifier": [{"value": ""}]}, "Patient.identifier[0].value"),
        ({"address": [{"line": ["ok", 3]}]}, "Patient.address[0].line[1]"),
        ({"name": []}, "Patient.name"),
        (
            {"name": [{"family": "x", "_family": {"extension": []}}]},
            "Patient.name[0]._family.extension",
        ),
        ({"identifier": [{"value": "\u00a0"}]}, None),
    ],
)
def test_refusals_point_at_the_element(patch: dict[str, Any], expression: str | None) -> None:
    resource = {"resourceType": "Patient", **patch}
    if expression is None:  # accepted: the spec regexes are Java regexes (NBSP is \S there)
        assert validate_resource(resource, "Patient") is resource
        return
    with pytest.raises(HealthroamError) as caught:
        validate_resource(resource, "Patient")
    assert caught.value.expression == expression
    assert caught.value.status == 422
