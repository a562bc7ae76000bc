"""FHIR views of the registry: Patient -> source record, master person -> golden Patient,
PIXm Parameters and PDQm bundles (IHE ITI-83, ITI-78, ITI-119)."""

from __future__ import annotations

from datetime import date
from typing import Any

from healthroam.errors import InvalidInput
from healthroam.registry.model import (
    MASTER_INDEX_SYSTEM,
    NATIONAL_ID_SYSTEM,
    Identifier,
    MatchGrade,
    SourceKey,
    SourceRecord,
)
from healthroam.registry.names import Script, detect_script
from healthroam.registry.service import PersonView

FHIR_PATIENT_SYSTEM = "urn:healthroam:fhir-patient"
GOLDEN_TAG = {
    "system": "urn:healthroam:tags",
    "code": "golden",
    "display": "master person (golden record)",
}
MATCH_GRADE_URL = "http://hl7.org/fhir/StructureDefinition/match-grade"
_FIELD_PATHS = {
    "name": "Patient.name",
    "birthDate": "Patient.birthDate",
    "gender": "Patient.gender",
    "identifier": "Patient.identifier",
}


def _full_name(name: dict[str, Any]) -> tuple[str | None, str | None]:
    family = name.get("family")
    given = " ".join(name.get("given") or [])
    if name.get("text"):
        return str(name["text"]), family
    if family and detect_script(family) is Script.HAN:
        return family + given.replace(" ", ""), family
    parts = [p for p in (given, family) if p]
    return (" ".join(parts) or None), family


def _date(value: Any, path: str) -> date | None:
    if not isinstance(value, str) or len(value) < 10:
        return None  # partial dates (YYYY, YYYY-MM) carry no day to match on
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        raise InvalidInput(f"{path} is not a real date", expression=path) from None


def patient_to_source(
    patient: dict[str, Any], institution: str, patient_id: str
) -> tuple[SourceRecord, dict[str, str]]:
    """A FHIR Patient as a source record of ``institution``; also maps fields to paths."""
    names = patient.get("name") or []
    chosen = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    full, family = _full_name(chosen)
    national_id: str | None = None
    identifiers: list[Identifier] = []
    paths = dict(_FIELD_PATHS)
    for index, identifier in enumerate(patient.get("identifier") or []):
        system, value = identifier.get("system"), identifier.get("value")
        if not system or not value:
            continue
        if system == NATIONAL_ID_SYSTEM and national_id is None:
            national_id = value
            paths["identifier"] = f"Patient.identifier[{index}].value"
        elif system != MASTER_INDEX_SYSTEM:
            identifiers.append(Identifier(system, value))
    phones = tuple(
        t["value"]
        for t in patient.get("telecom") or []
        if t.get("system") in ("phone", "sms") and t.get("value")
    )
    address_text, region = None, None
    addresses = patient.get("address") or []
    if addresses:
        home = next((a for a in addresses if a.get("use") == "home"), addresses[0])
        address_text = (
            home.get("text") or "".join([home.get("city") or "", *(home.get("line") or [])]) or None
        )
        district = home.get("district")
        if isinstance(district, str) and district.isdigit() and len(district) == 6:
            region = district
    record = SourceRecord(
        key=SourceKey(institution, FHIR_PATIENT_SYSTEM, patient_id),
        name=full,
        family=family,
        sex=patient.get("gender"),
        birth_date=_date(patient.get("birthDate"), "Patient.birthDate"),
        national_id=national_id,
        identifiers=tuple(identifiers),
        phones=phones,
        address=address_text,
        region=region,
        death_date=_date(patient.get("deceasedDateTime"), "Patient.deceasedDateTime"),
        fhir_patient_id=patient_id,
    )
    return record, paths


def fhir_path(error: InvalidInput, paths: dict[str, str]) -> InvalidInput:
    """Re-point a registry validation error at the Patient element it came from."""
    return InvalidInput(
        error.detail, expression=paths.get(error.expression or "", error.expression)
    )


def golden_patient(view: PersonView) -> dict[str, Any]:
    master = view.master
    golden = master.golden or {}
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": master.master_index_id,
        "meta": {
            "tag": [GOLDEN_TAG],
            "versionId": str(master.version),
            "lastUpdated": master.updated_at.isoformat(),
        },
        "active": master.status == "active",
    }
    identifiers = [
        {"use": "official", "system": MASTER_INDEX_SYSTEM, "value": master.master_index_id}
    ]
    for entry in golden.get("identifiers") or []:
        system, _, value = str(entry).partition("|")
        identifiers.append({"system": system, "value": value})
    patient["identifier"] = identifiers
    name = golden.get("name")
    if name:
        patient["name"] = [{"use": "official", "text": name}]
    elif golden.get("latin_name"):
        patient["name"] = [{"use": "official", "text": golden["latin_name"]}]
    sex = golden.get("sex")
    patient["gender"] = {"1": "male", "2": "female"}.get(sex or "", "unknown")
    if golden.get("birth_date"):
        patient["birthDate"] = golden["birth_date"]
    if golden.get("death_date"):
        patient["deceasedDateTime"] = golden["death_date"]
    if golden.get("phone"):
        patient["telecom"] = [{"system": "phone", "value": golden["phone"]}]
    if golden.get("address") or golden.get("region"):
        address: dict[str, Any] = {"use": "home"}
        if golden.get("address"):
            address["text"] = golden["address"]
        if golden.get("region"):
            address["district"] = golden["region"]
        patient["address"] = [address]
    links = []
    if view.survivor is not None:
        links.append(
            {
                "other": {"reference": f"Patient/{view.survivor.master_index_id}"},
                "type": "replaced-by",
            }
        )
    for source in view.sources:
        if source.fhir_patient_id:
            links.append(
                {"other": {"reference": f"Patient/{source.fhir_patient_id}"}, "type": "seealso"}
            )
    for predecessor in view.predecessors:
        links.append(
            {"other": {"reference": f"Patient/{predecessor.master_index_id}"}, "type": "replaces"}
        )
    if links:
        patient["link"] = links
    return patient


def pix_parameters(view: PersonView, target_systems: set[str] | None) -> dict[str, Any]:
    """ITI-83 response: every identifier the person has across sources, and source Patients."""
    master = view.survivor or view.master
    parameters: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()

    def add(system: str, value: str) -> None:
        if (system, value) in seen or (target_systems and system not in target_systems):
            return
        seen.add((system, value))
        parameters.append(
            {"name": "targetIdentifier", "valueIdentifier": {"system": system, "value": value}}
        )

    add(MASTER_INDEX_SYSTEM, master.master_index_id)
    for source in view.sources:
        national = source.normalized.get("national_id")
        if national:
            add(NATIONAL_ID_SYSTEM, national)
        for entry in source.data.get("identifiers") or []:
            system, _, value = str(entry).partition("|")
            add(system, value)
        add(f"urn:healthroam:source:{source.institution}:{source.id_system}", source.local_id)
    if not target_systems:
        for source in view.sources:
            if source.fhir_patient_id:
                parameters.append(
                    {
                        "name": "targetId",
                        "valueReference": {"reference": f"Patient/{source.fhir_patient_id}"},
                    }
                )
    return {"resourceType": "Parameters", "parameter": parameters}


def match_entry(
    view: PersonView, probability: float, grade: MatchGrade, base: str
) -> dict[str, Any]:
    return {
        "fullUrl": f"{base}/Patient/{view.master.master_index_id}",
        "resource": golden_patient(view),
        "search": {
            "mode": "match",
            "score": round(probability, 6),
            "extension": [{"url": MATCH_GRADE_URL, "valueCode": grade.value}],
        },
    }
