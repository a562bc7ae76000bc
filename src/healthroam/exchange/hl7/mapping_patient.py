"""PID -> FHIR Patient (no I/O). See docs/hl7-mapping.md for the table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from healthroam.exchange.hl7.contract import Location
from healthroam.exchange.hl7.segments import (
    Components,
    Cx,
    Segment,
    cx,
    display_name,
    fhir_date,
    fhir_datetime,
    is_han,
    missing,
    unknown_code,
    xad,
    xpn,
    xtn,
)
from healthroam.registry.model import NATIONAL_ID_SYSTEM

NATIONAL_ID_OID = NATIONAL_ID_SYSTEM.removeprefix("urn:oid:")
PASSPORT_SYSTEM = "urn:healthroam:passport"
INSTITUTION_SYSTEM = "urn:healthroam:institution"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
MARITAL_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"
NULL_FLAVOR = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"

MRN_TYPES = ("MR", "PI", "PT")  # table 0203: medical record, patient internal, patient external
NATIONAL_TYPES = frozenset({"NNCHN", "NI"})  # table 0203 NN + ISO 3166 "CHN"; national unique id


def mrn_system(institution: str) -> str:
    """The identifier system of an institution's medical record numbers (病案号/门诊号).

    The same system a FHIR client of that institution puts in ``Patient.identifier`` for its
    MRN, so a Patient written over FHIR and one written over HL7 v2 are the same resource."""
    return f"urn:healthroam:mrn:{institution}"


def institution_reference(institution: str) -> dict[str, Any]:
    return {"identifier": {"system": INSTITUTION_SYSTEM, "value": institution}}


@dataclass(slots=True)
class Mapped:
    """A FHIR resource built from segments, and where each element came from."""

    resource: dict[str, Any]
    paths: dict[str, Location] = field(default_factory=dict)  # FHIR path prefix -> HL7 location

    def location_of(self, expression: str | None, default: Location) -> Location:
        """The HL7 location of the longest mapped prefix of a FHIR expression."""
        if not expression:
            return default
        best: tuple[int, Location] | None = None
        for prefix, location in self.paths.items():
            if (
                expression == prefix
                or expression.startswith(prefix + ".")
                or expression.startswith(prefix + "[")
            ) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), location)
        return best[1] if best else default


def is_national(identifier: Cx) -> bool:
    return identifier.authority_oid == NATIONAL_ID_OID or (identifier.type_code or "") in (
        NATIONAL_TYPES
    )


def find_mrn(reps: list[Components]) -> str | None:
    """The MRN among CX repetitions: the first typed MR, else PI, else PT, else the first
    untyped one that is not the national ID."""
    ids = [cx(r) for r in reps]
    for wanted in MRN_TYPES:
        for ident in ids:
            if ident.id and ident.type_code == wanted:
                return ident.id
    for ident in ids:
        if ident.id and ident.type_code is None and not is_national(ident):
            return ident.id
    return None


def patient_mrn(pid: Segment) -> str:
    mrn = find_mrn(pid.reps(3))
    if mrn is None:
        raise missing(pid.at(3), "a medical record number, CX.5 = MR")
    return mrn


def _identifier(ident: Cx, institution: str, mrn: str) -> dict[str, Any] | None:
    if ident.id is None:
        return None
    code = ident.type_code
    if is_national(ident):
        system, use = NATIONAL_ID_SYSTEM, "official"
    elif ident.id == mrn and (code in MRN_TYPES or code is None):
        system, use = mrn_system(institution), "usual"
    elif code == "PPN":
        system, use = PASSPORT_SYSTEM, "official"
    elif ident.authority_oid and (ident.authority_type or "").upper() == "ISO":
        system, use = f"urn:oid:{ident.authority_oid}", "secondary"
    else:
        label = ident.authority or code or "id"
        system, use = f"urn:healthroam:id:{institution}:{label}", "secondary"
    out: dict[str, Any] = {"use": use, "system": system, "value": ident.id}
    if code:
        out["type"] = {"coding": [{"system": V2_0203, "code": code}]}
    return out


# table 0200 name type -> FHIR name use
NAME_USE = {
    "L": "official",
    "R": "official",
    "C": "official",
    "A": "usual",
    "D": "usual",
    "T": "usual",
    "B": "maiden",
    "M": "maiden",
    "N": "nickname",
    "S": "anonymous",
    "I": "anonymous",
    "P": "usual",
    "U": None,
}

# table 0001 (and GB/T 2261.1 codes, and 男/女, which hospital systems in China send in PID-8)
GENDER = {
    "F": "female",
    "M": "male",
    "O": "other",
    "A": "other",
    "U": "unknown",
    "N": "other",  # not applicable: as the registry reads it (docs/registry-normalisation.md)
    "1": "male",
    "2": "female",
    "0": "unknown",
    "9": "other",  # 未说明的性别
    "男": "male",
    "女": "female",
}

# table 0002 (and GB/T 2261.2 codes) -> v3 MaritalStatus
MARITAL = {
    "M": "M",
    "S": "S",
    "D": "D",
    "W": "W",
    "A": "L",  # separated
    "E": "L",  # legally separated
    "N": "A",  # annulled
    "I": "I",
    "P": "T",
    "R": "T",
    "C": "T",
    "G": "T",
    "B": "U",
    "U": "UNK",
    "O": "UNK",
    "T": "UNK",
    "10": "S",
    "20": "M",
    "21": "M",
    "22": "M",
    "23": "M",
    "30": "W",
    "40": "D",
    "90": "UNK",
}

# table 0190 address type -> (use, type)
ADDRESS_USE = {
    "H": ("home", None),
    "P": ("home", None),
    "L": ("home", None),
    "C": ("temp", None),
    "B": ("work", None),
    "O": ("work", None),
    "M": (None, "postal"),
    "BA": ("old", None),
    "BR": (None, None),
    "N": (None, None),
    "F": (None, None),
    "RH": ("home", None),
    "BDL": (None, "physical"),
}


def _names(pid: Segment) -> list[dict[str, Any]]:
    names: list[dict[str, Any]] = []
    for index, components in enumerate(pid.reps(5)):
        name = xpn(components)
        if not (name.family or name.given):
            continue
        entry: dict[str, Any] = {}
        if name.type_code is not None:
            if name.type_code not in NAME_USE:
                raise unknown_code(pid.at(5, 7), "0200")
            use = NAME_USE[name.type_code]
            if use:
                entry["use"] = use
        text = display_name(name)
        if text and is_han(text):
            entry["text"] = text
        if name.family:
            entry["family"] = name.family
        given = [g for g in (name.given, name.middle) if g]
        if given:
            entry["given"] = given
        if name.prefix:
            entry["prefix"] = [name.prefix]
        if name.suffix:
            entry["suffix"] = [name.suffix]
        entry["_index"] = index
        names.append(entry)
    officials = [n for n in names if n.get("use") == "official"]
    if len(officials) > 1:
        # The registry reads the first official name: prefer the one written in Chinese.
        keep = next((n for n in officials if is_han(n.get("text"))), officials[0])
        for other in officials:
            if other is not keep:
                other["use"] = "usual"
    return names


def _telecoms(pid: Segment, field_no: int, default_use: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for components in pid.reps(field_no):
        tel = xtn(components)
        equipment = (tel.equipment or "").upper()
        if tel.email or tel.use_code == "NET" or equipment == "INTERNET":
            value = tel.email or tel.number
            if value:
                out.append({"system": "email", "value": value, "use": default_use})
            continue
        if not tel.number:
            continue
        system = {"FX": "fax", "BP": "pager"}.get(equipment, "phone")
        use = "mobile" if equipment == "CP" else default_use
        if tel.use_code == "WPN":
            use = "work"
        out.append({"system": system, "value": tel.number, "use": use})
    return out


def _addresses(pid: Segment) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    county_fallback = pid.value(12)  # PID-12 county code (v2.3-2.5)
    for components in pid.reps(11):
        addr = xad(components)
        entry: dict[str, Any] = {}
        if addr.type_code is not None:
            if addr.type_code not in ADDRESS_USE:
                raise unknown_code(pid.at(11, 7), "0190")
            use, kind = ADDRESS_USE[addr.type_code]
            if use:
                entry["use"] = use
            if kind:
                entry["type"] = kind
        lines = [p for p in (addr.street, addr.other) if p]
        if lines:
            entry["line"] = lines
        for key, value in (
            ("city", addr.city),
            ("district", addr.county or county_fallback),
            ("state", addr.state),
            ("postalCode", addr.postal_code),
            ("country", addr.country),
        ):
            if value:
                entry[key] = value
        if set(entry) - {"use", "type"}:
            out.append(entry)
    return out


def patient_from_pid(pid: Segment, institution: str, default_offset: str = "+08:00") -> Mapped:
    """The Patient the PID describes, as the sending institution knows them."""
    mrn = patient_mrn(pid)
    mapped = Mapped({"resourceType": "Patient", "active": True})
    patient = mapped.resource
    identifiers: list[dict[str, Any]] = []
    for components in pid.reps(3):
        built = _identifier(cx(components), institution, mrn)
        if built is not None and all(
            (i["system"], i["value"]) != (built["system"], built["value"]) for i in identifiers
        ):
            mapped.paths[f"Patient.identifier[{len(identifiers)}]"] = pid.at(3)
            identifiers.append(built)
    patient["identifier"] = identifiers

    names = _names(pid)
    if not names:
        raise missing(pid.at(5), "patient name")
    for position, name in enumerate(names):
        mapped.paths[f"Patient.name[{position}]"] = pid.at(5)
        del name["_index"]
    patient["name"] = names
    mapped.paths["Patient.name"] = pid.at(5)

    sex = pid.value(8)
    if sex is not None:
        if sex.upper() not in GENDER and sex not in GENDER:
            raise unknown_code(pid.at(8), "0001")
        patient["gender"] = GENDER.get(sex.upper(), GENDER.get(sex))
        mapped.paths["Patient.gender"] = pid.at(8)

    born = pid.value(7)
    if born is not None:
        patient["birthDate"] = fhir_date(born, pid.at(7))
        mapped.paths["Patient.birthDate"] = pid.at(7)

    telecom = _telecoms(pid, 13, "home") + _telecoms(pid, 14, "work")
    for position in range(len(telecom)):
        mapped.paths[f"Patient.telecom[{position}]"] = pid.at(13)
    if telecom:
        patient["telecom"] = telecom

    addresses = _addresses(pid)
    for position in range(len(addresses)):
        mapped.paths[f"Patient.address[{position}]"] = pid.at(11)
    if addresses:
        patient["address"] = addresses

    marital = pid.value(16)
    if marital is not None:
        code = MARITAL.get(marital.upper())
        if code is None:
            raise unknown_code(pid.at(16), "0002")
        system = NULL_FLAVOR if code == "UNK" else MARITAL_SYSTEM
        patient["maritalStatus"] = {"coding": [{"system": system, "code": code}]}
        mapped.paths["Patient.maritalStatus"] = pid.at(16)

    died = pid.value(29)
    if died is not None:
        patient["deceasedDateTime"] = fhir_datetime(died, pid.at(29), default_offset)
        mapped.paths["Patient.deceasedDateTime"] = pid.at(29)
    elif (pid.value(30) or "").upper() == "Y":
        patient["deceasedBoolean"] = True
    patient["managingOrganization"] = institution_reference(institution)
    return mapped


# Elements of a Patient that the PID carries: an update replaces these and keeps the rest.
PID_ELEMENTS = (
    "name",
    "gender",
    "birthDate",
    "telecom",
    "address",
    "maritalStatus",
    "deceasedDateTime",
    "deceasedBoolean",
    "managingOrganization",
)


def merge_patient(existing: dict[str, Any], incoming: dict[str, Any]) -> dict[str, Any]:
    """A PID applied to a stored Patient: PID elements replaced (snapshot semantics), other
    elements kept (links, extensions a FHIR client wrote), identifiers of systems the message
    does not carry kept after the message's own."""
    merged = {k: v for k, v in existing.items() if k not in PID_ELEMENTS and k != "meta"}
    for key in PID_ELEMENTS:
        if key in incoming:
            merged[key] = incoming[key]
    sent = incoming.get("identifier") or []
    systems = {i["system"] for i in sent}
    kept = [i for i in existing.get("identifier") or [] if i.get("system") not in systems]
    merged["identifier"] = [*sent, *kept]
    merged["resourceType"] = "Patient"
    merged.setdefault("active", True)
    return merged
