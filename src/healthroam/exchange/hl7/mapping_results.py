"""OBR -> DiagnosticReport, OBX -> Observation (no I/O). See docs/hl7-mapping.md."""

from __future__ import annotations

import re
from typing import Any

from healthroam.exchange.hl7.mapping_orders import UCUM, concept
from healthroam.exchange.hl7.mapping_patient import Mapped, institution_reference
from healthroam.exchange.hl7.segments import (
    NULL,
    Segment,
    bad_type,
    ce,
    fhir_datetime,
    missing,
    number,
    unknown_code,
)

OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"

# table 0085 observation result status -> Observation.status
RESULT_STATUS = {
    "C": "corrected",
    "D": "entered-in-error",
    "F": "final",
    "I": "registered",
    "N": "cancelled",
    "O": "registered",
    "P": "preliminary",
    "R": "preliminary",
    "S": "preliminary",
    "U": "final",
    "W": "entered-in-error",
    "X": "cancelled",
}

# table 0123 result status (OBR-25) -> DiagnosticReport.status
REPORT_STATUS = {
    "O": "registered",
    "I": "registered",
    "S": "registered",
    "A": "partial",
    "P": "preliminary",
    "R": "preliminary",
    "N": "preliminary",
    "C": "corrected",
    "M": "corrected",
    "F": "final",
    "X": "cancelled",
    "Y": "unknown",
    "Z": "unknown",
}

# table 0078 abnormal flags -> v3 ObservationInterpretation (same code where one exists);
# arrows are what many laboratory systems in China send.
INTERPRETATION_CODES = {
    code: code
    for code in (
        "L",
        "H",
        "LL",
        "HH",
        "N",
        "A",
        "AA",
        "<",
        ">",
        "S",
        "R",
        "I",
        "U",
        "D",
        "B",
        "W",
        "MS",
        "VS",
        "POS",
        "NEG",
        "IND",
        "E",
        "EX",
        "HX",
        "LX",
        "HU",
        "LU",
        "NR",
        "QCF",
        "RR",
        "TOX",
        "WR",
        "CAR",
        "DET",
        "ND",
        "SYN-R",
        "SYN-S",
        "SDD",
        "NCL",
    )
}
INTERPRETATION_CODES.update({"↑": "H", "↓": "L", "↑↑": "HH", "↓↓": "LL", "<": "<", ">": ">"})

# unit spellings common in Chinese laboratory systems -> UCUM code
UNIT_CODES = {
    "mmol/L": "mmol/L",
    "umol/L": "umol/L",
    "μmol/L": "umol/L",
    "µmol/L": "umol/L",
    "nmol/L": "nmol/L",
    "pmol/L": "pmol/L",
    "g/L": "g/L",
    "g/dL": "g/dL",
    "mg/L": "mg/L",
    "mg/dL": "mg/dL",
    "ng/mL": "ng/mL",
    "pg/mL": "pg/mL",
    "U/L": "U/L",
    "IU/L": "[IU]/L",
    "IU/mL": "[IU]/mL",
    "mIU/L": "m[IU]/L",
    "mIU/mL": "m[IU]/mL",
    "uIU/mL": "u[IU]/mL",
    "%": "%",
    "fL": "fL",
    "fl": "fL",
    "pg": "pg",
    "10^9/L": "10*9/L",
    "10*9/L": "10*9/L",
    "×10^9/L": "10*9/L",
    "10^12/L": "10*12/L",
    "10*12/L": "10*12/L",
    "×10^12/L": "10*12/L",
    "mmHg": "mm[Hg]",
    "mm[Hg]": "mm[Hg]",
    "kg": "kg",
    "g": "g",
    "cm": "cm",
    "mm": "mm",
    "m": "m",
    "kg/m2": "kg/m2",
    "/min": "/min",
    "bpm": "/min",
    "次/分": "/min",
    "℃": "Cel",
    "°C": "Cel",
    "Cel": "Cel",
    "s": "s",
    "秒": "s",
    "mL/min": "mL/min",
    "/HPF": "/[HPF]",
    "/LPF": "/[LPF]",
    "/uL": "/uL",
    "mL": "mL",
    "L": "L",
}

_RANGE = re.compile(r"^\s*(-?[\d.]+)\s*[-~～—]\s*(-?[\d.]+)\s*$")
_LIMIT = re.compile(r"^\s*(<=|>=|<|>|≤|≥)\s*(-?[\d.]+)\s*$")
_COMPARATOR = re.compile(r"^\s*(<=|>=|<|>)\s*(-?[\d.]+)\s*$")


def quantity(value: int | float, unit_reps: list[list[list[str]]]) -> dict[str, Any]:
    out: dict[str, Any] = {"value": value}
    if not unit_reps:
        return out
    unit = ce(unit_reps[0])
    label = unit.code or unit.text
    if label:
        out["unit"] = unit.text or label
    system = (unit.system or "").upper()
    if unit.code and system in ("UCUM", "ANS+"):
        out["system"], out["code"] = UCUM, unit.code
    elif unit.code and unit.code in UNIT_CODES and not system:
        out["system"], out["code"] = UCUM, UNIT_CODES[unit.code]
    return out


