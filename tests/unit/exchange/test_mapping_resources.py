"""Segment -> FHIR mappers (no I/O): patient, encounter, order, observation, report."""

from __future__ import annotations

from typing import Any

import hl7
import pytest

from healthroam.exchange.hl7.contract import ErrorCode, Hl7Problem, Location
from healthroam.exchange.hl7.mapping_encounter import encounter_from_pv1, encounter_status
from healthroam.exchange.hl7.mapping_orders import (
    coding_system,
    concept,
    local_code_system,
    order_control,
    service_request,
)
from healthroam.exchange.hl7.mapping_patient import (
    Mapped,
    find_mrn,
    merge_patient,
    mrn_system,
    patient_from_pid,
)
from healthroam.exchange.hl7.mapping_results import (
    observation_from_obx,
    reference_range,
    report_from_obr,
)
from healthroam.exchange.hl7.segments import Coded, Message, Segment
from healthroam.records.validation import validate_resource

H = "H001"


def seg(text: str) -> Segment:
    msg = Message(hl7.parse("MSH|^~\\&|HIS|H001|HR|HR|20261129||ADT^A04|1|P|2.5.1\r" + text))
    return msg.segments[1]


def patient(pid: str) -> dict[str, Any]:
    resource = patient_from_pid(seg(pid), H).resource
    validate_resource({**resource, "id": "x"}, "Patient")
    return resource


def test_mrn_choice() -> None:
    pid = seg("PID|1||ID9^^^&2.16.156.10011.1.3&ISO^NNCHN~A1^^^H001^PI~B2^^^H001^MR")
    assert find_mrn(pid.reps(3)) == "B2"
    assert find_mrn(seg("PID|1||A1^^^H001^PI").reps(3)) == "A1"
    assert find_mrn(seg("PID|1||C3").reps(3)) == "C3"
    assert find_mrn(seg("PID|1||ID9^^^^NNCHN").reps(3)) is None


def test_identifier_systems() -> None:
    resource = patient(
        "PID|1||M1^^^H001^MR~E12345678^^^CHN^PPN~99^^^&1.2.3&ISO^PN~77^^^INS^SS||张^三||19900101"
    )
    systems = [(i["system"], i["value"], i["use"]) for i in resource["identifier"]]
    assert systems == [
        (mrn_system(H), "M1", "usual"),
        ("urn:healthroam:passport", "E12345678", "official"),
        ("urn:oid:1.2.3", "99", "secondary"),
        (f"urn:healthroam:id:{H}:INS", "77", "secondary"),
    ]


def test_names_prefer_the_chinese_legal_name_as_official() -> None:
    resource = patient("PID|1||M1^^^H001^MR||ZHANG^SAN^^^^^L~张^三^^^^^L~小三^^^^^^N||19900101")
    assert [n.get("use") for n in resource["name"]] == ["usual", "official", "nickname"]
    assert resource["name"][1]["text"] == "张三"
    assert "text" not in resource["name"][0]


@pytest.mark.parametrize(
    ("code", "gender"),
    [
        ("F", "female"),
        ("m", "male"),
        ("1", "male"),
        ("2", "female"),
        ("男", "male"),
        ("U", "unknown"),
        ("O", "other"),
        ("9", "other"),
        ("N", "other"),
    ],
)
def test_sex(code: str, gender: str) -> None:
    assert patient(f"PID|1||M1^^^H001^MR||张^三||19900101|{code}")["gender"] == gender


def test_deceased_and_marital_status() -> None:
    resource = patient(
        "PID|1||M1^^^H001^MR||张^三||19900101|M||||||||40" + "|" * 13 + "202611010830"
    )
    assert resource["maritalStatus"]["coding"][0]["code"] == "D"
    assert resource["deceasedDateTime"] == "2026-11-01T08:30:00+08:00"
    flagged = patient("PID|1||M1^^^H001^MR||张^三||19900101|M" + "|" * 22 + "Y")
    assert flagged["deceasedBoolean"] is True


def test_county_code_from_pid_12_when_xad_has_none() -> None:
    resource = patient("PID|1||M1^^^H001^MR||张^三||19900101|M|||海府路1号^^海口市|460108")
    assert resource["address"][0]["district"] == "460108"


