"""HL7 v2 field readers: separators, escapes, repetitions and datatypes (no I/O)."""

from __future__ import annotations

import hl7
import pytest

from healthroam.exchange.hl7.codec import Er7Message, split_er7
from healthroam.exchange.hl7.contract import ErrorCode, Hl7Problem, Location
from healthroam.exchange.hl7.segments import (
    Message,
    Separators,
    ce,
    cx,
    fhir_date,
    fhir_datetime,
    number,
    unescape,
    xad,
    xcn,
    xpn,
    xtn,
)

SEP = Separators()
HERE = Location("PID", 1, 7)


def message(*segments: str) -> Message:
    head = "MSH|^~\\&|HIS|H001|HR|HR|20261129||ADT^A04|1|P|2.5.1"
    return Message(hl7.parse("\r".join([head, *segments])))


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("a\\F\\b", "a|b"),
        ("a\\S\\b\\T\\c", "a^b&c"),
        ("a\\R\\b", "a~b"),
        ("C:\\E\\temp", "C:\\temp"),
        ("line1\\.br\\line2", "line1\nline2"),
        ("\\H\\重要\\N\\", "重要"),
        ("\\XE4B8AD\\文", "中文"),  # UTF-8 bytes in hex
        ("\\X41\\", "A"),
        ("\\Cxxyy\\abc", "abc"),
        ("tail \\", "tail \\"),  # no closing escape: kept
        ("\\Q\\", "\\Q\\"),  # unknown escape: kept
        ("plain 张三", "plain 张三"),
    ],
)
def test_unescape(raw: str, text: str) -> None:
    assert unescape(raw, SEP) == text


def test_separators_come_from_msh() -> None:
    text = "MSH|^~\\&|A\rPID|1||x"
    assert Separators.of(split_er7(text)[0]) == Separators("|", "^", "~", "\\", "&")
    assert Message(hl7.parse(text)).sep == Message(Er7Message(text, split_er7(text))).sep


def test_a_field_read_twice_is_split_once() -> None:
    pid = message("PID|1||123^^^H001^MR~ID9").require("PID")
    assert pid.reps(3) is pid.reps(3)
    assert pid.value(3, 4) == "H001"
    assert pid.value(3, rep=1) == "ID9"


def test_repetitions_components_subcomponents_whatever_python_hl7_nested() -> None:
    msg = message('PID|1||123^^^H001^MR~ID9^^^&2.16.156.10011.1.3&ISO^NNCHN||张^三|""|19900101')
    pid = msg.require("PID")
    assert pid.reps(3)[1][3] == ["", "2.16.156.10011.1.3", "ISO"]
    assert pid.value(3) == "123"
    assert pid.value(3, 4, 2, rep=1) == "2.16.156.10011.1.3"
    assert pid.reps(7) == [[["19900101"]]]  # a plain field, same shape
    assert pid.value(6) is None  # "" is the explicit null
    assert pid.is_null(6)
    assert pid.value(99) is None
    assert pid.reps(2) == []
    assert pid.at(3, 4) == Location("PID", 1, 3, 4)


def test_segments_are_numbered_per_id() -> None:
    msg = message("OBX|1|NM", "NTE|1", "OBX|2|ST")
    assert [(s.id, s.sequence) for s in msg.segments] == [
        ("MSH", 1),
        ("OBX", 1),
        ("NTE", 1),
        ("OBX", 2),
    ]
    assert msg.msh.value(9, 2) == "A04"
    with pytest.raises(Hl7Problem) as caught:
        msg.require("PID")
    assert caught.value.error_code is ErrorCode.SEGMENT_SEQUENCE


def test_required_names_the_component() -> None:
    pid = message("PID|1||^^^H001").require("PID")
    with pytest.raises(Hl7Problem) as caught:
        pid.required(3, 1)
    assert caught.value.location == Location("PID", 1, 3)
    assert caught.value.error_code is ErrorCode.REQUIRED_FIELD_MISSING


@pytest.mark.parametrize(
    ("raw", "fhir"),
    [
        ("1990", "1990"),
        ("199003", "1990-03"),
        ("19900312", "1990-03-12"),
        ("1990031208", "1990-03-12T08:00:00+08:00"),
        ("199003120830", "1990-03-12T08:30:00+08:00"),
        ("19900312083015", "1990-03-12T08:30:15+08:00"),
        ("19900312083015.25", "1990-03-12T08:30:15.25+08:00"),
        ("19900312083015+0000", "1990-03-12T08:30:15+00:00"),
        ("19900312083015-0530", "1990-03-12T08:30:15-05:30"),
        ("19900312+0800", "1990-03-12"),
    ],
)
def test_timestamps_keep_precision_and_get_a_zone(raw: str, fhir: str) -> None:
    assert fhir_datetime(raw, HERE) == fhir


