"""HL7 v2 ER7 on the wire: character sets (MSH-18), the MSH header, parsing, and ACKs.

The bytes of a message are decoded in three steps: MSH-18 is read from the raw bytes (the MSH
segment is ASCII in every character set this gateway accepts), the whole message is decoded
with that character set, and the header is read again from the decoded text to check it says
the same. Parsing splits the text once into segments and their fields' raw texts (the texts
python-hl7 would give, with the delimiters the message declares in MSH-1 and MSH-2); a field is
split into repetitions, components and subcomponents, and unescaped, when a handler reads it
(healthroam.exchange.hl7.segments). ACKs are built here, in the message's delimiters, version
and character set.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import hl7

from healthroam.exchange.hl7.contract import (
    AckCode,
    ErrorCode,
    Hl7Problem,
    Location,
    Note,
    Severity,
)

# HL7 table 0211 values (and the spellings senders use) -> Python codecs. Only character sets in
# which ASCII bytes mean ASCII are accepted: the MSH segment must be readable before decoding.
CHARSETS: dict[str, str] = {
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/2": "iso8859-2",
    "8859/5": "iso8859-5",
    "8859/7": "iso8859-7",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "UTF8": "utf-8",
    "GB 18030-2000": "gb18030",
    "GB18030-2000": "gb18030",
    "GB18030": "gb18030",
    "GB 18030": "gb18030",
}
SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1")
ACCEPTED_PROCESSING_IDS = ("P",)
RECEIVER = "HEALTHROAM"  # MSH-3 of an ACK when the message named no receiving application

ERROR_TEXT: dict[str, str] = {  # HL7 table 0357
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}


def charset_codec(label: str) -> str | None:
    """The Python codec of an MSH-18 value, or None when this gateway does not accept it."""
    return CHARSETS.get(" ".join(label.strip().upper().split()))


@dataclass(frozen=True, slots=True)
class Delimiters:
    """MSH-1 and MSH-2: field, component, repetition, escape and subcomponent separators."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def encoding_characters(self) -> str:
        return self.component + self.repetition + self.escape + self.subcomponent

    def escape_text(self, text: str) -> str:
        """Text as an ER7 field value: delimiters become escape sequences (\\F\\ ...)."""
        e = self.escape
        out: list[str] = []
        for char in text:
            if char == e:
                out.append(f"{e}E{e}")
            elif char == self.field:
                out.append(f"{e}F{e}")
            elif char == self.component:
                out.append(f"{e}S{e}")
            elif char == self.repetition:
                out.append(f"{e}R{e}")
            elif char == self.subcomponent:
                out.append(f"{e}T{e}")
            elif char in "\r\n":
                out.append(" ")
            else:
                out.append(char)
        return "".join(out)


DEFAULT_DELIMITERS = Delimiters()
_SEGMENT_END = re.compile(r"\r\n|\n|\r")


def _delimiters(text: str) -> Delimiters:
    """MSH-1 and MSH-2 of a message that starts with ``MSH``; refuses unusable ones."""
    if len(text) < 8:
        raise Hl7Problem(
            "the MSH segment is too short to hold its delimiters (MSH-1, MSH-2)",
            location=Location("MSH", field=2),
            error_code=ErrorCode.REQUIRED_FIELD_MISSING,
            ack=AckCode.REJECT,
        )
    field_sep = text[3]
    end = text.find(field_sep, 4)
    encoding = text[4:end] if end >= 0 else ""
    chars = [field_sep, *encoding]
    if (
        len(encoding) != 4
        or len(set(chars)) != len(chars)
        or any(c.isalnum() or c in "\r\n \t" or not c.isprintable() for c in chars)
    ):
        raise Hl7Problem(
            "MSH-1 and MSH-2 must declare five distinct delimiter characters (for example |^~\\&)",
            location=Location("MSH", field=2),
            error_code=ErrorCode.DATA_TYPE_ERROR,
            ack=AckCode.REJECT,
        )
    return Delimiters(field_sep, encoding[0], encoding[1], encoding[2], encoding[3])


