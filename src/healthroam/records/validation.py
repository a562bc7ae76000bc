"""Structural checks of incoming FHIR R4 resources.

This first cut knows the Patient resource (the thin slice of the Foundation issue): element
names, cardinality, primitive formats and the required ``gender`` binding. Every problem names
its element as a FHIRPath expression such as ``Patient.name[0].given``.
"""

from __future__ import annotations

import re
from typing import Any

from healthroam.errors import InvalidInput, Unprocessable

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_DATE = re.compile(r"^\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?)?$")
_DATETIME = re.compile(
    r"^\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01])"
    r"(T([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?(Z|[+-]((0\d|1[0-3]):[0-5]\d|14:00)))?)?)?$"
)
_URI = re.compile(r"^\S*$")

# element -> (kind, is_list)
_STRING, _BOOL, _DATE_T, _DATETIME_T, _CODE, _URI_T, _OBJ, _INT = (
    "string",
    "boolean",
    "date",
    "dateTime",
    "code",
    "uri",
    "object",
    "integer",
)
_PATIENT: dict[str, tuple[str, bool]] = {
    "resourceType": (_STRING, False),
    "id": (_STRING, False),
    "meta": (_OBJ, False),
    "implicitRules": (_URI_T, False),
    "language": (_CODE, False),
    "text": (_OBJ, False),
    "contained": (_OBJ, True),
    "extension": (_OBJ, True),
    "modifierExtension": (_OBJ, True),
    "identifier": (_OBJ, True),
    "active": (_BOOL, False),
    "name": (_OBJ, True),
    "telecom": (_OBJ, True),
    "gender": (_CODE, False),
    "birthDate": (_DATE_T, False),
    "deceasedBoolean": (_BOOL, False),
    "deceasedDateTime": (_DATETIME_T, False),
    "address": (_OBJ, True),
    "maritalStatus": (_OBJ, False),
    "multipleBirthBoolean": (_BOOL, False),
    "multipleBirthInteger": (_INT, False),
    "photo": (_OBJ, True),
    "contact": (_OBJ, True),
    "communication": (_OBJ, True),
    "generalPractitioner": (_OBJ, True),
    "managingOrganization": (_OBJ, False),
    "link": (_OBJ, True),
}
_HUMAN_NAME = {
    "id": (_STRING, False),
    "extension": (_OBJ, True),
    "use": (_CODE, False),
    "text": (_STRING, False),
    "family": (_STRING, False),
    "given": (_STRING, True),
    "prefix": (_STRING, True),
    "suffix": (_STRING, True),
    "period": (_OBJ, False),
}
_IDENTIFIER = {
    "id": (_STRING, False),
    "extension": (_OBJ, True),
    "use": (_CODE, False),
    "type": (_OBJ, False),
    "system": (_URI_T, False),
    "value": (_STRING, False),
    "period": (_OBJ, False),
    "assigner": (_OBJ, False),
}
_CONTACT_POINT = {
    "id": (_STRING, False),
    "extension": (_OBJ, True),
    "system": (_CODE, False),
    "value": (_STRING, False),
    "use": (_CODE, False),
    "rank": (_INT, False),
    "period": (_OBJ, False),
}
_ADDRESS = {
    "id": (_STRING, False),
    "extension": (_OBJ, True),
    "use": (_CODE, False),
    "type": (_CODE, False),
    "text": (_STRING, False),
    "line": (_STRING, True),
    "city": (_STRING, False),
    "district": (_STRING, False),
    "state": (_STRING, False),
    "postalCode": (_STRING, False),
    "country": (_STRING, False),
    "period": (_OBJ, False),
}
_CHILDREN = {
    "name": _HUMAN_NAME,
    "identifier": _IDENTIFIER,
    "telecom": _CONTACT_POINT,
    "address": _ADDRESS,
}
# Required-strength bindings (R4): value sets as code lists.
_BINDINGS = {
    "Patient.gender": {"male", "female", "other", "unknown"},
    "Patient.name.use": {"usual", "official", "temp", "nickname", "anonymous", "old", "maiden"},
    "Patient.identifier.use": {"usual", "official", "temp", "secondary", "old"},
    "Patient.telecom.system": {"phone", "fax", "email", "pager", "url", "sms", "other"},
    "Patient.telecom.use": {"home", "work", "temp", "old", "mobile"},
    "Patient.address.use": {"home", "work", "temp", "old", "billing"},
    "Patient.address.type": {"postal", "physical", "both"},
}
SUPPORTED_TYPES = frozenset({"Patient"})


