"""ORC + OBR (+ TQ1) -> FHIR ServiceRequest, and the coding rules shared with results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from healthroam.exchange.hl7.contract import Location
from healthroam.exchange.hl7.mapping_patient import V2_0203, Mapped
from healthroam.exchange.hl7.segments import (
    Coded,
    EntityId,
    Segment,
    ce,
    ei,
    fhir_datetime,
    missing,
    unknown_code,
    xcn,
)

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
KNOWN_SYSTEMS = {
    "LN": LOINC,
    "LOINC": LOINC,
    "SCT": SNOMED,
    "SNM": SNOMED,
    "SNOMED": SNOMED,
    "UCUM": UCUM,
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "ICD10": "http://hl7.org/fhir/sid/icd-10",
}


def local_code_system(institution: str, coding_system: str | None = None) -> str:
    """Codes no standard system owns: one URI per institution (and per named local system)."""
    base = f"urn:healthroam:local-code:{institution}"
    if coding_system and coding_system.upper() not in ("L", "99LOCAL", "LOCAL"):
        return f"{base}:{coding_system}"
    return base


def coding_system(name: str | None, institution: str) -> str:
    if name and name.upper() in KNOWN_SYSTEMS:
        return KNOWN_SYSTEMS[name.upper()]
    return local_code_system(institution, name)


def concept(coded: Coded, institution: str) -> dict[str, Any]:
    """CE/CWE as a CodeableConcept: the primary and the alternate triplet, LOINC first."""
    codings = []
    for code, text, system in (
        (coded.code, coded.text, coded.system),
        (coded.alt_code, coded.alt_text, coded.alt_system),
    ):
        if code:
            coding: dict[str, Any] = {"system": coding_system(system, institution), "code": code}
            if text:
                coding["display"] = text
            codings.append(coding)
    codings.sort(key=lambda c: c["system"] != LOINC)
    out: dict[str, Any] = {}
    if codings:
        out["coding"] = codings
    text = coded.original_text or coded.text
    if text:
        out["text"] = text
    return out


def placer_system(institution: str) -> str:
    return f"urn:healthroam:placer-order:{institution}"


def filler_system(institution: str) -> str:
    return f"urn:healthroam:filler-order:{institution}"


def order_identifiers(
    placer: EntityId | None, filler: EntityId | None, institution: str
) -> list[dict[str, Any]]:
    out = []
    if placer:
        out.append(
            {
                "type": {"coding": [{"system": V2_0203, "code": "PLAC"}]},
                "system": placer_system(institution),
                "value": placer.id,
            }
        )
    if filler:
        out.append(
            {
                "type": {"coding": [{"system": V2_0203, "code": "FILL"}]},
                "system": filler_system(institution),
                "value": filler.id,
            }
        )
    return out


def order_numbers(
    orc: Segment | None, obr: Segment | None
) -> tuple[EntityId | None, EntityId | None]:
    """Placer (ORC-2, else OBR-2) and filler (ORC-3, else OBR-3) order numbers."""

    def pick(field_no: int) -> EntityId | None:
        for seg in (orc, obr):
            if seg is not None:
                reps = seg.reps(field_no)
                found = ei(reps[0]) if reps else None
                if found:
                    return found
        return None

    return pick(2), pick(3)


# table 0119 order control -> what happens to the ServiceRequest
ORDER_CONTROL = {
    "NW": "active",
    "XO": "active",
    "RP": "active",  # replacement order
    "RL": "active",  # release hold
    "CA": "revoked",
    "OC": "revoked",
    "DC": "revoked",
    "OD": "revoked",
    "HD": "on-hold",
    "OH": "on-hold",
    "SC": None,  # status changed: from ORC-5
}
CREATES = frozenset({"NW", "RP"})  # the others need an existing order

# table 0038 order status -> ServiceRequest.status
ORDER_STATUS = {
    "A": "active",
    "IP": "active",
    "SC": "active",
    "CM": "completed",
    "CA": "revoked",
    "DC": "revoked",
    "RP": "revoked",
    "ER": "entered-in-error",
    "HD": "on-hold",
}

# TQ priority (OBR-27.6 / TQ1-9) -> ServiceRequest.priority
PRIORITY = {
    "S": "stat",
    "A": "asap",
    "R": "routine",
    "P": "urgent",  # pre-op
    "C": "urgent",  # callback
    "T": "urgent",  # timing critical
    "PRN": "routine",
}


@dataclass(frozen=True, slots=True)
class OrderControl:
    code: str
    status: str


def order_control(orc: Segment) -> OrderControl:
    code = orc.value(1)
    if code is None:
        raise missing(orc.at(1), "order control")
    code = code.upper()
    if code not in ORDER_CONTROL:
        raise unknown_code(orc.at(1), "0119")
    status = ORDER_CONTROL[code]
    if status is None:
        order_status = orc.value(5)
        if order_status is None:
            raise missing(orc.at(5), "order status for SC")
        if order_status.upper() not in ORDER_STATUS:
            raise unknown_code(orc.at(5), "0038")
        status = ORDER_STATUS[order_status.upper()]
    return OrderControl(code, status)


def _priority(obr: Segment, tq1: Segment | None) -> tuple[str | None, Location | None]:
    if tq1 is not None and tq1.value(9) is not None:
        return tq1.value(9), tq1.at(9)
    reps = obr.reps(27)
    if reps and len(reps[0]) >= 6 and reps[0][5][0].strip():
        return reps[0][5][0].strip(), obr.at(27, 6)
    return None, None


def service_request(
    orc: Segment,
    obr: Segment,
    tq1: Segment | None,
    *,
    institution: str,
    patient_id: str,
    encounter_id: str | None,
    default_offset: str = "+08:00",
) -> tuple[Mapped, OrderControl]:
    control = order_control(orc)
    placer, filler = order_numbers(orc, obr)
    if placer is None and filler is None:
        raise missing(orc.at(2), "placer or filler order number")
    mapped = Mapped({"resourceType": "ServiceRequest"})
    sr = mapped.resource
    sr["identifier"] = order_identifiers(placer, filler, institution)
    mapped.paths["ServiceRequest.identifier"] = orc.at(2)
    sr["status"] = control.status
    mapped.paths["ServiceRequest.status"] = orc.at(1)
    sr["intent"] = "order"
    reps = obr.reps(4)
    if not reps or (ce(reps[0]).code is None and ce(reps[0]).text is None):
        raise missing(obr.at(4), "universal service identifier")
    sr["code"] = concept(ce(reps[0]), institution)
    mapped.paths["ServiceRequest.code"] = obr.at(4)
    sr["subject"] = {"reference": f"Patient/{patient_id}"}
    if encounter_id:
        sr["encounter"] = {"reference": f"Encounter/{encounter_id}"}
    authored = orc.value(9)
    if authored is not None:
        sr["authoredOn"] = fhir_datetime(authored, orc.at(9), default_offset)
        mapped.paths["ServiceRequest.authoredOn"] = orc.at(9)
    requester_reps = orc.reps(12) or obr.reps(16)
    if requester_reps:
        person = xcn(requester_reps[0])
        requester: dict[str, Any] = {}
        if person.display:
            requester["display"] = person.display
        if person.id:
            requester["identifier"] = {
                "system": f"urn:healthroam:practitioner:{institution}",
                "value": person.id,
            }
        if requester:
            sr["requester"] = requester
            mapped.paths["ServiceRequest.requester"] = orc.at(12)
    priority, where = _priority(obr, tq1)
    if priority is not None and where is not None:
        if priority.upper() not in PRIORITY:
            raise unknown_code(where, "0485")
        sr["priority"] = PRIORITY[priority.upper()]
    start = tq1.value(7) if tq1 is not None else None
    if start is not None and tq1 is not None:
        sr["occurrenceDateTime"] = fhir_datetime(start, tq1.at(7), default_offset)
        mapped.paths["ServiceRequest.occurrenceDateTime"] = tq1.at(7)
    reasons = [concept(ce(r), institution) for r in obr.reps(31)]
    reasons = [r for r in reasons if r]
    if reasons:
        sr["reasonCode"] = reasons
    specimen_text = obr.value(15)
    if specimen_text:
        sr["specimen"] = [{"display": specimen_text}]
    return mapped, control