@dataclass(frozen=True, slots=True)
class Header:
    """The MSH segment as text, split into fields with the message's own delimiters."""

    delimiters: Delimiters
    fields: tuple[str, ...]  # fields[0] is MSH-1, fields[n - 1] is MSH-n

    def field(self, number: int) -> str:
        return self.fields[number - 1] if 0 < number <= len(self.fields) else ""

    def component(self, number: int, component: int = 1) -> str:
        value = self.field(number).split(self.delimiters.repetition)[0]
        parts = value.split(self.delimiters.component)
        return parts[component - 1].strip() if component <= len(parts) else ""

    @property
    def sending_application(self) -> str:
        return self.component(3)

    @property
    def sending_facility(self) -> str:
        return self.component(4)

    @property
    def control_id(self) -> str:
        return self.field(10).strip()

    @property
    def message_type(self) -> str:
        return self.component(9, 1).upper()

    @property
    def trigger_event(self) -> str:
        return self.component(9, 2).upper()

    @property
    def processing_id(self) -> str:
        return self.component(11, 1).upper()

    @property
    def version(self) -> str:
        return self.component(12, 1)

    @property
    def charset(self) -> str:
        """MSH-18: the first repetition is the message's character set."""
        return self.field(18).split(self.delimiters.repetition)[0].strip()


def read_header(text: str) -> Header:
    """The MSH segment of ``text`` (decoded, or raw bytes read as Latin-1)."""
    if not text.startswith("MSH"):
        raise Hl7Problem(
            "a message must begin with an MSH segment",
            location=Location("MSH"),
            error_code=ErrorCode.SEGMENT_SEQUENCE,
            ack=AckCode.REJECT,
        )
    delimiters = _delimiters(text)
    segment = _SEGMENT_END.split(text, maxsplit=1)[0]
    rest = segment[4:].split(delimiters.field)  # MSH-2, MSH-3, ...
    return Header(delimiters, (delimiters.field, *rest))


@dataclass(frozen=True, slots=True)
class Decoded:
    """A message's text in ``\\r``-separated segments, its header and character set."""

    text: str
    header: Header
    charset: str  # the MSH-18 value ("" = the default) as the message gave it
    codec: str


def decode(raw: bytes, default_charset: str) -> Decoded:
    """Find the character set in MSH-18, decode, and check the header reads the same."""
    first = read_header(raw[:4_096].decode("latin-1"))
    label = first.charset
    codec = charset_codec(label or default_charset)
    if codec is None:
        shown = label if label.isascii() and label.isprintable() and len(label) <= 40 else "?"
        raise Hl7Problem(
            f"character set '{shown}' is not supported; use one of ASCII, 8859/1, "
            "UNICODE UTF-8, GB 18030-2000",
            location=Location("MSH", field=18),
            error_code=ErrorCode.TABLE_VALUE_NOT_FOUND,
            ack=AckCode.REJECT,
        )
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as exc:
        raise Hl7Problem(
            f"bytes {exc.start}-{exc.end - 1} are not valid {label or default_charset} "
            "(the character set named in MSH-18)",
            location=Location("MSH", field=18),
            error_code=ErrorCode.DATA_TYPE_ERROR,
            ack=AckCode.REJECT,
        ) from None
    text = "\r".join(s for s in _SEGMENT_END.split(text.strip("\r\n")) if s)
    header = read_header(text)
    if header.charset != label:
        raise Hl7Problem(
            "MSH-18 reads differently before and after decoding; is the MSH segment "
            "encoded in the character set it names?",
            location=Location("MSH", field=18),
            error_code=ErrorCode.DATA_TYPE_ERROR,
            ack=AckCode.REJECT,
        )
    return Decoded(text, header, label, codec)


def lenient_header(raw: bytes, default_charset: str) -> tuple[Header | None, str, str]:
    """The best header that can be read from a refused message, to address its NAK:
    (header or None, MSH-18 label to echo, codec to encode the NAK with)."""
    try:
        first = read_header(raw[:4_096].decode("latin-1"))
    except Hl7Problem:
        return None, "", charset_codec(default_charset) or "utf-8"
    label = first.charset
    codec = charset_codec(label)
    if codec is None:
        label, codec = "", charset_codec(default_charset) or "utf-8"
    try:
        header = read_header(raw[:4_096].decode(codec, errors="replace"))
    except Hl7Problem:
        header = first
    return header, label, codec