@pytest.mark.parametrize(
    "raw",
    [
        "19900230",
        "1990-03-12",
        "19901312",
        "199003122500",
        "19900312086000",
        "abc",
        "19900312+2500",
        "199",
        "1990031208301",
    ],
)
def test_bad_timestamps_are_data_type_errors(raw: str) -> None:
    with pytest.raises(Hl7Problem) as caught:
        fhir_datetime(raw, HERE)
    assert caught.value.error_code is ErrorCode.DATA_TYPE_ERROR
    assert caught.value.location == HERE
    assert raw not in caught.value.detail


def test_date_part() -> None:
    assert fhir_date("19900312083015", HERE) == "1990-03-12"


def test_numbers() -> None:
    assert number("12", HERE) == 12
    assert number("+4.50", HERE) == 4.5
    assert number("-0.3", HERE) == -0.3
    for bad in ("1e3", "NaN", "", "1,5", "Infinity"):
        with pytest.raises(Hl7Problem):
            number(bad, HERE)


def test_datatypes() -> None:
    name = xpn([["欧阳"], ["娜娜"], [""], [""], [""], [""], ["L"], ["I"]])
    assert (name.family, name.given, name.type_code, name.representation) == (
        "欧阳",
        "娜娜",
        "L",
        "I",
    )
    ident = cx([["ID9"], [""], [""], ["", "2.16.156.10011.1.3", "ISO"], ["NNCHN"]])
    assert (ident.id, ident.authority, ident.authority_oid, ident.type_code) == (
        "ID9",
        None,
        "2.16.156.10011.1.3",
        "NNCHN",
    )
    address = xad(
        [
            ["海秀路1号"],
            ["A座"],
            ["海口市"],
            ["海南省"],
            ["570100"],
            ["CHN"],
            ["H"],
            [""],
            ["460106"],
        ]
    )
    assert (address.street, address.county, address.type_code) == ("海秀路1号", "460106", "H")
    assert xtn([["13800138000"], ["PRN"], ["CP"]]).number == "13800138000"
    assert (
        xtn([[""], ["PRN"], ["PH"], [""], ["86"], ["0898"], ["66554433"]]).number == "089866554433"
    )
    assert xtn([[""], ["WPN"], ["PH"], [""], ["1"], ["0212"], ["5551234"], ["12"]]).number == (
        "+12125551234 ext 12"
    )
    assert xtn([[""], ["NET"], ["Internet"], ["a@b.cn"]]).email == "a@b.cn"
    coded = ce([["6690-2"], ["白细胞"], ["LN"], ["WBC"], ["白细胞"], ["99HNLAB"]])
    assert (coded.code, coded.system, coded.alt_code, coded.alt_system) == (
        "6690-2",
        "LN",
        "WBC",
        "99HNLAB",
    )
    doctor = xcn([["0451"], ["李"], ["建华"]])
    assert (doctor.id, doctor.display) == ("0451", "李建华")
    assert xcn([["77"], ["Smith"], ["John"], ["Q"]]).display == "John Q Smith"


def test_other_encoding_characters() -> None:
    parsed = hl7.parse(
        "MSH|*%$!|HIS|H001|HR|HR|20261129||ADT*A04|1|P|2.5.1\rPID|1||A1****MR%B2||张*三$F$x$S$y"
    )
    msg = Message(parsed)
    assert msg.sep == Separators("|", "*", "%", "$", "!")
    pid = msg.require("PID")
    assert pid.value(3, 5) == "MR"
    assert pid.value(3, rep=1) == "B2"
    assert pid.value(5, 2) == "三|x*y"  # $F$ and $S$ with this message's escape character


@pytest.mark.parametrize("raw", ["A\x00B", "A\\X00\\B", "A\\X1B\\", "\x07"])
def test_control_characters_are_refused(raw: str) -> None:
    pid = message(f"PID|1||{raw}").require("PID")
    with pytest.raises(Hl7Problem) as caught:
        pid.reps(3)
    assert caught.value.location == Location("PID", 1, 3)
    assert caught.value.error_code is ErrorCode.DATA_TYPE_ERROR
    assert message("PID|1||a\\.br\\b\tc").require("PID").value(3) == "a\nb\tc"
