"""Character sets, header reading, parsing and ACK building (no database, no sockets)."""

from __future__ import annotations

from datetime import UTC, datetime

import hl7
import pytest
from hypothesis import given
from hypothesis import strategies as st

from healthroam.exchange.hl7.codec import (
    AckContent,
    Delimiters,
    build_ack,
    charset_codec,
    check_header,
    decode,
    lenient_header,
    parse,
    read_header,
)
from healthroam.exchange.hl7.contract import (
    AckCode,
    ErrorCode,
    Hl7Problem,
    Location,
    Note,
    Severity,
)
from hl7_testkit import oru

NOW = datetime(2026, 11, 29, 10, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("label", "codec"),
    [
        ("ASCII", "ascii"),
        ("8859/1", "latin-1"),
        ("UNICODE UTF-8", "utf-8"),
        ("UTF-8", "utf-8"),
        ("GB 18030-2000", "gb18030"),
        ("GB18030", "gb18030"),
        ("gb 18030-2000 ", "gb18030"),
        ("UNICODE", None),  # UCS-2 is not ASCII-compatible: MSH could not be read
        ("ISO IR87", None),
    ],
)
def test_charset_labels(label: str, codec: str | None) -> None:
    assert charset_codec(label) == codec


def test_msh18_read_from_bytes_then_whole_message_decoded() -> None:
    raw = oru("C1", charset="GB 18030-2000", family="欧阳", given="娜娜").encode("gb18030")
    decoded = decode(raw, "UNICODE UTF-8")
    assert (decoded.charset, decoded.codec) == ("GB 18030-2000", "gb18030")
    assert "欧阳^娜娜" in decoded.text
    empty = decode(oru("C2", charset="").encode(), "UNICODE UTF-8")
    assert (empty.charset, empty.codec) == ("", "utf-8")
    assert decode(oru("C3", charset="").encode("gb18030"), "GB18030").codec == "gb18030"


def test_undecodable_bytes_name_msh18_and_the_reason() -> None:
    raw = oru("C1", charset="UNICODE UTF-8", family="欧阳").encode("gb18030")
    with pytest.raises(Hl7Problem) as caught:
        decode(raw, "UNICODE UTF-8")
    problem = caught.value
    assert str(problem.location) == "MSH-18"
    assert problem.ack is AckCode.REJECT
    assert "not valid UNICODE UTF-8" in problem.detail


def test_segment_separators_are_normalised() -> None:
    text = oru("C1").replace("\r", "\r\n")
    decoded = decode(text.encode(), "UTF-8")
    assert "\n" not in decoded.text
    assert len(parse(decoded)) == 4


def test_delimiters_from_msh1_msh2_are_honoured() -> None:
    decoded = decode(oru("C1", delimiters="#$*%@", values=("a%F%b",)).encode(), "UTF-8")
    assert decoded.header.delimiters == Delimiters("#", "$", "*", "%", "@")
    assert decoded.header.control_id == "C1"
    assert (decoded.header.message_type, decoded.header.trigger_event) == ("ORU", "R01")
    message = parse(decoded)
    obx = message.segment("OBX")
    assert message.unescape(str(obx(5))) == "a#b"  # %F% is the field separator, escaped
    assert str(message.segment("PID")(5)(1)(2)) == "阿妹"


@pytest.mark.parametrize("bad", ["MSH|^^~\\|", "MSH|^~|", "MSH|A~\\&|", "MSH|"])
def test_unusable_delimiters_are_refused(bad: str) -> None:
    with pytest.raises(Hl7Problem) as caught:
        read_header(bad + "HIS|H001|||||ORU^R01|1|P|2.5")
    assert str(caught.value.location).startswith("MSH")


def test_header_checks() -> None:
    check_header(read_header(oru("C1")))
    cases = {
        "2.6": ("MSH-12", ErrorCode.UNSUPPORTED_VERSION),
        "2.1": ("MSH-12", ErrorCode.UNSUPPORTED_VERSION),
    }
    for version, (where, code) in cases.items():
        with pytest.raises(Hl7Problem) as caught:
            check_header(read_header(oru("C1", version=version)))
        assert (str(caught.value.location), caught.value.error_code) == (where, code)
    with pytest.raises(Hl7Problem) as caught:
        check_header(read_header(oru("")))
    assert str(caught.value.location) == "MSH-10"
    for version in ("2.3", "2.3.1", "2.4", "2.5", "2.5.1"):
        check_header(read_header(oru("C1", version=version)))