def check_header(header: Header) -> None:
    """What the transport itself requires of MSH before any handler sees the message."""
    if not header.sending_application and not header.sending_facility:
        raise Hl7Problem(
            "MSH-3 (sending application) and MSH-4 (sending facility) identify the sender",
            location=Location("MSH", field=4),
            error_code=ErrorCode.REQUIRED_FIELD_MISSING,
            ack=AckCode.REJECT,
        )
    if not header.control_id:
        raise Hl7Problem(
            "MSH-10 (message control id) is required",
            location=Location("MSH", field=10),
            error_code=ErrorCode.REQUIRED_FIELD_MISSING,
            ack=AckCode.REJECT,
        )
    if len(header.control_id) > 199:
        raise Hl7Problem(
            "MSH-10 (message control id) is longer than 199 characters",
            location=Location("MSH", field=10),
            error_code=ErrorCode.DATA_TYPE_ERROR,
            ack=AckCode.REJECT,
        )
    if not header.message_type or not header.trigger_event:
        raise Hl7Problem(
            "MSH-9 needs the message type and trigger event (for example ADT^A04)",
            location=Location("MSH", field=9),
            error_code=ErrorCode.REQUIRED_FIELD_MISSING,
            ack=AckCode.REJECT,
        )
    if len(header.message_type) > 3 or len(header.trigger_event) > 3:
        raise Hl7Problem(
            "MSH-9 message type and trigger event are three characters each",
            location=Location("MSH", field=9),
            error_code=ErrorCode.UNSUPPORTED_MESSAGE_TYPE,
            ack=AckCode.REJECT,
        )
    if header.version not in SUPPORTED_VERSIONS:
        raise Hl7Problem(
            f"HL7 version in MSH-12 is not supported; use one of {', '.join(SUPPORTED_VERSIONS)}",
            location=Location("MSH", field=12),
            error_code=ErrorCode.UNSUPPORTED_VERSION,
            ack=AckCode.REJECT,
        )
    if header.processing_id not in ACCEPTED_PROCESSING_IDS:
        raise Hl7Problem(
            "MSH-11 processing id must be P (production)",
            location=Location("MSH", field=11),
            error_code=ErrorCode.UNSUPPORTED_PROCESSING_ID,
            ack=AckCode.REJECT,
        )
    if len(header.sending_application) > 180 or len(header.sending_facility) > 180:
        raise Hl7Problem(
            "MSH-3 and MSH-4 namespace ids are at most 180 characters",
            location=Location("MSH", field=4),
            error_code=ErrorCode.DATA_TYPE_ERROR,
            ack=AckCode.REJECT,
        )


def _split(text: str, plans: list[Any], level: int) -> Any:
    """python-hl7's ``parser._split`` with the parse plan of each level made once per message
    instead of once per field (the same containers; a third less time per message)."""
    if level >= len(plans):
        return text
    plan = plans[level]
    if not plan.applies(text):
        return plan.container([text])
    data: list[Any] = []
    if plan.containers[0] == plan.factory.create_segment and text[:3] in ("MSH", "BHS", "FHS"):
        seg, sep0 = text[:3], text[3]
        end = text.find(sep0, 4)
        seps = text[4:end]
        text = text[end + 1 :]
        data = [
            plan.factory.create_field(sequence=[seg], esc=plan.esc, separators=plan.separators),
            plan.factory.create_field(sequence=[sep0], esc=plan.esc, separators=plan.separators),
            plan.factory.create_field(sequence=[seps], esc=plan.esc, separators=plan.separators),
        ]
    if text:
        data += [_split(part, plans, level + 1) for part in text.split(plan.separator)]
    return plan.container(data)


