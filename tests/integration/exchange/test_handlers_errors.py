"""Every bad input is an Hl7Problem naming the segment, field (and component) and the
HL7 table 0357 condition; nothing is written (the transaction rolls back)."""

from __future__ import annotations

import pytest

from healthroam.exchange.hl7.contract import AckCode, ErrorCode, Hl7Problem, Location
from healthroam.exchange.hl7.handlers import patient_id_for
from healthroam.records.repository import ResourceRepository

from hl7_helpers import HOSPITAL, Gateway, sample

A04 = sample("adt_a04_register.hl7")
A01 = sample("adt_a01_admit.hl7")
ORU = sample("oru_r01_results.hl7")
ORM = sample("orm_o01_new.hl7")
PID_LINE = next(line for line in A01.split("\r") if line.startswith("PID"))
PV1_LINE = next(line for line in A01.split("\r") if line.startswith("PV1"))


def replace_segment(text: str, prefix: str, new: str, nth: int = 1) -> str:
    lines = text.split("\r")
    seen = 0
    for index, line in enumerate(lines):
        if line.startswith(prefix + "|"):
            seen += 1
            if seen == nth:
                lines[index] = new
                return "\r".join(lines)
    raise AssertionError(f"no {prefix} #{nth}")


def set_field(text: str, segment: str, field: int, value: str, nth: int = 1) -> str:
    line = [ln for ln in text.split("\r") if ln.startswith(segment + "|")][nth - 1]
    parts = line.split("|")
    index = field if segment != "MSH" else field - 1
    parts.extend([""] * (index + 1 - len(parts)))
    parts[index] = value
    return replace_segment(text, segment, "|".join(parts), nth)


def refused(gateway: Gateway, text: str) -> Hl7Problem:
    with pytest.raises(Hl7Problem) as caught:
        gateway.send(text)
    return caught.value


