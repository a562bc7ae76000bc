"""PV1 (+ PV2) -> FHIR Encounter (no I/O). See docs/hl7-mapping.md for the table."""

from __future__ import annotations

from typing import Any

from healthroam.exchange.hl7.mapping_patient import V2_0203, Mapped, institution_reference
from healthroam.exchange.hl7.segments import (
    Segment,
    ce,
    cx,
    fhir_datetime,
    missing,
    unknown_code,
    xcn,
)

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
NULL_FLAVOR = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"

# table 0004 patient class -> v3 ActCode encounter class
PATIENT_CLASS = {
    "E": ("EMER", "emergency"),
    "I": ("IMP", "inpatient encounter"),
    "O": ("AMB", "ambulatory"),
    "P": ("PRENC", "pre-admission"),
    "R": ("AMB", "ambulatory"),
    "B": ("IMP", "inpatient encounter"),
    "C": ("AMB", "ambulatory"),
    "N": None,
    "U": None,
}

# trigger event -> Encounter.status (A08 keeps the stored status, see encounter_status)
STATUS_BY_EVENT = {
    "A01": "in-progress",
    "A04": "arrived",
    "A03": "finished",
    "A11": "cancelled",
    "A13": "in-progress",
}


def visit_system(institution: str) -> str:
    """The identifier system of an institution's visit numbers (就诊流水号/住院号, PV1-19)."""
    return f"urn:healthroam:visit:{institution}"


def visit_number(pv1: Segment) -> str | None:
    reps = pv1.reps(19)
    return cx(reps[0]).id if reps else None


def encounter_status(event: str, stored: dict[str, Any] | None, discharged: bool) -> str:
    if event in STATUS_BY_EVENT:
        return STATUS_BY_EVENT[event]
    if stored is not None and isinstance(stored.get("status"), str):
        return str(stored["status"])
    return "finished" if discharged else "in-progress"


def _location(pv1: Segment) -> str | None:
    reps = pv1.reps(3)
    if not reps:
        return None
    parts = [reps[0][i][0].strip() if i < len(reps[0]) else "" for i in (0, 1, 2, 6, 7)]
    # PL: point of care ^ room ^ bed ^ facility ^ status ^ type ^ building ^ floor
    text = " ".join(
        p for p in (parts[3], parts[4], parts[0], parts[1], parts[2]) if p and p != '""'
    )
    return text or None


def encounter_from_pv1(
    pv1: Segment,
    pv2: Segment | None,
    *,
    institution: str,
    patient_id: str,
    event: str,
    stored: dict[str, Any] | None,
    event_time: str | None,
    default_offset: str = "+08:00",
) -> Mapped:
    """The Encounter a PV1 describes; ``stored`` is the current version when there is one."""
    number = visit_number(pv1)
    if number is None:
        raise missing(pv1.at(19), "visit number")
    mapped = Mapped({"resourceType": "Encounter"})
    enc = mapped.resource
    enc["identifier"] = [
        {
            "use": "official",
            "type": {"coding": [{"system": V2_0203, "code": "VN"}]},
            "system": visit_system(institution),
            "value": number,
        }
    ]
    mapped.paths["Encounter.identifier"] = pv1.at(19)

    start_text = pv1.value(44)
    end_text = pv1.value(45)
    discharged = end_text is not None or event == "A03"
    enc["status"] = encounter_status(event, stored, discharged)

    patient_class = pv1.value(2)
    if patient_class is None:
        raise missing(pv1.at(2), "patient class")
    if patient_class.upper() not in PATIENT_CLASS:
        raise unknown_code(pv1.at(2), "0004")
    act = PATIENT_CLASS[patient_class.upper()]
    enc["class"] = (
        {"system": ACT_CODE, "code": act[0], "display": act[1]}
        if act
        else {"system": NULL_FLAVOR, "code": "UNK"}
    )
    mapped.paths["Encounter.class"] = pv1.at(2)
    enc["subject"] = {"reference": f"Patient/{patient_id}"}

    period: dict[str, str] = {}
    if start_text is not None:
        period["start"] = fhir_datetime(start_text, pv1.at(44), default_offset)
        mapped.paths["Encounter.period.start"] = pv1.at(44)
    elif pv2 is not None and pv2.value(8) is not None:
        period["start"] = fhir_datetime(pv2.required(8), pv2.at(8), default_offset)
        mapped.paths["Encounter.period.start"] = pv2.at(8)
    elif stored is not None and (stored.get("period") or {}).get("start"):
        period["start"] = stored["period"]["start"]
    if end_text is not None and event != "A13":
        period["end"] = fhir_datetime(end_text, pv1.at(45), default_offset)
        mapped.paths["Encounter.period.end"] = pv1.at(45)
    elif event == "A03" and event_time is not None:
        period["end"] = event_time
    if period:
        enc["period"] = period

    participants: list[dict[str, Any]] = []
    for field_no, code in ((7, "ATND"), (17, "ADM"), (8, "REF"), (9, "CON")):
        for components in pv1.reps(field_no):
            person = xcn(components)
            display = person.display
            if not display and not person.id:
                continue
            individual: dict[str, Any] = {}
            if display:
                individual["display"] = display
            if person.id:
                individual["identifier"] = {
                    "system": f"urn:healthroam:practitioner:{institution}",
                    "value": person.id,
                }
            mapped.paths[f"Encounter.participant[{len(participants)}]"] = pv1.at(field_no)
            participants.append(
                {
                    "type": [{"coding": [{"system": PARTICIPATION, "code": code}]}],
                    "individual": individual,
                }
            )
    if participants:
        enc["participant"] = participants

    where = _location(pv1)
    if where:
        enc["location"] = [{"location": {"display": where}}]
    service = pv1.value(10)
    if service:
        enc["serviceType"] = {"text": service}
    if pv2 is not None:
        reasons = [ce(r) for r in pv2.reps(3)]
        texts = [
            {"text": r.text or r.code}
            if not r.code
            else {
                "coding": [
                    {
                        "system": f"urn:healthroam:local-code:{institution}",
                        "code": r.code,
                        **({"display": r.text} if r.text else {}),
                    }
                ]
            }
            for r in reasons
            if r.code or r.text
        ]
        if texts:
            enc["reasonCode"] = texts
    hospitalization: dict[str, Any] = {}
    admit_source = pv1.value(14)
    if admit_source:
        hospitalization["admitSource"] = {"text": admit_source}
    disposition = pv1.value(36)
    if disposition:
        hospitalization["dischargeDisposition"] = {"text": disposition}
    if hospitalization:
        enc["hospitalization"] = hospitalization
    enc["serviceProvider"] = institution_reference(institution)
    return mapped