def _float(text: str) -> int | float:
    return int(text) if re.fullmatch(r"-?\d+", text) else float(text)


def reference_range(text: str, unit_reps: list[list[list[str]]]) -> dict[str, Any]:
    def q(value: str) -> dict[str, Any]:
        return quantity(_float(value), unit_reps)

    try:
        both = _RANGE.match(text)
        if both:
            return {"low": q(both.group(1)), "high": q(both.group(2)), "text": text}
        limit = _LIMIT.match(text)
        if limit:
            side = "high" if limit.group(1) in ("<", "<=", "≤") else "low"
            return {side: q(limit.group(2)), "text": text}
    except ValueError:
        pass
    return {"text": text}


def structured_numeric(obx: Segment, unit_reps: list[list[list[str]]]) -> dict[str, Any]:
    """SN: comparator ^ num1 ^ separator/suffix ^ num2."""
    reps = obx.reps(5)
    parts = [c[0].strip() for c in reps[0]] + ["", "", "", ""]
    comparator, first, separator, second = parts[0], parts[1], parts[2], parts[3]
    where = obx.at(5)
    if not first:
        raise bad_type(where, "is not a structured numeric value (SN)")
    one = number(first, where)
    if separator in ("-",) and second:
        return {
            "valueRange": {
                "low": quantity(one, unit_reps),
                "high": quantity(number(second, where), unit_reps),
            }
        }
    if separator in (":", "/") and second:
        return {
            "valueRatio": {
                "numerator": {"value": one},
                "denominator": {"value": number(second, where)},
            }
        }
    if separator or second:
        raise bad_type(where, "is not a structured numeric value (SN)")
    q = quantity(one, unit_reps)
    if comparator:
        if comparator not in ("<", "<=", ">", ">="):
            raise bad_type(obx.at(5, 1), "is not a comparator (<, <=, >, >=)")
        q["comparator"] = comparator
    return {"valueQuantity": q}


def observation_value(
    obx: Segment, institution: str, default_offset: str = "+08:00"
) -> dict[str, Any]:
    """value[x] from OBX-2 (value type) and OBX-5 (value, repetitions for text)."""
    value_type = (obx.value(2) or "").upper()
    reps = obx.reps(5)
    if not reps or obx.text(5).strip() in ("", NULL):
        return {}
    if not value_type:
        raise missing(obx.at(2), "value type")
    unit_reps = obx.reps(6)
    where = obx.at(5)
    if value_type == "NM":
        text = obx.required(5)
        comparator = _COMPARATOR.match(text)
        if comparator:
            q = quantity(number(comparator.group(2), where), unit_reps)
            q["comparator"] = comparator.group(1)
            return {"valueQuantity": q}
        return {"valueQuantity": quantity(number(text, where), unit_reps)}
    if value_type in ("ST", "TX", "FT"):
        texts = [
            obx.sep.component.join(c[0] for c in rep) if len(rep) > 1 else rep[0][0] for rep in reps
        ]
        return {"valueString": "\n".join(t for t in texts if t)}
    if value_type in ("CE", "CWE", "CNE"):
        value = concept(ce(reps[0]), institution)
        return {"valueCodeableConcept": value} if value else {}
    if value_type == "SN":
        return structured_numeric(obx, unit_reps)
    if value_type in ("DT", "TS", "DTM"):
        return {"valueDateTime": fhir_datetime(obx.required(5), where, default_offset)}
    if value_type == "TM":
        text = obx.required(5)
        if not re.fullmatch(r"\d{4}(\d{2})?", text):
            raise bad_type(where, "is not an HL7 time (HHMM[SS])")
        hours, minutes, seconds = text[0:2], text[2:4], text[4:6] or "00"
        if int(hours) > 23 or int(minutes) > 59 or int(seconds) > 59:
            raise bad_type(where, "is not a real time of day")
        return {"valueTime": f"{hours}:{minutes}:{seconds}"}
    raise unknown_code(obx.at(2), "0125")


def _status(seg: Segment, field_no: int, table: dict[str, str], name: str) -> str | None:
    code = seg.value(field_no)
    if code is None:
        return None
    if code.upper() not in table:
        raise unknown_code(seg.at(field_no), name)
    return table[code.upper()]