def _check_value(kind: str, value: Any, path: str, binding: set[str] | None) -> None:
    ok: bool
    if kind == _STRING:
        ok = isinstance(value, str) and value.strip() != ""
    elif kind == _BOOL:
        ok = isinstance(value, bool)
    elif kind == _INT:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == _DATE_T:
        ok = isinstance(value, str) and bool(_DATE.match(value)) and _real_date(value)
    elif kind == _DATETIME_T:
        ok = isinstance(value, str) and bool(_DATETIME.match(value)) and _real_date(value[:10])
    elif kind == _CODE:
        ok = isinstance(value, str) and value == value.strip() and value != ""
    elif kind == _URI_T:
        ok = isinstance(value, str) and bool(_URI.match(value)) and value != ""
    else:
        ok = isinstance(value, dict)
    if not ok:
        raise Unprocessable(f"{path} is not a valid {kind}", expression=path)
    if binding is not None and value not in binding:
        allowed = ", ".join(sorted(binding))
        raise Unprocessable(f"{path} must be one of: {allowed}", expression=path)


def _real_date(text: str) -> bool:
    from datetime import date

    parts = text.split("-")
    if len(parts) < 3:
        return True
    try:
        date(int(parts[0]), int(parts[1]), int(parts[2]))
    except ValueError:
        return False
    return True


def _check_object(
    obj: dict[str, Any],
    spec: dict[str, tuple[str, bool]],
    path: str,
    binding_path: str,
    children: dict[str, Any],
) -> None:
    for key, value in obj.items():
        if key.startswith("_") and key[1:] in spec:
            continue  # primitive extensions
        if key not in spec:
            raise Unprocessable(f"unknown element {path}.{key}", expression=f"{path}.{key}")
        kind, is_list = spec[key]
        here = f"{path}.{key}"
        if is_list:
            if not isinstance(value, list) or not value:
                raise Unprocessable(f"{here} must be a non-empty array", expression=here)
            items = list(enumerate(value))
        else:
            if isinstance(value, list):
                raise Unprocessable(f"{here} must not be an array", expression=here)
            items = [(-1, value)]
        for index, item in items:
            item_path = f"{here}[{index}]" if index >= 0 else here
            binding = _BINDINGS.get(f"{binding_path}.{key}")
            _check_value(kind, item, item_path, binding)
            child_spec = children.get(key)
            if child_spec is not None:
                _check_object(item, child_spec, item_path, f"{binding_path}.{key}", {})


def validate_resource(resource: Any, expected_type: str | None = None) -> dict[str, Any]:
    """Check a parsed JSON body; return it (unchanged) or raise with the offending path."""
    if not isinstance(resource, dict):
        raise InvalidInput("the body must be a JSON object (a FHIR resource)", expression="$")
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        raise InvalidInput("resourceType is missing", expression="resourceType")
    if expected_type and resource_type != expected_type:
        raise InvalidInput(
            f"resourceType {resource_type} does not match the endpoint {expected_type}",
            expression="resourceType",
        )
    if resource_type not in SUPPORTED_TYPES:
        raise Unprocessable(
            f"resource type {resource_type} is not supported yet", expression="resourceType"
        )
    if "id" in resource and (
        not isinstance(resource["id"], str) or not ID_PATTERN.match(resource["id"])
    ):
        raise Unprocessable("Patient.id must be 1-64 of A-Z a-z 0-9 - .", expression="Patient.id")
    if "deceasedBoolean" in resource and "deceasedDateTime" in resource:
        raise Unprocessable(
            "Patient.deceased[x] may have only one type", expression="Patient.deceased"
        )
    _check_object(resource, _PATIENT, "Patient", "Patient", _CHILDREN)
    return resource