def test_locations_of_fhir_paths() -> None:
    mapped = Mapped(
        {}, {"Patient.name": Location("PID", 1, 5), "Patient.name[1]": Location("PID", 1, 5, 1)}
    )
    assert mapped.location_of("Patient.name[1].family", Location("X")) == Location("PID", 1, 5, 1)
    assert mapped.location_of("Patient.name[0]", Location("X")) == Location("PID", 1, 5)
    assert mapped.location_of("Patient.birthDate", Location("X")) == Location("X")
    assert mapped.location_of(None, Location("X")) == Location("X")


def test_merge_keeps_what_the_pid_does_not_carry() -> None:
    existing = {
        "identifier": [
            {"system": mrn_system(H), "value": "M1"},
            {"system": "urn:healthroam:insurance", "value": "Y1"},
        ],
        "extension": [{"url": "urn:x", "valueString": "kept"}],
        "link": [{"other": {"reference": "Patient/p"}, "type": "seealso"}],
        "telecom": [{"system": "phone", "value": "1"}],
        "active": False,
    }
    incoming = patient("PID|1||M1^^^H001^MR||张^三||19900101")
    merged = merge_patient(existing, incoming)
    assert merged["extension"] == existing["extension"]
    assert merged["link"] == existing["link"]
    assert merged["active"] is False
    assert "telecom" not in merged  # a PID is a snapshot of what it carries
    assert [i["system"] for i in merged["identifier"]] == [
        mrn_system(H),
        "urn:healthroam:insurance",
    ]


@pytest.mark.parametrize(
    ("event", "stored", "discharged", "status"),
    [
        ("A01", None, False, "in-progress"),
        ("A04", None, False, "arrived"),
        ("A03", None, True, "finished"),
        ("A11", {"status": "in-progress"}, False, "cancelled"),
        ("A13", {"status": "finished"}, False, "in-progress"),
        ("A08", {"status": "arrived"}, False, "arrived"),
        ("A08", None, True, "finished"),
        ("A08", None, False, "in-progress"),
    ],
)
def test_encounter_status(
    event: str, stored: dict[str, Any] | None, discharged: bool, status: str
) -> None:
    assert encounter_status(event, stored, discharged) == status


def test_encounter_classes_and_expected_admission() -> None:
    pv1 = seg("PV1|1|E|急诊^^^H001" + "|" * 16 + "V1")
    pv2 = seg("PV2||||||||20261201080000")
    mapped = encounter_from_pv1(
        pv1, pv2, institution=H, patient_id="p", event="A01", stored=None, event_time=None
    )
    enc = mapped.resource
    validate_resource({**enc, "id": "e"}, "Encounter")
    assert enc["class"]["code"] == "EMER"
    assert enc["period"] == {"start": "2026-12-01T08:00:00+08:00"}
    assert enc["location"] == [{"location": {"display": "急诊"}}]
    unknown = encounter_from_pv1(
        seg("PV1|1|U" + "|" * 17 + "V1"),
        None,
        institution=H,
        patient_id="p",
        event="A04",
        stored=None,
        event_time=None,
    )
    assert unknown.resource["class"]["code"] == "UNK"


def test_order_controls() -> None:
    assert order_control(seg("ORC|NW|1")).status == "active"
    assert order_control(seg("ORC|CA|1")).status == "revoked"
    assert order_control(seg("ORC|XO|1")).status == "active"
    assert order_control(seg("ORC|SC|1|||CM")).status == "completed"
    assert order_control(seg("ORC|SC|1|||HD")).status == "on-hold"
    with pytest.raises(Hl7Problem) as caught:
        order_control(seg("ORC|SC|1"))
    assert caught.value.location == Location("ORC", 1, 5)
    with pytest.raises(Hl7Problem) as caught:
        order_control(seg("ORC|SC|1|||ZZ"))
    assert caught.value.error_code is ErrorCode.TABLE_VALUE_NOT_FOUND


def test_service_request_without_placer_uses_filler() -> None:
    mapped, control = service_request(
        seg("ORC|NW||F77"),
        seg("OBR|1|||2345-7^葡萄糖^LN"),
        None,
        institution=H,
        patient_id="p",
        encounter_id=None,
    )
    assert control.code == "NW"
    assert mapped.resource["identifier"][0]["type"]["coding"][0]["code"] == "FILL"
    validate_resource({**mapped.resource, "id": "s"}, "ServiceRequest")