def observation_from_obx(
    obx: Segment,
    obr: Segment,
    notes: list[str],
    *,
    institution: str,
    patient_id: str,
    encounter_id: str | None,
    default_offset: str = "+08:00",
) -> Mapped:
    mapped = Mapped({"resourceType": "Observation"})
    obs = mapped.resource
    status = _status(obx, 11, RESULT_STATUS, "0085")
    if status is None:
        raise missing(obx.at(11), "observation result status")
    obs["status"] = status
    mapped.paths["Observation.status"] = obx.at(11)
    obs["category"] = [
        {
            "coding": [
                {"system": OBSERVATION_CATEGORY, "code": "laboratory", "display": "Laboratory"}
            ]
        }
    ]
    code_reps = obx.reps(3)
    code = concept(ce(code_reps[0]), institution) if code_reps else {}
    if not code:
        raise missing(obx.at(3), "observation identifier")
    obs["code"] = code
    mapped.paths["Observation.code"] = obx.at(3)
    obs["subject"] = {"reference": f"Patient/{patient_id}"}
    if encounter_id:
        obs["encounter"] = {"reference": f"Encounter/{encounter_id}"}
    effective = obx.value(14)
    if effective is not None:
        obs["effectiveDateTime"] = fhir_datetime(effective, obx.at(14), default_offset)
        mapped.paths["Observation.effectiveDateTime"] = obx.at(14)
    elif obr.value(7) is not None:
        obs["effectiveDateTime"] = fhir_datetime(obr.required(7), obr.at(7), default_offset)
        mapped.paths["Observation.effectiveDateTime"] = obr.at(7)
    obs["performer"] = [institution_reference(institution)]
    value = observation_value(obx, institution, default_offset)
    for key in value:
        mapped.paths[f"Observation.{key}"] = obx.at(5)
        for unit_part in ("unit", "system", "code"):  # the quantity's unit came from OBX-6
            mapped.paths[f"Observation.{key}.{unit_part}"] = obx.at(6)
    obs.update(value)
    if not value and status not in ("cancelled", "entered-in-error", "registered"):
        obs["dataAbsentReason"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                    "code": "unknown",
                }
            ]
        }
    flags = []
    for rep in obx.reps(8):
        flag = rep[0][0].strip()
        if not flag:
            continue
        code_value = INTERPRETATION_CODES.get(flag.upper(), INTERPRETATION_CODES.get(flag))
        if code_value is None:
            raise unknown_code(obx.at(8), "0078")
        flags.append({"coding": [{"system": INTERPRETATION, "code": code_value}]})
    if flags:
        obs["interpretation"] = flags
        mapped.paths["Observation.interpretation"] = obx.at(8)
    range_text = obx.value(7)
    if range_text:
        obs["referenceRange"] = [reference_range(range_text, obx.reps(6))]
        mapped.paths["Observation.referenceRange"] = obx.at(7)
    if notes:
        obs["note"] = [{"text": n} for n in notes]
    return mapped


def report_from_obr(
    obr: Segment,
    statuses: list[str],
    *,
    institution: str,
    patient_id: str,
    encounter_id: str | None,
    identifiers: list[dict[str, Any]],
    based_on: str | None,
    results: list[str],
    default_offset: str = "+08:00",
) -> Mapped:
    """The DiagnosticReport of one OBR; ``statuses`` are its Observations' (for a missing
    OBR-25: final when every one is final, else preliminary)."""
    mapped = Mapped({"resourceType": "DiagnosticReport"})
    rep = mapped.resource
    rep["identifier"] = identifiers
    mapped.paths["DiagnosticReport.identifier"] = obr.at(3)
    if based_on:
        rep["basedOn"] = [{"reference": f"ServiceRequest/{based_on}"}]
    status = _status(obr, 25, REPORT_STATUS, "0123")
    if status is None:
        status = "final" if statuses and all(s == "final" for s in statuses) else "preliminary"
    rep["status"] = status
    mapped.paths["DiagnosticReport.status"] = obr.at(25)
    section = obr.value(24)
    category: dict[str, Any] = {"coding": [{"system": V2_0074, "code": (section or "LAB").upper()}]}
    rep["category"] = [category]
    reps = obr.reps(4)
    code = concept(ce(reps[0]), institution) if reps else {}
    if not code:
        raise missing(obr.at(4), "universal service identifier")
    rep["code"] = code
    mapped.paths["DiagnosticReport.code"] = obr.at(4)
    rep["subject"] = {"reference": f"Patient/{patient_id}"}
    if encounter_id:
        rep["encounter"] = {"reference": f"Encounter/{encounter_id}"}
    observed = obr.value(7)
    if observed is not None:
        rep["effectiveDateTime"] = fhir_datetime(observed, obr.at(7), default_offset)
        mapped.paths["DiagnosticReport.effectiveDateTime"] = obr.at(7)
    reported = obr.value(22)
    if reported is not None:
        issued = fhir_datetime(reported, obr.at(22), default_offset)
        if len(issued) >= 19:  # an instant needs seconds and a zone
            rep["issued"] = issued
            mapped.paths["DiagnosticReport.issued"] = obr.at(22)
    rep["performer"] = [institution_reference(institution)]
    if results:
        rep["result"] = [{"reference": f"Observation/{r}"} for r in results]
    return mapped