def parse_er7(text: str) -> Any:
    """``hl7.parse(text)``, faster (see :func:`_split`)."""
    text = text.strip()
    plan = hl7.parser.create_parse_plan(text)
    plans = []
    while plan is not None:
        plans.append(plan)
        plan = plan.next()
    return _split(text, plans, 0)


_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")
_HEADER_SEGMENTS = ("MSH", "BHS", "FHS")


class Er7Message:
    """A parsed message: ``field_texts``, per segment the list of its fields' raw (escaped) texts,
    numbered as python-hl7 numbers them (``fields[0]`` is the segment id; in MSH ``fields[1]``
    is MSH-1, the field separator, and ``fields[2]`` MSH-2, the encoding characters).

    The gateway's own handlers read fields from these lists (healthroam.exchange.hl7.segments
    splits a field into repetitions, components and subcomponents when it is read, with the
    message's separators). A handler written against python-hl7 (``message.segment("PID")``,
    ``message.unescape(...)``) still works: anything else asked of this object is answered by
    the python-hl7 ``hl7.Message`` of the same text, parsed on first use.
    """

    __slots__ = ("_hl7", "field_texts", "text")

    def __init__(self, text: str, field_texts: list[list[str]]) -> None:
        self.text = text
        self.field_texts = field_texts  # per segment (python-hl7's ``segments`` is a method)
        self._hl7: Any = None

    @property
    def hl7(self) -> Any:
        """The python-hl7 ``hl7.Message`` of the same text (parsed once, when first asked)."""
        if self._hl7 is None:
            self._hl7 = parse_er7(self.text)
        return self._hl7

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.hl7, name)

    def __iter__(self) -> Any:
        return iter(self.hl7)

    def __len__(self) -> int:
        return len(self.field_texts)

    def __getitem__(self, key: Any) -> Any:
        return self.hl7[key]

    def __call__(self, index: int) -> Any:
        return self.hl7(index)

    def __str__(self) -> str:
        return str(self.hl7)


def split_er7(text: str) -> list[list[str]]:
    """The segments of ``text`` (MSH first, ``\\r``-separated) as lists of field texts, split
    with the field separator MSH-1 declares: the texts python-hl7 gives as ``str(field)``
    (the same rules, the MSH/BHS/FHS header fields included), without building its containers.
    A segment holding no separator at all stays one field, as in python-hl7."""
    text = text.strip()
    if text[:3] not in _HEADER_SEGMENTS or len(text) < 5:
        raise ValueError("a message starts with MSH, BHS or FHS and its separators")
    field_sep = text[3]
    end = text.find(field_sep, 4)
    seps = text[4:end]  # python-hl7's reading of MSH-2 (MSH-2 without its last character
    # when no field follows it: then the message is refused at its header anyway)
    # python-hl7's separators: field, repetition, component, subcomponent (not the escape)
    children = field_sep + (seps[1] if len(seps) > 1 else "~") + (seps[0] if seps else "^")
    children += seps[3] if len(seps) > 3 else "&"
    segments: list[list[str]] = []
    for segment in text.split("\r"):
        if segment[:3] in _HEADER_SEGMENTS and any(c in segment for c in children):
            sep0 = segment[3]
            stop = segment.find(sep0, 4)
            head = [segment[:3], sep0, segment[4:stop]]
            rest = segment[stop + 1 :]
            segments.append(head + rest.split(field_sep) if rest else head)
        else:
            segments.append(segment.split(field_sep))
    return segments


def parse(decoded: Decoded) -> Er7Message:
    """The decoded message's segments and fields (:class:`Er7Message`); refuses a segment
    without a valid segment id."""
    try:
        segments = split_er7(decoded.text)
    except (ValueError, IndexError):
        raise Hl7Problem(
            "the message could not be split into segments and fields",
            location=Location("MSH"),
            error_code=ErrorCode.SEGMENT_SEQUENCE,
            ack=AckCode.REJECT,
        ) from None
    for number, fields in enumerate(segments, start=1):
        if not _SEGMENT_ID.fullmatch(fields[0]):
            raise Hl7Problem(
                f"segment {number} has no valid segment id",
                location=Location("MSH"),
                error_code=ErrorCode.SEGMENT_SEQUENCE,
                ack=AckCode.REJECT,
            )
    return Er7Message(decoded.text, segments)