CASES = [
    # (message, segment, sequence, field, component, condition)
    (set_field(A04, "MSH", 9, "SIU^S12"), "MSH", 1, 9, 1, ErrorCode.UNSUPPORTED_MESSAGE_TYPE),
    (set_field(A04, "MSH", 9, "ADT^A99"), "MSH", 1, 9, 2, ErrorCode.UNSUPPORTED_EVENT),
    (set_field(A04, "MSH", 9, "ADT^A04^ORU_R01"), "MSH", 1, 9, 2, ErrorCode.UNSUPPORTED_EVENT),
    (
        set_field(A04, "PID", 3, "460106198503120027^^^&2.16.156.10011.1.3&ISO^NNCHN"),
        "PID",
        1,
        3,
        0,
        ErrorCode.REQUIRED_FIELD_MISSING,
    ),
    (set_field(A04, "PID", 5, ""), "PID", 1, 5, 0, ErrorCode.REQUIRED_FIELD_MISSING),
    (set_field(A04, "PID", 7, "19851332"), "PID", 1, 7, 0, ErrorCode.DATA_TYPE_ERROR),
    (set_field(A04, "PID", 7, "1985-03-12"), "PID", 1, 7, 0, ErrorCode.DATA_TYPE_ERROR),
    (set_field(A04, "PID", 7, "20991231"), "PID", 1, 7, 0, ErrorCode.DATA_TYPE_ERROR),
    (set_field(A04, "PID", 8, "X"), "PID", 1, 8, 0, ErrorCode.TABLE_VALUE_NOT_FOUND),
    (set_field(A04, "PID", 16, "Q"), "PID", 1, 16, 0, ErrorCode.TABLE_VALUE_NOT_FOUND),
    (set_field(A04, "PID", 5, "王^秀英^^^^^Q"), "PID", 1, 5, 7, ErrorCode.TABLE_VALUE_NOT_FOUND),
    (
        set_field(A04, "PID", 3, "00012345^^^H001^MR~460106198503120028^^^^NNCHN"),
        "PID",
        1,
        3,
        0,
        ErrorCode.DATA_TYPE_ERROR,
    ),  # check digit, found by the registry
    (set_field(A04, "PID", 29, "2026113"), "PID", 1, 29, 0, ErrorCode.DATA_TYPE_ERROR),
    (set_field(A01, "PV1", 19, ""), "PV1", 1, 19, 0, ErrorCode.REQUIRED_FIELD_MISSING),
    (set_field(A01, "PV1", 2, "Z"), "PV1", 1, 2, 0, ErrorCode.TABLE_VALUE_NOT_FOUND),
    (set_field(A01, "PV1", 2, ""), "PV1", 1, 2, 0, ErrorCode.REQUIRED_FIELD_MISSING),
    (set_field(A01, "PV1", 44, "20261129256000"), "PV1", 1, 44, 0, ErrorCode.DATA_TYPE_ERROR),
    ("\r".join(A01.split("\r")[:3]), "PV1", 1, 0, 0, ErrorCode.SEGMENT_SEQUENCE),
    (sample("adt_a11_cancel_admit.hl7"), "PV1", 1, 19, 0, ErrorCode.UNKNOWN_KEY),
    (sample("adt_a40_merge.hl7"), "MRG", 1, 1, 0, ErrorCode.UNKNOWN_KEY),
    (
        set_field(sample("adt_a40_merge.hl7"), "MRG", 1, ""),
        "MRG",
        1,
        1,
        0,
        ErrorCode.REQUIRED_FIELD_MISSING,
    ),
    (
        "\r".join(sample("adt_a40_merge.hl7").split("\r")[:3]),
        "MRG",
        1,
        0,
        0,
        ErrorCode.SEGMENT_SEQUENCE,
    ),
    (set_field(ORM, "ORC", 1, "ZZ"), "ORC", 1, 1, 0, ErrorCode.TABLE_VALUE_NOT_FOUND),
    (set_field(ORM, "ORC", 1, ""), "ORC", 1, 1, 0, ErrorCode.REQUIRED_FIELD_MISSING),
    (set_field(ORM, "ORC", 9, "yesterday"), "ORC", 1, 9, 0, ErrorCode.DATA_TYPE_ERROR),
    (sample("orm_o01_cancel.hl7"), "ORC", 1, 2, 0, ErrorCode.UNKNOWN_KEY),
    (set_field(ORM, "OBR", 4, ""), "OBR", 1, 4, 0, ErrorCode.REQUIRED_FIELD_MISSING),
    (
        set_field(set_field(ORM, "ORC", 2, ""), "OBR", 2, ""),
        "ORC",
        1,
        2,
        0,
        ErrorCode.REQUIRED_FIELD_MISSING,
    ),
    (set_field(ORM, "OBR", 27, "^^^^^Q"), "OBR", 1, 27, 6, ErrorCode.TABLE_VALUE_NOT_FOUND),
    (set_field(ORU, "OBX", 2, "ED", nth=2), "OBX", 2, 2, 0, ErrorCode.TABLE_VALUE_NOT_FOUND),
    (set_field(ORU, "OBX", 5, "abc", nth=1), "OBX", 1, 5, 0, ErrorCode.DATA_TYPE_ERROR),
    (set_field(ORU, "OBX", 11, "", nth=3), "OBX", 3, 11, 0, ErrorCode.REQUIRED_FIELD_MISSING),
    (set_field(ORU, "OBX", 11, "Q", nth=3), "OBX", 3, 11, 0, ErrorCode.TABLE_VALUE_NOT_FOUND),
    (set_field(ORU, "OBX", 8, "ZZ", nth=1), "OBX", 1, 8, 0, ErrorCode.TABLE_VALUE_NOT_FOUND),
    (set_field(ORU, "OBX", 14, "20261340", nth=2), "OBX", 2, 14, 0, ErrorCode.DATA_TYPE_ERROR),
    (set_field(ORU, "OBX", 3, "", nth=4), "OBX", 4, 3, 0, ErrorCode.REQUIRED_FIELD_MISSING),
    (set_field(ORU, "OBX", 5, "!^0.05", nth=5), "OBX", 5, 5, 1, ErrorCode.DATA_TYPE_ERROR),
    (set_field(ORU, "OBR", 25, "Q"), "OBR", 1, 25, 0, ErrorCode.TABLE_VALUE_NOT_FOUND),
    (
        set_field(set_field(ORU, "OBR", 3, ""), "OBR", 2, "").replace(
            "ORC|RE|ORD-778899^HIS|LAB-20261129-0042^LIS\r", ""
        ),
        "OBR",
        1,
        3,
        0,
        ErrorCode.REQUIRED_FIELD_MISSING,
    ),
    (replace_segment(ORU, "PID", "PV1|1|I"), "PID", 1, 0, 0, ErrorCode.SEGMENT_SEQUENCE),
    # refused by FHIR validation (a code with two spaces), reported at the HL7 field
    (
        set_field(ORU, "OBX", 3, "AB  CD^x^99HNLAB", nth=2),
        "OBX",
        2,
        3,
        0,
        ErrorCode.DATA_TYPE_ERROR,
    ),
    (set_field(ORU, "OBX", 6, "g  L^^UCUM", nth=2), "OBX", 2, 6, 0, ErrorCode.DATA_TYPE_ERROR),
    (set_field(ORM, "OBR", 4, "58410  2^x^LN"), "OBR", 1, 4, 0, ErrorCode.DATA_TYPE_ERROR),
]


@pytest.mark.parametrize(
    ("text", "segment", "sequence", "field", "component", "condition"),
    CASES,
    ids=[f"{c[1]}[{c[2]}]-{c[3]}.{c[4]}-{c[5].name}" for c in CASES],
)
def test_bad_input_names_its_location(
    gateway: Gateway,
    text: str,
    segment: str,
    sequence: int,
    field: int,
    component: int,
    condition: ErrorCode,
) -> None:
    problem = refused(gateway, text)
    assert problem.error_code is condition, problem.detail
    assert problem.location == Location(segment, sequence, field, component), problem.detail
    expected_ack = (
        AckCode.REJECT
        if condition in (ErrorCode.UNSUPPORTED_MESSAGE_TYPE, ErrorCode.UNSUPPORTED_EVENT)
        else AckCode.ERROR
    )
    assert problem.ack is expected_ack
    assert "王" not in problem.detail
    assert "460106" not in problem.detail
    with gateway.platform.db.transaction() as conn:
        stored, _ = ResourceRepository(conn).read("Patient", patient_id_for(HOSPITAL, "00012345"))
    assert stored is None  # rolled back with the transaction


def test_a_failing_observation_rolls_back_the_patient_registered_before_it(
    gateway: Gateway,
) -> None:
    problem = refused(gateway, set_field(ORU, "OBX", 5, "abc", nth=2))
    assert problem.location == Location("OBX", 2, 5)
    assert problem.expression == "OBX[2]-5"
