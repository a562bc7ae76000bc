"""Group a resident's FHIR resources into a clinician's summary (pure: no storage).

Each item keeps a display text, a date, a status and the institution that wrote it. Sections
are newest first; ``limits`` cap how many items a section keeps (encounters: the recent ones).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from healthroam.exchange.care.model import SourceInstitution, Summary, SummaryItem
from healthroam.records.model import StoredResource

SECTION_OF = {
    "Condition": "problems",
    "AllergyIntolerance": "allergies",
    "MedicationRequest": "medications",
    "MedicationStatement": "medications",
    "Encounter": "encounters",
    "Observation": "results",
    "DiagnosticReport": "results",
    "Immunization": "immunizations",
    "DocumentReference": "documents",
    "Composition": "documents",
}
SUMMARY_TYPES = frozenset(SECTION_OF)
DEFAULT_LIMITS = {"encounters": 20, "results": 100}
SECTION_LIMIT = 200

TITLES = {
    "zh": {
        "problems": "问题/诊断",
        "allergies": "过敏",
        "medications": "用药",
        "encounters": "近期就诊",
        "results": "检查检验结果",
        "immunizations": "预防接种",
        "documents": "文书",
    },
    "en": {
        "problems": "Problems",
        "allergies": "Allergies",
        "medications": "Medications",
        "encounters": "Recent encounters",
        "results": "Results",
        "immunizations": "Immunisations",
        "documents": "Documents",
    },
}


def concept_text(concept: Any) -> str | None:
    """A CodeableConcept's text, else its first coding's display, else its code."""
    if not isinstance(concept, dict):
        return None
    if isinstance(concept.get("text"), str) and concept["text"]:
        return str(concept["text"])
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and isinstance(coding.get("display"), str):
            return str(coding["display"])
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            return str(coding["code"])
    return None


def _code_of(concept: Any) -> str | None:
    if not isinstance(concept, dict):
        return None
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            return str(coding["code"])
    return None


def _first(content: Mapping[str, Any], *paths: str) -> str | None:
    """The first string found at the dotted ``paths`` (a list takes its first element)."""
    for path in paths:
        value: Any = content
        for part in path.split("."):
            if isinstance(value, list):
                value = value[0] if value else None
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str) and value:
            return value
    return None


def _value(content: Mapping[str, Any]) -> str | None:
    quantity = content.get("valueQuantity")
    if isinstance(quantity, dict) and quantity.get("value") is not None:
        unit = quantity.get("unit") or quantity.get("code") or ""
        return f"{quantity['value']} {unit}".strip()
    for key in ("valueString", "valueBoolean", "valueInteger"):
        if key in content:
            return str(content[key])
    return concept_text(content.get("valueCodeableConcept"))


def _medication(content: Mapping[str, Any]) -> str | None:
    return concept_text(content.get("medicationCodeableConcept")) or _first(
        content, "medicationReference.display"
    )


def describe(resource: StoredResource) -> tuple[str, str | None, str | None, str | None]:
    """(display, date, status, detail) of one resource."""
    c = resource.content
    kind = resource.resource_type
    status = _first(c, "status") or _code_of(c.get("clinicalStatus"))
    detail: str | None = None
    if kind == "Condition":
        display = concept_text(c.get("code"))
        date = _first(c, "onsetDateTime", "onsetPeriod.start", "recordedDate")
        status = _code_of(c.get("clinicalStatus")) or _code_of(c.get("verificationStatus"))
    elif kind == "AllergyIntolerance":
        display = concept_text(c.get("code"))
        date = _first(c, "onsetDateTime", "recordedDate")
        status = _code_of(c.get("clinicalStatus"))
        detail = _first(c, "criticality")
    elif kind in ("MedicationRequest", "MedicationStatement"):
        display = _medication(c)
        date = _first(c, "authoredOn", "effectiveDateTime", "effectivePeriod.start", "dateAsserted")
        detail = _first(c, "dosageInstruction.text", "dosage.text")
    elif kind == "Encounter":
        display = (
            concept_text((c.get("type") or [None])[0])
            or concept_text(c.get("serviceType"))
            or _first(c, "class.display", "class.code")
        )
        date = _first(c, "period.start", "period.end")
        detail = _first(c, "serviceProvider.display")
    elif kind in ("Observation", "DiagnosticReport"):
        display = concept_text(c.get("code"))
        date = _first(c, "effectiveDateTime", "effectivePeriod.start", "issued")
        detail = _value(c) if kind == "Observation" else _first(c, "conclusion")
    elif kind == "Immunization":
        display = concept_text(c.get("vaccineCode"))
        date = _first(c, "occurrenceDateTime", "recorded")
    elif kind == "DocumentReference":
        display = _first(c, "description") or concept_text(c.get("type"))
        date = _first(c, "date", "context.period.start")
    else:  # Composition
        display = _first(c, "title") or concept_text(c.get("type"))
        date = _first(c, "date")
    return display or kind, date, status, detail


def build_summary(
    summary: Summary,
    resources: Iterable[StoredResource],
    institution: Callable[[str | None], SourceInstitution],
    limits: Mapping[str, int] | None = None,
) -> Summary:
    """Fill ``summary``'s sections from ``resources`` (other types are ignored)."""
    caps = {**DEFAULT_LIMITS, **(limits or {})}
    seen: dict[str | None, SourceInstitution] = {}
    for resource in resources:
        section = SECTION_OF.get(resource.resource_type)
        if section is None:
            continue
        display, date, status, detail = describe(resource)
        source = institution(resource.institution_code)
        seen.setdefault(resource.institution_code, source)
        summary.section(section).append(
            SummaryItem(resource.resource_type, resource.id, display, date, status, source, detail)
        )
    for name in SECTION_OF.values():
        items = summary.section(name)
        items.sort(key=lambda i: (i.date or "", i.id), reverse=True)
        del items[caps.get(name, SECTION_LIMIT) :]
    summary.institutions = sorted(seen.values(), key=lambda s: s.code or "")
    return summary
