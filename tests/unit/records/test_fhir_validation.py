"""The definitions-driven R4 validator: official examples pass, broken ones name their element."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from healthroam.errors import HealthroamError, InvalidInput, Unprocessable
from healthroam.records.validation import SUPPORTED_TYPES, issues, validate_resource

EXAMPLES = Path(
    os.environ.get("FHIR_EXAMPLES_DIR") or Path(__file__).parents[2] / "data/fhir-examples"
)

# Official examples that are invalid against the R4 definitions themselves. None of them is in
# the committed subset; they matter when FHIR_EXAMPLES_DIR points at the whole package.
KNOWN_INVALID = {
    # ImplementationGuide.name and .status are 1..1; the spec's own IG resource lacks both.
    "ImplementationGuide-fhir.json": "name and status missing (1..1)",
    "ig-r4.json": "same resource as ImplementationGuide-fhir.json",
    # Questionnaire.item.linkId is 1..1; nested items of this example have none.
    "Questionnaire-qs1.json": "item.item.linkId missing (1..1)",
    # SearchParameter.base is 1..*; these extension search parameters have none.
    **{
        f"SearchParameter-{kind}-extensions-{rt}-{code}.json": "base missing (1..*)"
        for kind, rt in (("codesystem", "CodeSystem"), ("valueset", "ValueSet"))
        for code in ("author", "effective", "end", "keyword", "workflow")
    },
    # The id is 67 characters; ids are at most 64.
    "SearchParameter-questionnaireresponse-extensions-QuestionnaireResponse-item-subject.json": (
        "id longer than 64 characters"
    ),
}


def example_files() -> list[Path]:
    return sorted(
        p
        for p in EXAMPLES.glob("*.json")
        if p.name not in KNOWN_INVALID and p.name not in ("package.json", ".index.json")
    )


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_official_examples_are_valid(path: Path) -> None:
    resource = json.loads(path.read_text(encoding="utf-8"))
    if resource.get("resourceType") not in SUPPORTED_TYPES:
        pytest.skip("not a resource")
    assert issues(resource) == []
    assert validate_resource(resource, resource["resourceType"]) is resource


def test_the_subset_covers_every_resource_type_with_an_example() -> None:
    types = {json.loads(p.read_text(encoding="utf-8"))["resourceType"] for p in example_files()}
    without_examples = {
        "Parameters",
        "SubstanceNucleicAcid",
        "SubstancePolymer",
        "SubstanceProtein",
        "SubstanceReferenceInformation",
        "SubstanceSourceMaterial",
    }
    assert SUPPORTED_TYPES - types == without_examples
    assert len(SUPPORTED_TYPES) == 146
    assert "DomainResource" not in SUPPORTED_TYPES


OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
    "subject": {"reference": "Patient/1"},
    "effectiveDateTime": "2026-11-25T09:30:00+08:00",
    "valueQuantity": {"value": 72.5, "unit": "kg", "system": "http://unitsofmeasure.org"},
}


def observation(**patch: Any) -> dict[str, Any]:
    resource = copy.deepcopy(OBSERVATION)
    for key, value in patch.items():
        if value is None:
            resource.pop(key, None)
        else:
            resource[key] = value
    return resource


def bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "POST", "url": r["resourceType"]}}
            for r in resources
        ],
    }


def test_a_typical_observation_is_valid() -> None:
    assert issues(observation()) == []


@pytest.mark.parametrize(
    ("resource", "expression"),
    [
        # unknown elements, at the top, in a datatype, in a backbone element, in _x
        (observation(colour="red"), "Observation.colour"),
        (observation(code={"text": "x", "label": "y"}), "Observation.code.label"),
        (
            {"resourceType": "Patient", "contact": [{"gender": "male", "nick": "x"}]},
            "Patient.contact[0].nick",
        ),
        ({"resourceType": "Patient", "_birthDate": {"colour": 1}}, "Patient._birthDate.colour"),
        # JSON types of primitives
        (observation(status=5), "Observation.status"),
        (observation(valueQuantity={"value": "72.5"}), "Observation.valueQuantity.value"),
        (observation(valueQuantity={"value": True}), "Observation.valueQuantity.value"),
        (observation(valueInteger=2**31, valueQuantity=None), "Observation.valueInteger"),
        (observation(issued="2026-11-25"), "Observation.issued"),  # instant needs a time
        (observation(effectiveDateTime="2026-02-29"), "Observation.effectiveDateTime"),
        (observation(effectiveDateTime="2026-1-5"), "Observation.effectiveDateTime"),
        (
            observation(subject={"reference": "Patient/1", "display": ""}),
            "Observation.subject.display",
        ),
        (observation(id="x" * 65), "Observation.id"),
        # U+0000 (the spec's regexes admit it; PostgreSQL's jsonb refused it with a 500)
        (observation(code={"text": "a\u0000b"}), "Observation.code.text"),
        (observation(subject={"reference": "Patient/1\u0000"}), "Observation.subject.reference"),
        (
            {
                "resourceType": "Patient",
                "text": {"status": "generated", "div": "<div>\u0000</div>"},
            },
            "Patient.text.div",
        ),
        # required elements
        (observation(code=None), "Observation.code"),
        ({"resourceType": "Bundle"}, "Bundle.type"),
        (observation(extension=[{"valueString": "x"}]), "Observation.extension[0].url"),
        # cardinality: arrays vs single values
        (observation(subject=[{"reference": "Patient/1"}]), "Observation.subject"),
        (observation(category={"text": "vital-signs"}), "Observation.category"),
        (observation(category=[]), "Observation.category"),
        (
            {"resourceType": "Patient", "name": [{"given": ["Wei", None]}]},
            "Patient.name[0].given",
        ),
        # required-strength binding
        (observation(status="done"), "Observation.status"),
        ({"resourceType": "Patient", "gender": "M"}, "Patient.gender"),
        # choice types: exactly one
        (observation(valueString="72.5 kg"), "Observation.value"),
        # extension shape (ext-1)
        (
            observation(
                extension=[
                    {
                        "url": "http://example.org/x",
                        "valueString": "x",
                        "extension": [{"url": "y", "valueCode": "z"}],
                    }
                ]
            ),
            "Observation.extension[0]",
        ),
        # nested resources
        (
            {"resourceType": "Patient", "contained": [observation(code=None)]},
            "Patient.contained[0].code",
        ),
        ({"resourceType": "Patient", "contained": [{"id": "x"}]}, "Patient.contained[0]"),
        (
            {"resourceType": "Patient", "contained": [{"resourceType": "DomainResource"}]},
            "Patient.contained[0]",
        ),
        (
            bundle([observation(), observation(), observation(), observation(status="done")]),
            "Bundle.entry[3].resource.status",
        ),
        (
            {
                "resourceType": "Parameters",
                "parameter": [{"name": "p", "resource": {"resourceType": "Patient", "x": 1}}],
            },
            "Parameters.parameter[0].resource.x",
        ),
        # empty objects carry nothing
        (observation(code={}), "Observation.code"),
    ],
)
def test_invalid_resources_name_the_element(resource: dict[str, Any], expression: str) -> None:
    with pytest.raises(Unprocessable) as caught:
        validate_resource(resource, resource["resourceType"])
    assert caught.value.expression == expression
    assert caught.value.status == 422
    assert expression in caught.value.detail
    assert issues(resource)[0].expression == expression


@pytest.mark.parametrize(
    ("body", "expected", "expression"),
    [
        ([], None, "$"),
        ({"id": "1"}, None, "resourceType"),
        ({"resourceType": "Observation"}, "Patient", "resourceType"),
        ({"resourceType": "NoSuchThing"}, None, "resourceType"),
        ({"resourceType": "DomainResource"}, None, "resourceType"),
    ],
)
def test_not_a_resource_is_invalid_input(body: Any, expected: str | None, expression: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_resource(body, expected)
    assert caught.value.status == 400
    assert caught.value.expression == expression


def test_issues_lists_every_problem_with_its_kind() -> None:
    resource = observation(status="done", code=None, colour="red", valueString="x")
    found = {(i.expression, i.code) for i in issues(resource)}
    assert found == {
        ("Observation.status", "code-invalid"),
        ("Observation.code", "required"),
        ("Observation.colour", "structure"),
        ("Observation.value", "structure"),
    }
    assert [i.code for i in issues([])] == ["invalid"]


def test_primitive_extensions_and_nulls_in_arrays() -> None:
    patient = {
        "resourceType": "Patient",
        "name": [{"given": ["Wei", None], "_given": [None, {"extension": [_absent()]}]}],
        "_birthDate": {"extension": [_absent()]},
    }
    assert issues(patient) == []


def _absent() -> dict[str, Any]:
    return {
        "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
        "valueCode": "unknown",
    }


def test_messages_never_quote_the_value() -> None:
    secret = "460106199001011234"
    resource = observation(status=secret, effectiveDateTime=secret)
    for issue in issues(resource):
        assert secret not in issue.message
    with pytest.raises(HealthroamError) as caught:
        validate_resource(resource)
    assert secret not in str(caught.value)
