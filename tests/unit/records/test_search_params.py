"""Search index extraction from the official SearchParameter definitions."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from healthroam.records import fhirpath
from healthroam.records.definitions import load
from healthroam.records.search_params import (
    CompositeIndex,
    DateIndex,
    IndexValue,
    NumberIndex,
    PositionIndex,
    QuantityIndex,
    ReferenceIndex,
    StringIndex,
    TokenIndex,
    UriIndex,
    date_range,
    extract_index_values,
    fallback_params,
    normalize,
    parameters,
    search_index,
    ucum_canonical,
)

EXAMPLES = Path(
    os.environ.get("FHIR_EXAMPLES_DIR") or Path(__file__).parents[2] / "data/fhir-examples"
)
LOINC, UCUM = "http://loinc.org", "http://unitsofmeasure.org"


def load_example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    return data


def rows(resource: dict[str, Any], param: str) -> list[IndexValue]:
    return [r for r in extract_index_values(resource) if r.param == param]


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def test_every_r4_parameter_with_an_expression_is_compiled_natively() -> None:
    index = search_index()
    assert index.unsupported == []
    assert fallback_params() == []  # fhirpathpy stays a safety net, unused by R4 itself
    with_expression = [sp for sp in load().search_params if sp.expression]
    assert len(with_expression) == 1372
    assert sum(len(ps) for ps in index.params.values()) == 2573
    kinds = {p.definition.type for ps in index.params.values() for p in ps.values()}
    assert kinds == {
        "token",
        "string",
        "date",
        "reference",
        "quantity",
        "uri",
        "number",
        "composite",
        "special",
    }
    assert {"_id", "_lastUpdated", "_tag", "_profile", "_security", "_source"} <= set(
        parameters("Patient")
    )


def test_observation_code_token() -> None:
    observation = load_example("Observation-example.json")
    assert rows(observation, "code") == [
        TokenIndex("code", LOINC, "29463-7", "body weight"),
        TokenIndex("code", LOINC, "3141-9", "body weight measured"),
        TokenIndex("code", "http://snomed.info/sct", "27113001", "body weight"),
        TokenIndex("code", "http://acme.org/devices/clinical-codes", "body-weight", "body weight"),
    ]
    assert rows(observation, "status") == [
        TokenIndex("status", "http://hl7.org/fhir/observation-status", "final")
    ]


def test_observation_value_quantity_and_composite() -> None:
    observation = load_example("Observation-example.json")
    weight = QuantityIndex(
        "value-quantity", Decimal(185), Decimal(185), UCUM, "[lb_av]", "lbs", None
    )
    assert rows(observation, "value-quantity") == [weight]
    composites = rows(observation, "code-value-quantity")
    assert len(composites) == 4  # one per coding of the code
    first = composites[0]
    assert isinstance(first, CompositeIndex)
    assert first.components == (TokenIndex("code", LOINC, "29463-7", "body weight"), weight)
    assert rows(observation, "code-value-concept") == []


def test_component_composites_of_blood_pressure() -> None:
    bp = load_example("Observation-blood-pressure.json")
    found = {
        (c.components[0].code, c.components[1].low)  # type: ignore[union-attr]
        for c in rows(bp, "component-code-value-quantity")
        if isinstance(c, CompositeIndex)
    }
    assert ("8480-6", Decimal(107)) in found
    assert ("8462-4", Decimal(60)) in found


def test_patient_birthdate_is_a_day_interval() -> None:
    patient = load_example("Patient-example.json")
    assert rows(patient, "birthdate") == [
        DateIndex("birthdate", utc(1974, 12, 25), utc(1974, 12, 25, 23, 59, 59, 999999))
    ]
    assert rows(patient, "gender") == [
        TokenIndex("gender", "http://hl7.org/fhir/administrative-gender", "male")
    ]
    assert StringIndex("family", "Chalmers", "chalmers") in rows(patient, "family")
    assert rows(patient, "deceased") == [TokenIndex("deceased", None, "false")]
    identifier = rows(patient, "identifier")[0]
    assert identifier == TokenIndex(
        "identifier",
        "urn:oid:1.2.36.146.595.217.0.1",
        "12345",
        None,
        "http://terminology.hl7.org/CodeSystem/v2-0203",
        "MR",
    )


def test_encounter_subject_reference() -> None:
    encounter = load_example("Encounter-example.json")
    expected = ReferenceIndex("subject", "Patient", "example", "Patient/example")
    assert rows(encounter, "subject") == [expected]
    assert rows(encounter, "patient") == [expected._replace(param="patient")]
    assert rows(encounter, "practitioner") == []


def test_references_absolute_versioned_contained_and_by_identifier() -> None:
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "contained": [{"resourceType": "Patient", "id": "p1"}],
        "subject": {"reference": "#p1"},
        "performer": [
            {"reference": "https://hospital.example/fhir/Practitioner/7/_history/3"},
            {"identifier": {"system": "urn:x", "value": "42"}},
        ],
        "basedOn": [{"reference": "ServiceRequest/9"}],
    }
    assert rows(observation, "patient") == [ReferenceIndex("patient", "Patient", None, "#p1")]
    assert rows(observation, "performer") == [
        ReferenceIndex(
            "performer",
            "Practitioner",
            "7",
            "https://hospital.example/fhir/Practitioner/7/_history/3",
            "3",
        ),
        ReferenceIndex("performer", None, None, None, None, "urn:x", "42"),
    ]
    # subject.where(resolve() is Patient) drops references to other types
    grouped = dict(observation, subject={"reference": "Group/g"})
    assert rows(grouped, "patient") == []
    assert rows(grouped, "subject") == [ReferenceIndex("subject", "Group", "g", "Group/g")]


def test_canonical_reference_and_uri() -> None:
    value_set = {
        "resourceType": "ValueSet",
        "status": "active",
        "url": "http://example.org/vs",
        "compose": {"include": [{"system": "http://example.org/cs"}]},
    }
    assert rows(value_set, "url") == [UriIndex("url", "http://example.org/vs")]
    assert rows(value_set, "reference") == [UriIndex("reference", "http://example.org/cs")]
    plan = {
        "resourceType": "PlanDefinition",
        "status": "active",
        "library": ["http://example.org/Library/lib|2.0"],
    }
    assert ReferenceIndex(
        "depends-on", "Library", "lib", "http://example.org/Library/lib", "2.0"
    ) in rows(plan, "depends-on")


def test_meta_parameters() -> None:
    patient = {
        "resourceType": "Patient",
        "id": "p-1",
        "meta": {
            "lastUpdated": "2026-11-25T08:00:00.123+08:00",
            "profile": ["http://example.org/StructureDefinition/p"],
            "tag": [{"system": "urn:t", "code": "demo"}],
            "security": [{"system": "urn:s", "code": "R"}],
            "source": "urn:source:his-1",
        },
    }
    instant = utc(2026, 11, 25, 0, 0, 0, 123000)
    assert rows(patient, "_id") == [TokenIndex("_id", None, "p-1")]
    assert rows(patient, "_lastUpdated") == [DateIndex("_lastUpdated", instant, instant)]
    assert rows(patient, "_tag") == [TokenIndex("_tag", "urn:t", "demo")]
    assert rows(patient, "_security") == [TokenIndex("_security", "urn:s", "R")]
    assert rows(patient, "_profile") == [
        UriIndex("_profile", "http://example.org/StructureDefinition/p")
    ]
    assert rows(patient, "_source") == [UriIndex("_source", "urn:source:his-1")]


def test_dates_periods_and_timing() -> None:
    encounter = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"code": "AMB"},
        "period": {"start": "2026-11-25T09:00:00+08:00"},
    }
    assert rows(encounter, "date") == [DateIndex("date", utc(2026, 11, 25, 1), None)]
    plan = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "Patient/1"},
        "activity": [
            {
                "detail": {
                    "status": "scheduled",
                    "scheduledTiming": {"event": ["2026-01-02", "2026-01"]},
                }
            },
            {"detail": {"status": "scheduled", "scheduledString": "every morning"}},
        ],
    }
    assert rows(plan, "activity-date") == [
        DateIndex("activity-date", utc(2026, 1, 1), utc(2026, 1, 31, 23, 59, 59, 999999))
    ]
    assert date_range("2026-01") == (utc(2026, 1, 1), utc(2026, 1, 31, 23, 59, 59, 999999))
    assert date_range("2026-12") == (utc(2026, 12, 1), utc(2026, 12, 31, 23, 59, 59, 999999))
    assert date_range("2026") == (utc(2026, 1, 1), utc(2026, 12, 31, 23, 59, 59, 999999))
    assert date_range("2026-11-25T08:00:00Z") == (
        utc(2026, 11, 25, 8),
        utc(2026, 11, 25, 8, 0, 0, 999999),
    )
    assert date_range("not a date") is None
    assert rows(load_example("Condition-example.json"), "onset-date") == [
        DateIndex("onset-date", utc(2012, 5, 24), utc(2012, 5, 24, 23, 59, 59, 999999))
    ]


def test_strings_fold_case_and_accents() -> None:
    patient = {
        "resourceType": "Patient",
        "name": [{"family": "Müller-Łukasz", "given": ["  José  María "]}],
        "address": [{"city": "海口市", "line": ["Haixiu Road 1"]}],
    }
    assert rows(patient, "family") == [StringIndex("family", "Müller-Łukasz", "muller-łukasz")]
    assert StringIndex("given", "  José  María ", "jose maria") in rows(patient, "given")
    assert StringIndex("address-city", "海口市", "海口市") in rows(patient, "address-city")
    assert StringIndex("address", "Haixiu Road 1", "haixiu road 1") in rows(patient, "address")
    assert normalize("ÅNGSTRÖM") == "angstrom"


def test_quantities_ranges_and_ucum() -> None:
    assert ucum_canonical("mg") == (Decimal("0.001"), "g")
    assert ucum_canonical("mg/dL") == (Decimal("0.01"), "g/L")
    assert ucum_canonical("min") == (Decimal(60), "s")
    assert ucum_canonical("mm[Hg]") is None
    glucose = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "2339-0"}]},
        "valueQuantity": {"value": 95, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"},
    }
    (row,) = rows(glucose, "value-quantity")
    assert isinstance(row, QuantityIndex)
    assert (row.canonical_low, row.canonical_code) == (Decimal("0.95"), "g/L")
    condition = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/1"},
        "onsetRange": {"low": {"value": 10, "unit": "a", "system": UCUM, "code": "a"}},
    }
    (age,) = rows(condition, "onset-age")
    assert isinstance(age, QuantityIndex)
    assert (age.low, age.high, age.code) == (Decimal(10), None, "a")


def test_number_special_and_bundle_composition() -> None:
    risk = {
        "resourceType": "RiskAssessment",
        "status": "final",
        "subject": {"reference": "Patient/1"},
        "prediction": [{"probabilityDecimal": 0.25}, {"probabilityRange": {"low": {"value": 1}}}],
    }
    assert rows(risk, "probability") == [NumberIndex("probability", Decimal("0.25"))]
    location = load_example("Location-1.json")
    assert rows(location, "near") == [
        PositionIndex("near", Decimal("42.25475478"), Decimal("-83.6945691"))
    ]
    document = {
        "resourceType": "Bundle",
        "type": "document",
        "entry": [{"resource": {"resourceType": "Composition", "id": "c1"}}],
    }
    assert rows(document, "composition") == [
        ReferenceIndex("composition", "Composition", "c1", "Composition/c1")
    ]


def test_telecom_and_boolean_tokens() -> None:
    patient = {
        "resourceType": "Patient",
        "active": True,
        "telecom": [
            {"system": "phone", "value": "+86 898 1234 5678"},
            {"system": "email", "value": "a@example.org"},
        ],
        "deceasedDateTime": "2026-01-01",
    }
    assert rows(patient, "phone") == [TokenIndex("phone", None, "+86 898 1234 5678")]
    assert rows(patient, "email") == [TokenIndex("email", None, "a@example.org")]
    assert rows(patient, "active") == [TokenIndex("active", None, "true")]
    assert rows(patient, "deceased") == [TokenIndex("deceased", None, "true")]


def test_the_compiler_subset() -> None:
    defs = load()
    paths = fhirpath.resolve(
        defs, "(Observation.value as CodeableConcept).text", ("Observation", ""), "Observation"
    )
    assert [(p.steps, p.type_code) for p, _ in paths] == [
        ((fhirpath.Step("key", "valueCodeableConcept"), fhirpath.Step("key", "text")), "string")
    ]
    paths = fhirpath.resolve(
        defs,
        "Patient.telecom.where(system='email') | Practitioner.telecom",
        ("Patient", ""),
        "Patient",
    )
    assert len(paths) == 1  # the Practitioner branch is for another type
    with pytest.raises(fhirpath.Unsupported):
        fhirpath.parse("Patient.name.first()")
    with pytest.raises(fhirpath.Unsupported):
        fhirpath.resolve(defs, "Patient.nickname", ("Patient", ""), "Patient")


def example_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.glob("*.json") if p.name != "package.json")


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_extraction_never_raises_on_official_examples(path: Path) -> None:
    resource = json.loads(path.read_text(encoding="utf-8"))
    found = extract_index_values(resource)
    assert all(r.param for r in found)


def test_extraction_is_empty_for_unknown_types() -> None:
    assert extract_index_values({"resourceType": "Nope"}) == []