def test_no_msh_is_a_segment_sequence_error() -> None:
    with pytest.raises(Hl7Problem) as caught:
        decode(b"PID|1||x", "UTF-8")
    assert caught.value.error_code is ErrorCode.SEGMENT_SEQUENCE
    header, label, codec = lenient_header(b"PID|1", "UNICODE UTF-8")
    assert (header, label, codec) == (None, "", "utf-8")


def test_ack_v251_with_error_and_notes() -> None:
    header = read_header(oru("MSG-7"))
    problem = Hl7Problem(
        "PID-7 birth date is not a date",
        location=Location("PID", field=7),
        error_code=ErrorCode.DATA_TYPE_ERROR,
    )
    text = build_ack(
        header,
        AckContent(
            AckCode.ERROR, problems=[problem], notes=[Note("see ^here", Severity.INFORMATION)]
        ),
        control_id="ACK1",
        now=NOW,
        charset="UNICODE UTF-8",
    )
    assert text.split("\r") == [
        "MSH|^~\\&|HEALTHROAM|HN|HIS|H001|20261129103000+0000||ACK^R01^ACK|ACK1|P|2.5.1"
        "||||||UNICODE UTF-8",
        "MSA|AE|MSG-7",
        "ERR||PID^1^7^1|102^Data type error^HL70357|E||||PID-7 birth date is not a date",
        "ERR|||0^Message accepted^HL70357|I||||see \\S\\here",
        "",
    ]
    ack = hl7.parse(text)
    assert str(ack.segment("MSA")(2)) == "MSG-7"


def test_ack_v23_and_v24_use_err1_and_msa3() -> None:
    for version in ("2.3", "2.3.1", "2.4"):
        header = read_header(oru("MSG-8", version=version))
        problem = Hl7Problem(
            "OBX-5 missing",
            location=Location("OBX", sequence=2, field=5),
            error_code=ErrorCode.REQUIRED_FIELD_MISSING,
        )
        lines = build_ack(
            header, AckContent(AckCode.ERROR, problems=[problem]), control_id="A", now=NOW
        ).split("\r")
        assert lines[1] == "MSA|AE|MSG-8|OBX-5 missing"
        assert lines[2] == "ERR|OBX^2^5^101&Required field missing&HL70357"
        structure = "ACK^R01" if version == "2.3" else "ACK^R01^ACK"
        assert lines[0].split("|")[8] == structure


def test_ack_to_an_unreadable_message_still_has_msh_and_msa() -> None:
    problem = Hl7Problem("a message must begin with an MSH segment", ack=AckCode.REJECT)
    text = build_ack(None, AckContent(AckCode.REJECT, problems=[problem]), control_id="Z", now=NOW)
    lines = text.split("\r")
    assert lines[0].startswith("MSH|^~\\&|HEALTHROAM|")
    assert lines[1] == "MSA|AR|"


def test_escape_text_uses_the_message_delimiters() -> None:
    d = Delimiters("#", "$", "*", "%", "@")
    assert d.escape_text("a#b$c*d%e@f\rg") == "a%F%b%S%c%R%d%E%e%T%f g"


@pytest.mark.parametrize(
    "text",
    [
        oru("P1"),
        oru("P2", delimiters="#$*%@", values=("a%F%b", "c$d@e")),
        oru("P3", values=("x~y^z&w", "")),
        "MSH|^~\\&|A|B|||||ADT^A04|1|P|2.5\rPID|||1~2~3||a^b&c^d~e\r\rZZZ\r",
        "MSH|^~\\&\rPID",
        "MSH|^~|X|Y\rEVN||",
    ],
)
def test_fast_parse_gives_python_hl7s_message(text: str) -> None:
    from healthroam.exchange.hl7.codec import parse_er7

    fast, reference = parse_er7(text), hl7.parse(text)
    assert fast == reference
    assert str(fast) == str(reference)
    assert type(fast) is type(reference)
    assert [type(s) for s in fast] == [type(s) for s in reference]


