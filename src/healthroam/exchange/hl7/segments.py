"""Typed reads of HL7 v2 segments: repetitions, components, escape sequences and datatypes.

The parser (healthroam.exchange.hl7.codec) gives a segment as the list of its fields' raw
texts. Here every field is split when first read, with the message's own separators
(MSH-1/MSH-2), so ``reps(3)`` is always repetitions -> components -> subcomponents, each leaf
unescaped (kept per segment: handlers read the same field several times). The datatype
readers (XPN, CX, XAD, XTN, TS/DTM, CE/CWE, XCN, EI) return small dataclasses; a value that
breaks its datatype raises :class:`Hl7Problem` (DATA_TYPE_ERROR) naming the field, and a
missing required one REQUIRED_FIELD_MISSING.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from healthroam.exchange.hl7.contract import ErrorCode, Hl7Problem, Location

Components = list[list[str]]  # components -> subcomponents
NULL = '""'  # HL7 "explicitly empty" value


@dataclass(frozen=True, slots=True)
class Separators:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @classmethod
    def of(cls, msh: list[str]) -> Separators:
        """The separators declared by an MSH segment's fields (MSH-1, MSH-2)."""
        encoding = msh[2] if len(msh) > 2 else "^~\\&"
        chars = (encoding + "^~\\&"[len(encoding) :])[:4]
        return cls(msh[1], chars[0], chars[1], chars[2], chars[3])