# --- ACKs ----------------------------------------------------------------------------------


def uses_err_location(version: str) -> bool:
    """v2.5 and later: ERR-2/3/4/8. Before (2.3, 2.3.1, 2.4): ERR-1 (ELD)."""
    try:
        numbers = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        return True
    return numbers >= (2, 5)


@dataclass(frozen=True, slots=True)
class AckContent:
    """What an ACK says: the code, errors (severity E) and notes (W/I)."""

    code: AckCode
    problems: Sequence[Hl7Problem] = ()
    notes: Sequence[Note] = ()


def _erl(location: Location | None, d: Delimiters) -> str:
    """ERL (v2.5 ERR-2): segment^sequence^field^field repetition^component."""
    if location is None:
        return ""
    parts = [location.segment, str(location.sequence)]
    if location.field:
        parts += [str(location.field), "1"]
        if location.component:
            parts.append(str(location.component))
    return d.component.join(parts)


def _eld(location: Location | None, code: str, d: Delimiters) -> str:
    """ELD (v2.3/v2.4 ERR-1): segment^sequence^field^code&text&HL70357."""
    coded = d.subcomponent.join([code, d.escape_text(ERROR_TEXT.get(code, "")), "HL70357"])
    if location is None:
        return d.component.join(["", "", "", coded])
    return d.component.join(
        [location.segment, str(location.sequence), str(location.field or ""), coded]
    )


def _err_segments(content: AckContent, version: str, d: Delimiters) -> list[str]:
    rows: list[tuple[Location | None, str, Severity, str]] = [
        (p.location, p.error_code.value, Severity.ERROR, p.detail) for p in content.problems
    ]
    rows += [(n.location, n.code, n.severity, n.detail) for n in content.notes]
    segments = []
    f = d.field
    for location, code, severity, detail in rows:
        if uses_err_location(version):
            cwe = d.component.join([code, d.escape_text(ERROR_TEXT.get(code, "")), "HL70357"])
            fields = ["ERR", "", _erl(location, d), cwe, severity.value, "", "", "", ""]
            fields[8] = d.escape_text(detail)
            segments.append(f.join(fields))
        else:
            segments.append(f.join(["ERR", _eld(location, code, d)]))
    return segments


def build_ack(
    header: Header | None,
    content: AckContent,
    *,
    control_id: str,
    now: datetime,
    charset: str = "",
) -> str:
    """An original-mode ACK to ``header``'s message (or to an unreadable one when None)."""
    d = header.delimiters if header else DEFAULT_DELIMITERS
    version = header.version if header and header.version else "2.5.1"
    f = d.field
    trigger = header.trigger_event if header else ""
    # MSH-9.3 (message structure) exists from v2.3.1 on.
    with_structure = version not in ("2.1", "2.2", "2.3")
    message_type = d.component.join(["ACK", trigger, "ACK"] if with_structure else ["ACK", trigger])
    msh = [
        "MSH",
        d.encoding_characters,
        (header.field(5) if header else "") or RECEIVER,
        header.field(6) if header else "",
        header.field(3) if header else "",
        header.field(4) if header else "",
        now.strftime("%Y%m%d%H%M%S%z"),
        "",
        message_type,
        control_id,
        (header.field(11) if header else "") or "P",
        version,
        "",
        "",
        "",
        "",
        "",
        charset,
    ]
    while msh and msh[-1] == "":
        msh.pop()
    msa = ["MSA", content.code.value, header.control_id if header else ""]
    if not uses_err_location(version):
        texts = [p.detail for p in content.problems] + [n.detail for n in content.notes]
        if texts:
            msa.append(d.escape_text("; ".join(texts)))
    segments = [f.join(msh), f.join(msa), *_err_segments(content, version, d)]
    return "\r".join(segments) + "\r"


def encode(text: str, codec: str) -> bytes:
    """An ACK in the message's character set (characters it cannot carry become '?')."""
    return text.encode(codec, errors="replace")
