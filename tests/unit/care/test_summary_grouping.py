"""Grouping a resident's resources into the clinician's summary (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from healthroam.exchange.care.model import PersonHeader, SourceInstitution, Summary
from healthroam.exchange.care.summary import build_summary, describe
from healthroam.records.model import StoredResource
from healthroam.security.access import AccessBasis

NOW = datetime(2026, 11, 29, tzinfo=UTC)


def stored(kind: str, rid: str, institution: str | None = "HA", **content: Any) -> StoredResource:
    return StoredResource(kind, rid, 1, NOW, content, institution)


def source(code: str | None) -> SourceInstitution:
    names = {"HA": ("省人民医院", 3), "HB": ("县医院", 2)}
    name, level = names.get(code or "", (None, None))
    return SourceInstitution(code, name, level, "hospital" if name else None)


def empty() -> Summary:
    return Summary(PersonHeader("A" * 64, "林晓梅", "2", "1990-01-01"), NOW, AccessBasis.OWN_DATA)


def test_each_type_lands_in_its_section_with_its_institution() -> None:
    resources = [
        stored("Condition", "c1", code={"text": "高血压"}, onsetDateTime="2021-01-01"),
        stored(
            "AllergyIntolerance", "a1", "HB", code={"coding": [{"code": "X", "display": "青霉素"}]}
        ),
        stored("MedicationStatement", "m1", medicationCodeableConcept={"text": "阿司匹林"}),
        stored("MedicationRequest", "m2", medicationReference={"display": "二甲双胍"}),
        stored("Encounter", "e1", "HB", status="arrived", **{"class": {"code": "AMB"}}),
        stored(
            "Observation",
            "o1",
            code={"text": "血糖"},
            valueQuantity={"value": 5.6, "unit": "mmol/L"},
        ),
        stored("DiagnosticReport", "d1", code={"text": "血常规"}, conclusion="正常"),
        stored("Immunization", "i1", vaccineCode={"text": "乙肝疫苗"}, status="completed"),
        stored("DocumentReference", "r1", description="出院小结", status="current"),
        stored("Composition", "k1", title="病历摘要", status="final"),
        stored("Patient", "p1"),
        stored("Practitioner", "x1"),
    ]
    summary = build_summary(empty(), resources, source)
    assert [i.display for i in summary.problems] == ["高血压"]
    assert summary.allergies[0].display == "青霉素"
    assert summary.allergies[0].source == SourceInstitution("HB", "县医院", 2, "hospital")
    assert {i.display for i in summary.medications} == {"阿司匹林", "二甲双胍"}
    assert summary.encounters[0].display == "AMB"
    assert summary.encounters[0].status == "arrived"
    results = {i.display: i.detail for i in summary.results}
    assert results == {"血糖": "5.6 mmol/L", "血常规": "正常"}
    assert summary.immunizations[0].status == "completed"
    assert {i.display for i in summary.documents} == {"出院小结", "病历摘要"}
    assert [s.code for s in summary.institutions] == ["HA", "HB"]


def test_sections_are_newest_first_and_encounters_capped() -> None:
    encounters = [
        stored("Encounter", f"e{d:02d}", period={"start": f"2026-10-{d:02d}"}) for d in range(1, 31)
    ]
    summary = build_summary(empty(), encounters, source)
    assert len(summary.encounters) == 20
    assert summary.encounters[0].date == "2026-10-30"
    assert summary.encounters[-1].date == "2026-10-11"


def test_unknown_writer_and_missing_text() -> None:
    item = build_summary(empty(), [stored("Condition", "c9", None)], source).problems[0]
    assert item.display == "Condition"
    assert item.source == SourceInstitution(None, None)
    display, date, status, _ = describe(
        stored("Condition", "c8", code={"coding": [{"code": "I10"}]}, recordedDate="2020-02-02")
    )
    assert (display, date, status) == ("I10", "2020-02-02", None)