_HEX = re.compile(r"^[0-9A-Fa-f]+$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def unescape(text: str, sep: Separators) -> str:
    """Resolve HL7 escape sequences: \\F\\ \\S\\ \\T\\ \\R\\ \\E\\, \\.br\\, \\Xhh..\\ (UTF-8
    bytes); highlighting (\\H\\ \\N\\), character-set switches (\\C..\\ \\M..\\) and
    \\Z..\\ are dropped. A lone escape character without its closing one is kept as is."""
    esc = sep.escape
    if esc not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != esc:
            out.append(ch)
            i += 1
            continue
        end = text.find(esc, i + 1)
        if end == -1:
            out.append(text[i:])
            break
        seq = text[i + 1 : end]
        i = end + 1
        simple = {
            "F": sep.field,
            "S": sep.component,
            "T": sep.subcomponent,
            "R": sep.repetition,
            "E": sep.escape,
            ".br": "\n",
        }
        if seq in simple:
            out.append(simple[seq])
        elif seq.startswith("X") and _HEX.match(seq[1:]) and len(seq) % 2 == 1:
            raw = bytes.fromhex(seq[1:])
            try:
                out.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(raw.decode("latin-1"))
        elif seq in ("H", "N") or seq[:1] in ("C", "M", "Z") or seq.startswith(".sp"):
            continue
        else:
            out.append(esc + seq + esc)
    return "".join(out)


class Segment:
    """One segment of a message: its id, its occurrence number and typed field access."""

    def __init__(self, fields: list[str], sequence: int, sep: Separators) -> None:
        self.fields = fields  # raw texts; fields[0] is the segment id
        self.id = fields[0]
        self.sequence = sequence
        self.sep = sep
        self._reps: dict[int, list[Components]] = {}

    def at(self, field: int, component: int = 0) -> Location:
        return Location(self.id, self.sequence, field, component)

    def text(self, field: int) -> str:
        """The field's raw (still escaped) text, '' when absent."""
        return self.fields[field] if field < len(self.fields) else ""

    def reps(self, field: int) -> list[Components]:
        """Repetitions -> components -> subcomponents, unescaped; [] when empty. The lists are
        the segment's own (read again, a field is not split again): do not change them."""
        found = self._reps.get(field)
        if found is None:
            found = self._reps[field] = self._split(field)
        return found

    def _split(self, field: int) -> list[Components]:
        raw = self.text(field)
        if raw == "":
            return []
        if self.id == "MSH" and field in (1, 2):
            return [[[raw]]]
        sep = self.sep
        out = [
            [
                [unescape(s, sep) for s in comp.split(sep.subcomponent)]
                for comp in rep.split(sep.component)
            ]
            for rep in raw.split(sep.repetition)
        ]
        if (_CONTROL.search(raw) or sep.escape + "X" in raw) and any(
            _CONTROL.search(text) for rep in out for comp in rep for text in comp
        ):
            # NUL and other C0 controls are not text (PostgreSQL cannot even store NUL)
            raise bad_type(self.at(field), "contains a control character")
        return out

    def value(self, field: int, component: int = 1, sub: int = 1, rep: int = 0) -> str | None:
        """One leaf as text, None when empty (the HL7 null ``""`` is None too)."""
        reps = self.reps(field)
        if rep >= len(reps):
            return None
        return leaf(reps[rep], component, sub)

    def required(self, field: int, component: int = 1, what: str = "") -> str:
        value = self.value(field, component)
        if value is None:
            raise missing(self.at(field, component if component > 1 else 0), what)
        return value

    def is_null(self, field: int) -> bool:
        """True when the field holds the HL7 explicit null ``""`` (delete the value)."""
        return self.text(field) == NULL


def leaf(components: Components, component: int = 1, sub: int = 1) -> str | None:
    if component > len(components):
        return None
    subs = components[component - 1]
    if sub > len(subs):
        return None
    text = subs[sub - 1].strip()
    return None if text in ("", NULL) else text


def missing(location: Location, what: str = "") -> Hl7Problem:
    label = f" ({what})" if what else ""
    return Hl7Problem(
        f"{location}{label} is required",
        location=location,
        error_code=ErrorCode.REQUIRED_FIELD_MISSING,
    )


def bad_type(location: Location, detail: str) -> Hl7Problem:
    return Hl7Problem(
        f"{location} {detail}", location=location, error_code=ErrorCode.DATA_TYPE_ERROR
    )


def unknown_code(location: Location, table: str) -> Hl7Problem:
    """TABLE_VALUE_NOT_FOUND; the message names the table, never the (possibly personal) value."""
    return Hl7Problem(
        f"{location} holds a value that is not in HL7 table {table}",
        location=location,
        error_code=ErrorCode.TABLE_VALUE_NOT_FOUND,
    )


class Message:
    """A parsed message as a list of :class:`Segment`, in order, numbered per segment id."""

    def __init__(self, parsed: Any) -> None:
        """``parsed``: the parser's :class:`~healthroam.exchange.hl7.codec.Er7Message`, or a
        python-hl7 ``hl7.Message`` (its fields read back as text)."""
        fields: list[list[str]] | None = getattr(parsed, "field_texts", None)
        if fields is None:
            fields = [[str(f) for f in segment] for segment in parsed]
        msh = next((f for f in fields if f[0] == "MSH"), None)
        if msh is None:
            raise KeyError("MSH")  # python-hl7's message.segment("MSH") raised it too
        self.sep = Separators.of(msh)
        counts: dict[str, int] = {}
        self.segments: list[Segment] = []
        for segment in fields:
            name = segment[0]
            counts[name] = counts.get(name, 0) + 1
            self.segments.append(Segment(segment, counts[name], self.sep))

    def first(self, segment_id: str) -> Segment | None:
        return next((s for s in self.segments if s.id == segment_id), None)

    def require(self, segment_id: str) -> Segment:
        found = self.first(segment_id)
        if found is None:
            raise Hl7Problem(
                f"the message has no {segment_id} segment",
                location=Location(segment_id),
                error_code=ErrorCode.SEGMENT_SEQUENCE,
            )
        return found

    @property
    def msh(self) -> Segment:
        return self.require("MSH")


# --- datatypes ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Name:
    """XPN (and the name part of XCN)."""

    family: str | None
    given: str | None
    middle: str | None = None
    suffix: str | None = None
    prefix: str | None = None
    type_code: str | None = None  # table 0200
    representation: str | None = None  # table 4000: A alphabetic, I ideographic, P phonetic


def xpn(components: Components) -> Name:
    return Name(
        family=leaf(components, 1),
        given=leaf(components, 2),
        middle=leaf(components, 3),
        suffix=leaf(components, 4),
        prefix=leaf(components, 5),
        type_code=leaf(components, 7),
        representation=leaf(components, 8),
    )


@dataclass(frozen=True, slots=True)
class Cx:
    id: str | None
    authority: str | None  # CX.4.1 namespace id
    authority_oid: str | None  # CX.4.2 universal id (when CX.4.3 is ISO, an OID)
    authority_type: str | None  # CX.4.3
    type_code: str | None  # CX.5, table 0203


def cx(components: Components) -> Cx:
    return Cx(
        id=leaf(components, 1),
        authority=leaf(components, 4, 1),
        authority_oid=leaf(components, 4, 2),
        authority_type=leaf(components, 4, 3),
        type_code=leaf(components, 5),
    )


@dataclass(frozen=True, slots=True)
class Address:
    street: str | None
    other: str | None
    city: str | None
    state: str | None
    postal_code: str | None
    country: str | None
    type_code: str | None  # table 0190
    county: str | None  # XAD.9 county/parish code (GB/T 2260 county code in China)


def xad(components: Components) -> Address:
    return Address(
        street=leaf(components, 1),
        other=leaf(components, 2),
        city=leaf(components, 3),
        state=leaf(components, 4),
        postal_code=leaf(components, 5),
        country=leaf(components, 6),
        type_code=leaf(components, 7),
        county=leaf(components, 9),
    )


@dataclass(frozen=True, slots=True)
class Telecom:
    number: str | None  # composed from XTN.5-8 when XTN.1 is empty
    use_code: str | None  # table 0201
    equipment: str | None  # table 0202
    email: str | None


def xtn(components: Components) -> Telecom:
    number = leaf(components, 1)
    if number is None:
        country, area, local = (leaf(components, i) for i in (5, 6, 7))
        if local:
            if country and country not in ("86", "+86"):
                number = "+" + country.lstrip("+") + (area or "").lstrip("0") + local
            else:
                number = (area or "") + local
            ext = leaf(components, 8)
            if ext:
                number += f" ext {ext}"
    return Telecom(number, leaf(components, 2), leaf(components, 3), leaf(components, 4))


@dataclass(frozen=True, slots=True)
class Coded:
    """CE / CWE / CNE: an identifier triplet and its alternate."""

    code: str | None
    text: str | None
    system: str | None
    alt_code: str | None = None
    alt_text: str | None = None
    alt_system: str | None = None
    original_text: str | None = None  # CWE.9


def ce(components: Components) -> Coded:
    return Coded(
        code=leaf(components, 1),
        text=leaf(components, 2),
        system=leaf(components, 3),
        alt_code=leaf(components, 4),
        alt_text=leaf(components, 5),
        alt_system=leaf(components, 6),
        original_text=leaf(components, 9),
    )


@dataclass(frozen=True, slots=True)
class Person:
    """XCN: a practitioner as id and name."""

    id: str | None
    name: Name

    @property
    def display(self) -> str | None:
        return display_name(self.name)


def xcn(components: Components) -> Person:
    name = Name(
        family=leaf(components, 2),
        given=leaf(components, 3),
        middle=leaf(components, 4),
        suffix=leaf(components, 5),
        prefix=leaf(components, 6),
    )
    return Person(leaf(components, 1), name)


@dataclass(frozen=True, slots=True)
class EntityId:
    """EI: an order number and the application that assigned it."""

    id: str
    namespace: str | None


def ei(components: Components) -> EntityId | None:
    value = leaf(components, 1)
    return EntityId(value, leaf(components, 2)) if value else None


_HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def is_han(text: str | None) -> bool:
    return bool(text and _HAN.search(text))


def display_name(name: Name) -> str | None:
    """Chinese order without spaces for Han names (张三), 'given family' otherwise."""
    given = " ".join(p for p in (name.given, name.middle) if p)
    if is_han(name.family) or is_han(given):
        return ((name.family or "") + given.replace(" ", "")) or None
    return " ".join(p for p in (given, name.family) if p) or None


# --- TS / DTM / DT --------------------------------------------------------------------------------

_TS = re.compile(
    r"^(?P<y>\d{4})(?P<mo>\d{2})?(?P<d>\d{2})?(?P<h>\d{2})?(?P<mi>\d{2})?(?P<s>\d{2})?"
    r"(?:\.(?P<f>\d{1,4}))?(?P<tz>[+-]\d{4})?$"
)


def fhir_datetime(text: str, location: Location, default_offset: str = "+08:00") -> str:
    """HL7 TS/DTM (YYYY[MM[DD[HH[MM[SS[.S...]]]]]][+/-ZZZZ]) as a FHIR dateTime.

    The precision is kept (1990 -> "1990", 199001 -> "1990-01"); a value with a time and no
    offset is taken in ``default_offset`` (FHIR requires a zone with a time); an hour without
    minutes gets ":00". Anything else, or an impossible date, is a DATA_TYPE_ERROR."""
    match = _TS.match(text.strip())
    if not match:
        raise bad_type(location, "is not an HL7 date/time (YYYYMMDDHHMMSS[+ZZZZ])")
    g = match.groupdict()
    tz = g["tz"]
    if tz is not None and (int(tz[1:3]) > 14 or int(tz[3:5]) > 59):
        raise bad_type(location, "has an impossible time zone offset")
    if g["mo"] is None and g["d"] is None and g["h"] is None:
        return g["y"]
    try:
        date(int(g["y"]), int(g["mo"]), int(g["d"] or "01"))
    except ValueError:
        raise bad_type(location, "is not a real date") from None
    if g["d"] is None:
        if g["h"] is not None:
            raise bad_type(location, "is not an HL7 date/time (YYYYMMDDHHMMSS[+ZZZZ])")
        return f"{g['y']}-{g['mo']}"
    day = f"{g['y']}-{g['mo']}-{g['d']}"
    if g["h"] is None:
        return day  # an offset on a date alone carries nothing FHIR can hold
    hour, minute, second = int(g["h"]), int(g["mi"] or 0), int(g["s"] or 0)
    if hour > 23 or minute > 59 or second > 59:
        raise bad_type(location, "is not a real time of day")
    out = f"{day}T{hour:02d}:{minute:02d}:{second:02d}"
    if g["f"]:
        out += "." + g["f"]
    if tz is not None:
        return out + f"{tz[0]}{tz[1:3]}:{tz[3:5]}"
    return out + default_offset


def fhir_date(text: str, location: Location) -> str:
    """The date part (with its precision) of a DT/TS value."""
    full = fhir_datetime(text, location)
    return full.split("T", 1)[0]


def number(text: str, location: Location) -> int | float:
    """An NM value as a JSON number for a FHIR decimal (no exponent, no NaN)."""
    cleaned = text.strip()
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise bad_type(location, "is not a number") from None
    if not value.is_finite() or "e" in cleaned.lower():
        raise bad_type(location, "is not a plain decimal number")
    if value == value.to_integral_value() and "." not in cleaned:
        return int(value)
    return float(value)