@given(st.text(alphabet="AB|^~\\&\r12", max_size=80))
def test_fast_parse_matches_python_hl7_on_random_text(tail: str) -> None:
    from healthroam.exchange.hl7.codec import parse_er7

    text = "MSH|^~\\&|" + tail
    try:
        reference = hl7.parse(text)
    except Exception as exc:
        with pytest.raises(type(exc)):
            parse_er7(text)
        return
    assert parse_er7(text) == reference


def _python_hl7_fields(text: str) -> list[list[str]]:
    return [[str(field) for field in segment] for segment in hl7.parse(text)]


@pytest.mark.parametrize(
    "text",
    [
        oru("S1"),
        oru("S2", delimiters="#$*%@", values=("a%F%b", "c$d@e")),
        oru("S3", values=("x~y^z&w", "")),
        "MSH|^~\\&|A|B|||||ADT^A04|1|P|2.5\rPID|||1~2~3||a^b&c^d~e\r\rZZZ\r",
        "MSH|^~\\&\rPID",
        "MSH|^~\\&|A\rBHS|^~\\&|B\rFHS\rMSH^x\rPID|1|\\F\\|\\X41\\|\\.br\\||\r",
        "  MSH|^~\\&|A|B||||||||||||||GB 18030-2000\rPID|||1||王^小明\r\n",
        "MSH|^~\\&|A\rAB^C\rPID\\x\rOBX|1|ST|||",
    ],
)
def test_split_gives_python_hl7s_field_texts(text: str) -> None:
    from healthroam.exchange.hl7.codec import split_er7

    assert split_er7(text) == _python_hl7_fields(text)


@given(
    st.text(alphabet="AB|^~\\&\r12", max_size=80),
    st.sampled_from(["|^~\\&", "|^~\\&|", "#$*%@#", "|^~\\&|A|B|||||ADT^A04|1|P|2.5\r"]),
)
def test_split_matches_python_hl7_on_random_text(tail: str, head: str) -> None:
    """Five distinct delimiters (what decode lets through), then anything."""
    from healthroam.exchange.hl7.codec import split_er7

    text = "MSH" + head + tail
    try:
        reference = _python_hl7_fields(text)
    except Exception:
        with pytest.raises((ValueError, IndexError)):
            split_er7(text)
        return
    assert split_er7(text) == reference


def test_parse_gives_field_texts_and_python_hl7_on_request() -> None:
    text = oru("P9", delimiters="#$*%@", values=("a%F%b", "c$d@e"))
    message = parse(decode(text.encode(), "UTF-8"))
    assert message.field_texts == _python_hl7_fields(text.strip("\r"))
    assert len(message) == len(message.field_texts)
    # what a python-hl7 handler asks is answered by python-hl7's message of the same text
    assert message.hl7 == hl7.parse(text.strip("\r"))
    assert str(message.segment("PID")(5)(1)(2)) == "阿妹"
    assert [str(s[0]) for s in message] == [f[0] for f in message.field_texts]
    assert [str(s[0]) for s in message.segments("OBX")] == ["OBX", "OBX"]
    assert str(message) == str(hl7.parse(text.strip("\r")))


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("MSH|^~\\&|A|B|||||ADT^A04|1|P|2.5\rpid|1", "segment 2 has no valid segment id"),
        ("MSH|^~\\&|A|B|||||ADT^A04|1|P|2.5\rPI", "segment 2 has no valid segment id"),
        ("MSH|^~\\&|A|B|||||ADT^A04|1|P|2.5\rP1D^|1", "segment 2 has no valid segment id"),
    ],
)
def test_segments_without_a_valid_id_are_refused(text: str, detail: str) -> None:
    with pytest.raises(Hl7Problem) as caught:
        parse(decode(text.encode(), "UTF-8"))
    assert caught.value.detail == detail
    assert caught.value.error_code == ErrorCode.SEGMENT_SEQUENCE
    assert caught.value.ack == AckCode.REJECT