def test_code_systems() -> None:
    assert coding_system("LN", H) == "http://loinc.org"
    assert coding_system("SCT", H) == "http://snomed.info/sct"
    assert coding_system(None, H) == local_code_system(H) == f"urn:healthroam:local-code:{H}"
    assert coding_system("99HNLAB", H) == f"urn:healthroam:local-code:{H}:99HNLAB"
    # LOINC first even when sent as the alternate
    both = concept(Coded("GLU", "血糖", "L", "2345-7", "Glucose", "LN"), H)
    assert [c["system"] for c in both["coding"]] == ["http://loinc.org", local_code_system(H)]


OBR = seg("OBR|1|P1|F1|58410-2^CBC^LN|||20261129160500")


def observation(obx: str) -> dict[str, Any]:
    resource = observation_from_obx(
        seg(obx), OBR, [], institution=H, patient_id="p", encounter_id="e"
    ).resource
    validate_resource({**resource, "id": "o"}, "Observation")
    return resource


def test_observation_value_types() -> None:
    assert observation("OBX|1|NM|1-1^x^LN||>=5|mmol/L|||||F")["valueQuantity"] == {
        "value": 5,
        "unit": "mmol/L",
        "system": "http://unitsofmeasure.org",
        "code": "mmol/L",
        "comparator": ">=",
    }
    assert observation("OBX|1|NM|1-1^x^LN||7|杯|||||F")["valueQuantity"] == {
        "value": 7,
        "unit": "杯",
    }
    assert observation("OBX|1|TX|1-1^x^LN||第一行~第二行||||||F")["valueString"] == "第一行\n第二行"
    assert observation("OBX|1|FT|1-1^x^LN||a\\.br\\b||||||F")["valueString"] == "a\nb"
    assert observation("OBX|1|SN|1-1^x^LN||^1^:^128||||||F")["valueRatio"] == {
        "numerator": {"value": 1},
        "denominator": {"value": 128},
    }
    assert observation("OBX|1|SN|1-1^x^LN||^10^-^20|%|||||F")["valueRange"]["high"]["value"] == 20
    assert observation("OBX|1|DT|1-1^x^LN||20261101||||||F")["valueDateTime"] == "2026-11-01"
    assert observation("OBX|1|TM|1-1^x^LN||0830||||||F")["valueTime"] == "08:30:00"
    assert (
        observation("OBX|1|CWE|1-1^x^LN||260385009^Negative^SCT||||||F")["valueCodeableConcept"][
            "coding"
        ][0]["system"]
        == "http://snomed.info/sct"
    )
    pending = observation("OBX|1|NM|1-1^x^LN||||||||I")
    assert pending["status"] == "registered"
    assert "valueQuantity" not in pending
    assert "dataAbsentReason" not in pending
    assert observation("OBX|1|NM|1-1^x^LN||||||||F")["dataAbsentReason"]["coding"][0]["code"] == (
        "unknown"
    )
    assert (
        observation("OBX|1|NM|1-1^x^LN||3|||↑|||F")["interpretation"][0]["coding"][0]["code"] == "H"
    )
    assert observation("OBX|1|NM|1-1^x^LN||3||||||F|||20261129170000")["effectiveDateTime"] == (
        "2026-11-29T17:00:00+08:00"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3.5-9.5", {"low": 3.5, "high": 9.5}),
        ("3.5～9.5", {"low": 3.5, "high": 9.5}),
        ("<5", {"high": 5}),
        (">=1", {"low": 1}),
        ("阴性", {}),
    ],
)
def test_reference_ranges(text: str, expected: dict[str, float]) -> None:
    found = reference_range(text, [])
    assert found["text"] == text
    assert {k: v["value"] for k, v in found.items() if k != "text"} == expected


def test_report_status_defaults_from_observations() -> None:
    def status(statuses: list[str]) -> str:
        return str(
            report_from_obr(
                OBR,
                statuses,
                institution=H,
                patient_id="p",
                encounter_id=None,
                identifiers=[],
                based_on=None,
                results=[],
            ).resource["status"]
        )

    assert status(["final", "final"]) == "final"
    assert status(["final", "preliminary"]) == "preliminary"
    assert status([]) == "preliminary"
