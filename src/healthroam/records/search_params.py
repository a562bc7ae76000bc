"""Search index extraction for every R4 search parameter, from the official definitions.

Each SearchParameter ``expression`` is compiled once per resource type (``fhirpath.py``) into
closures that walk the parsed JSON and turn what they find into typed index rows, one class per
parameter type, as in HAPI FHIR's index tables:

- ``TokenIndex``     system, code, text (folded display/text for ``:text``), identifier type
- ``StringIndex``    exact value and ``normalized`` (case- and accent-folded, spaces collapsed)
- ``DateIndex``      ``low``/``high`` UTC instants, both inclusive (microsecond precision)
- ``ReferenceIndex`` target type and id, the reference or canonical URL (+ version), identifier
- ``QuantityIndex``  ``low``/``high`` (equal for a Quantity), comparator, system, code, unit, and
  the UCUM-canonical ``canonical_low``/``canonical_high``/``canonical_code`` where trivial
- ``UriIndex``, ``NumberIndex``, ``PositionIndex`` (Location.near), ``CompositeIndex``
  (a tuple of component rows)
- ``TextIndex``      ``_text`` (narrative) and ``_content`` (whole resource) terms, from
  ``fulltext.py`` rather than from an expression (R4 gives these two none)

Dates without a time zone are taken as UTC. ``_id``, ``_lastUpdated``, ``_tag``, ``_profile``,
``_security`` and ``_source`` come from the Resource parameters like any other. Expressions
outside the compiled subset go to ``fhirpathpy`` (see ``fallback_params()``).
"""

from __future__ import annotations

import functools
import importlib
import itertools
import re
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from healthroam.records import fhirpath, fulltext
from healthroam.records.definitions import Definitions, ElementDef, SearchParamDef, load

# --- index rows -----------------------------------------------------------------------------------
# NamedTuples rather than dataclasses: an Observation makes dozens of rows and a tuple is built
# several times faster than a frozen dataclass.


class TokenIndex(NamedTuple):
    param: str
    system: str | None
    code: str | None
    text: str | None = None  # normalised Coding.display / CodeableConcept.text / Identifier.type
    type_system: str | None = None  # Identifier.type coding, for :of-type
    type_code: str | None = None


class StringIndex(NamedTuple):
    param: str
    value: str
    normalized: str


class DateIndex(NamedTuple):
    param: str
    low: datetime | None  # None: open start
    high: datetime | None  # None: open end


class ReferenceIndex(NamedTuple):
    param: str
    target_type: str | None
    target_id: str | None
    url: str | None  # the reference as written (relative, absolute, #contained) or canonical
    version: str | None = None  # canonical |version or _history version
    identifier_system: str | None = None
    identifier_value: str | None = None


class QuantityIndex(NamedTuple):
    param: str
    low: Decimal | None
    high: Decimal | None
    system: str | None
    code: str | None
    unit: str | None
    comparator: str | None = None
    canonical_low: Decimal | None = None
    canonical_high: Decimal | None = None
    canonical_code: str | None = None


class UriIndex(NamedTuple):
    param: str
    uri: str


class NumberIndex(NamedTuple):
    param: str
    value: Decimal


class PositionIndex(NamedTuple):
    param: str
    latitude: Decimal
    longitude: Decimal


class CompositeIndex(NamedTuple):
    param: str
    components: tuple[IndexValue, ...]


class TextIndex(NamedTuple):
    param: str  # _text | _content
    body: str  # the terms, space-separated (fulltext.py)


IndexValue = (
    TokenIndex
    | StringIndex
    | DateIndex
    | ReferenceIndex
    | QuantityIndex
    | UriIndex
    | NumberIndex
    | PositionIndex
    | CompositeIndex
    | TextIndex
)

# --- value helpers --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=65536)
def normalize(text: str) -> str:
    """Case- and accent-folded, whitespace collapsed: the default string match form."""
    if text.isascii():
        return " ".join(text.lower().split())
    stripped = unicodedata.normalize("NFKD", text).translate(fulltext.DROP_COMBINING)
    return " ".join(stripped.casefold().split())


_MICRO = timedelta(microseconds=1)


def date_range(text: str) -> tuple[datetime, datetime] | None:
    """The UTC interval a FHIR date/dateTime/instant covers, both ends inclusive."""
    try:
        n = len(text)
        if n == 4:
            year = int(text)
            return datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC) - _MICRO
        if n == 7:
            year, month = int(text[:4]), int(text[5:7])
            start = datetime(year, month, 1, tzinfo=UTC)
            end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
            return start, end - _MICRO
        if n == 10:
            start = datetime(int(text[:4]), int(text[5:7]), int(text[8:10]), tzinfo=UTC)
            return start, start + timedelta(days=1) - _MICRO
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    if "." in text[19:]:
        return moment, moment
    return moment, moment + timedelta(seconds=1) - _MICRO


def _decimal(value: Any) -> Decimal | None:
    t = type(value)
    if t is float or t is int:
        return Decimal(repr(value))  # repr keeps what JSON said (72.5, not 72.5000000001)
    if t is Decimal:
        return value  # type: ignore[no-any-return]
    if t is str:
        try:
            return Decimal(value)
        except InvalidOperation:
            return None
    return None


_UCUM_BASE = {
    "g": (Decimal(1), "g"),
    "L": (Decimal(1), "L"),
    "l": (Decimal(1), "L"),
    "m": (Decimal(1), "m"),
    "s": (Decimal(1), "s"),
    "mol": (Decimal(1), "mol"),
    "eq": (Decimal(1), "eq"),
    "min": (Decimal(60), "s"),
    "h": (Decimal(3600), "s"),
    "d": (Decimal(86400), "s"),
    "wk": (Decimal(604800), "s"),
}
_UCUM_PREFIX = {
    "k": Decimal("1e3"),
    "d": Decimal("1e-1"),
    "c": Decimal("1e-2"),
    "m": Decimal("1e-3"),
    "u": Decimal("1e-6"),
    "n": Decimal("1e-9"),
    "p": Decimal("1e-12"),
}


def _ucum_unit(unit: str) -> tuple[Decimal, str] | None:
    if unit in _UCUM_BASE:
        return _UCUM_BASE[unit]
    if len(unit) > 1 and unit[0] in _UCUM_PREFIX and unit[1:] in _UCUM_BASE:
        factor, base = _UCUM_BASE[unit[1:]]
        if base == "s" and unit[1:] != "s":
            return None  # no prefixed minutes/hours
        return _UCUM_PREFIX[unit[0]] * factor, base
    return None


@functools.cache
def ucum_canonical(code: str) -> tuple[Decimal, str] | None:
    """(factor, canonical code) for simple UCUM units (``mg`` -> 0.001 ``g``, ``mg/dL``)."""
    if "/" in code:
        num, _, den = code.partition("/")
        top, bottom = _ucum_unit(num), _ucum_unit(den)
        if top is None or bottom is None:
            return None
        return top[0] / bottom[0], f"{top[1]}/{bottom[1]}"
    return _ucum_unit(code)


UCUM = "http://unitsofmeasure.org"

# --- converters: (node, param code, out) for each (search type, FHIR type) ----------------------

Converter = Callable[[Any, list[Any], dict[str, Any]], None]


def _str(v: Any) -> str | None:
    return v if type(v) is str and v else None


def _token_converter(param: str, code: str, el: ElementDef | None, defs: Definitions) -> Converter:
    if code == "CodeableConcept":

        def cc(node: Any, out: list[Any], root: dict[str, Any]) -> None:
            if type(node) is not dict:
                return
            for coding in node.get("coding", ()):
                if type(coding) is dict:
                    display = _str(coding.get("display"))
                    out.append(
                        TokenIndex(
                            param,
                            _str(coding.get("system")),
                            _str(coding.get("code")),
                            normalize(display) if display else None,
                        )
                    )
            text = _str(node.get("text"))
            if text:
                out.append(TokenIndex(param, None, None, normalize(text)))

        return cc
    if code == "Coding":

        def coding(node: Any, out: list[Any], root: dict[str, Any]) -> None:
            if type(node) is dict:
                display = _str(node.get("display"))
                out.append(
                    TokenIndex(
                        param,
                        _str(node.get("system")),
                        _str(node.get("code")),
                        normalize(display) if display else None,
                    )
                )

        return coding
    if code == "Identifier":

        def identifier(node: Any, out: list[Any], root: dict[str, Any]) -> None:
            if type(node) is not dict:
                return
            kind = node.get("type")
            text = type_system = type_code = None
            if type(kind) is dict:
                t = _str(kind.get("text"))
                text = normalize(t) if t else None
                for c in kind.get("coding", ()):
                    if type(c) is dict:
                        type_system, type_code = _str(c.get("system")), _str(c.get("code"))
                        break
            out.append(
                TokenIndex(
                    param,
                    _str(node.get("system")),
                    _str(node.get("value")),
                    text,
                    type_system,
                    type_code,
                )
            )

        return identifier
    if code == "ContactPoint":

        def contact(node: Any, out: list[Any], root: dict[str, Any]) -> None:
            if type(node) is dict and _str(node.get("value")):
                out.append(TokenIndex(param, None, node["value"]))

        return contact
    if code == "boolean":

        def boolean(node: Any, out: list[Any], root: dict[str, Any]) -> None:
            if node is True or node is False:
                out.append(TokenIndex(param, None, "true" if node else "false"))

        return boolean
    if code in ("code", "string", "id", "uri", "url", "canonical", "oid", "uuid", "markdown"):
        system = None
        if el is not None and el.binding is not None:
            vs = defs.value_sets.get(el.binding)
            if vs is not None and len(vs) == 1:
                system = next(iter(vs))

        def primitive(node: Any, out: list[Any], root: dict[str, Any]) -> None:
            if type(node) is str and node:
                out.append(TokenIndex(param, system, node))

        return primitive
    raise fhirpath.Unsupported(f"token on {code}")


_NAME_PARTS = ("text", "family", "given", "prefix", "suffix")
_ADDRESS_PARTS = ("text", "line", "city", "district", "state", "postalCode", "country")


def _string_converter(param: str, code: str) -> Converter:
    def add(value: Any, out: list[Any]) -> None:
        if type(value) is str and value:
            out.append(StringIndex(param, value, normalize(value)))

    parts: tuple[str, ...] | None = None
    if code == "HumanName":
        parts = _NAME_PARTS
    elif code == "Address":
        parts = _ADDRESS_PARTS
    if parts is not None:
        keys = parts

        def composite(node: Any, out: list[Any], root: dict[str, Any]) -> None:
            if type(node) is not dict:
                return
            for key in keys:
                v = node.get(key)
                if type(v) is list:
                    for item in v:
                        add(item, out)
                elif v is not None:
                    add(v, out)

        return composite
    if code in ("string", "markdown", "code", "id", "uri", "url", "canonical", "xhtml"):

        def primitive(node: Any, out: list[Any], root: dict[str, Any]) -> None:
            add(node, out)

        return primitive
    raise fhirpath.Unsupported(f"string on {code}")


def _date_converter(param: str, code: str) -> Converter:
    if code in ("date", "dateTime", "instant"):

        def moment(node: Any, out: list[Any], root: dict[str, Any]) -> None:
            if type(node) is str:
                span = date_range(node)
                if span is not None:
                    out.append(DateIndex(param, span[0], span[1]))

        return moment
    if code == "Period":

        def period(node: Any, out: list[Any], root: dict[str, Any]) -> None:
            if type(node) is not dict:
                return
            start, end = node.get("start"), node.get("end")
            low = date_range(start) if type(start) is str else None
            high = date_range(end) if type(end) is str else None
            if low is not None or high is not None:
                out.append(DateIndex(param, low and low[0], high and high[1]))

        return period
    if code == "Timing":
        inner = _date_converter(param, "Period")

        def timing(node: Any, out: list[Any], root: dict[str, Any]) -> None:
            if type(node) is not dict:
                return
            spans = [date_range(e) for e in node.get("event", ()) if type(e) is str]
            found = [s for s in spans if s is not None]
            if found:
                out.append(DateIndex(param, min(s[0] for s in found), max(s[1] for s in found)))
            repeat = node.get("repeat")
            if type(repeat) is dict and type(repeat.get("boundsPeriod")) is dict:
                inner(repeat["boundsPeriod"], out, root)

        return timing
    raise fhirpath.Unsupported(f"date on {code}")


def _split_reference(ref: str) -> tuple[str | None, str | None, str | None]:
    """(type, id, version) of a literal reference: relative, absolute or with _history."""
    if ref.startswith(("#", "urn:")):
        return None, None, None
    parts = ref.split("/")
    if len(parts) >= 4 and parts[-2] == "_history" and parts[-4][:1].isupper():
        return parts[-4], parts[-3], parts[-1]
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return parts[-2], parts[-1], None
    return None, None, None


def _reference_converter(param: str, code: str) -> Converter:
    if code == "Resource":  # Bundle.entry[0].resource: the resource itself is the target

        def resource(node: Any, out: list[Any], root: dict[str, Any]) -> None:
            if type(node) is dict and _str(node.get("resourceType")):
                rid = _str(node.get("id"))
                url = f"{node['resourceType']}/{rid}" if rid else None
                out.append(ReferenceIndex(param, node["resourceType"], rid, url))

        return resource
    if code == "Reference":

        def reference(node: Any, out: list[Any], root: dict[str, Any]) -> None:
            if type(node) is not dict:
                return
            ref = _str(node.get("reference"))
            target_type = target_id = version = None
            if ref is not None:
                target_type, target_id, version = _split_reference(ref)
                if target_type is None:
                    target_type = fhirpath.reference_type(node, root)
            else:
                target_type = _str(node.get("type"))
            ident = node.get("identifier")
            id_system = id_value = None
            if type(ident) is dict:
                id_system, id_value = _str(ident.get("system")), _str(ident.get("value"))
            if ref is None and id_value is None:
                return
            out.append(
                ReferenceIndex(param, target_type, target_id, ref, version, id_system, id_value)
            )

        return reference
    if code in ("canonical", "uri", "url"):

        def canonical(node: Any, out: list[Any], root: dict[str, Any]) -> None:
            if type(node) is str and node:
                url, _, version = node.partition("|")
                target_type, target_id, _v = _split_reference(url)
                out.append(ReferenceIndex(param, target_type, target_id, url, version or None))

        return canonical
    raise fhirpath.Unsupported(f"reference on {code}")


_QUANTITY_TYPES = frozenset(
    {"Quantity", "Age", "Duration", "Distance", "Count", "SimpleQuantity", "MoneyQuantity"}
)


def _quantity_row(param: str, q: dict[str, Any], low: Any, high: Any) -> QuantityIndex | None:
    lo = _decimal(low)
    hi = lo if high is low else _decimal(high)
    if lo is None and hi is None:
        return None
    system, code, unit = _str(q.get("system")), _str(q.get("code")), _str(q.get("unit"))
    c_lo = c_hi = c_code = None
    if system == UCUM and code is not None:
        canon = ucum_canonical(code)
        if canon is not None:
            factor, c_code = canon
            c_lo = None if lo is None else lo * factor
            c_hi = None if hi is None else hi * factor
    return QuantityIndex(
        param, lo, hi, system, code, unit, _str(q.get("comparator")), c_lo, c_hi, c_code
    )


def _quantity_converter(param: str, code: str) -> Converter:
    if code in _QUANTITY_TYPES:

        def quantity(node: Any, out: list[Any], root: dict[str, Any]) -> None:
            if type(node) is dict:
                row = _quantity_row(param, node, node.get("value"), node.get("value"))
                if row is not None:
                    out.append(row)

        return quantity
    if code == "Money":

        def money(node: Any, out: list[Any], root: dict[str, Any]) -> None:
            if type(node) is dict:
                value = _decimal(node.get("value"))
                if value is not None:
                    currency = _str(node.get("currency"))
                    out.append(
                        QuantityIndex(param, value, value, "urn:iso:std:iso:4217", currency, None)
                    )

        return money
    if code == "Range":

        def range_(node: Any, out: list[Any], root: dict[str, Any]) -> None:
            if type(node) is not dict:
                return
            low, high = node.get("low"), node.get("high")
            low = low if type(low) is dict else {}
            high = high if type(high) is dict else {}
            units = low if low.get("value") is not None else high
            row = _quantity_row(param, units, low.get("value"), high.get("value"))
            if row is not None:
                out.append(row)

        return range_
    if code == "SampledData":

        def sampled(node: Any, out: list[Any], root: dict[str, Any]) -> None:
            return  # the data are a series, not one quantity; HAPI does not index them either

        return sampled
    raise fhirpath.Unsupported(f"quantity on {code}")


def _uri_converter(param: str, code: str) -> Converter:
    if code in ("uri", "url", "canonical", "oid", "uuid", "string", "code", "id"):

        def uri(node: Any, out: list[Any], root: dict[str, Any]) -> None:
            if type(node) is str and node:
                out.append(UriIndex(param, node))

        return uri
    raise fhirpath.Unsupported(f"uri on {code}")


def _number_converter(param: str, code: str) -> Converter:
    if code in ("decimal", "integer", "positiveInt", "unsignedInt"):

        def number(node: Any, out: list[Any], root: dict[str, Any]) -> None:
            value = _decimal(node)
            if value is not None:
                out.append(NumberIndex(param, value))

        return number
    raise fhirpath.Unsupported(f"number on {code}")


def _special_converter(param: str, code: str) -> Converter:
    if param == "near" and code == "BackboneElement":

        def position(node: Any, out: list[Any], root: dict[str, Any]) -> None:
            if type(node) is dict:
                lat, lon = _decimal(node.get("latitude")), _decimal(node.get("longitude"))
                if lat is not None and lon is not None:
                    out.append(PositionIndex(param, lat, lon))

        return position
    raise fhirpath.Unsupported(f"special {param}")


def converter(
    search_type: str, param: str, code: str, el: ElementDef | None, defs: Definitions
) -> Converter:
    if search_type == "token":
        return _token_converter(param, code, el, defs)
    if search_type == "string":
        return _string_converter(param, code)
    if search_type == "date":
        return _date_converter(param, code)
    if search_type == "reference":
        return _reference_converter(param, code)
    if search_type == "quantity":
        return _quantity_converter(param, code)
    if search_type == "uri":
        return _uri_converter(param, code)
    if search_type == "number":
        return _number_converter(param, code)
    if search_type == "special":
        return _special_converter(param, code)
    raise fhirpath.Unsupported(search_type)


# --- compiling parameters -------------------------------------------------------------------------


# (first JSON key of the path or None, walker for the rest of it)
Entry = tuple[str | None, fhirpath.Walker]


@dataclass(frozen=True)
class CompiledParam:
    definition: SearchParamDef
    resource_type: str
    native: bool  # False: evaluated by the fallback FHIRPath engine
    entries: tuple[Entry, ...]

    @functools.cached_property
    def extract(self) -> fhirpath.Walker:
        """(resource, out, resource) -> appends this parameter's IndexValue rows."""
        return _combine([_keyed(key, w) if key else w for key, w in self.entries])

    def values(self, resource: dict[str, Any]) -> list[IndexValue]:
        out: list[IndexValue] = []
        self.extract(resource, out, resource)
        return out


def _keyed(key: str, rest: fhirpath.Walker) -> fhirpath.Walker:
    return fhirpath.walker(fhirpath.Path(False, (fhirpath.Step("key", key),), "", None), rest)


def _dispatch(entries: list[Entry]) -> fhirpath.Walker:
    """One extractor for a resource type: visit each top-level key once."""
    always = tuple(w for key, w in entries if key is None)
    by_key: dict[str, list[fhirpath.Walker]] = {}
    for key, w in entries:
        if key is not None:
            by_key.setdefault(key, []).append(w)
    table = {k: tuple(v) for k, v in by_key.items()}

    def extract(resource: Any, out: list[Any], root: dict[str, Any]) -> None:
        for w in always:
            w(resource, out, root)
        for key, value in resource.items():
            walkers = table.get(key)
            if walkers is None:
                continue
            if type(value) is list:
                for item in value:
                    if item is not None:
                        for w in walkers:
                            w(item, out, root)
            else:
                for w in walkers:
                    w(value, out, root)

    return extract


_EXISTS_NOT_FALSE = re.compile(r"(\w+(?:\.\w+)*)\.exists\(\) and \1 != false")


def _exists_not_false(
    defs: Definitions, sp: SearchParamDef, resource_type: str, path_text: str
) -> fhirpath.Walker:
    """``X.exists() and X != false`` (Patient.deceased): a token true/false, always present."""
    found = [
        fhirpath.walker(path, _collect)
        for path, _end in fhirpath.resolve(defs, path_text, (resource_type, ""), resource_type)
    ]
    every, param = _combine(found), sp.code

    def deceased(node: Any, out: list[Any], root: dict[str, Any]) -> None:
        values: list[Any] = []
        every(node, values, root)
        flag = bool(values) and values != [False]
        out.append(TokenIndex(param, None, "true" if flag else "false"))

    return deceased


def _collect(node: Any, out: list[Any], root: dict[str, Any]) -> None:
    out.append(node)


def _compile_native(
    defs: Definitions, sp: SearchParamDef, resource_type: str, by_url: dict[str, SearchParamDef]
) -> list[Entry]:
    assert sp.expression is not None
    special = _EXISTS_NOT_FALSE.fullmatch(sp.expression)
    if special is not None and sp.type == "token":
        return [(None, _exists_not_false(defs, sp, resource_type, special.group(1)))]
    context = (resource_type, "")
    resolved = fhirpath.resolve(defs, sp.expression, context, resource_type)
    walkers: list[Entry] = []
    if sp.type == "composite":
        for path, end in resolved:
            walkers.append(fhirpath.split(path, _composite(defs, sp, resource_type, end, by_url)))
        return walkers
    reasons = []
    for path, _end in resolved:
        try:
            convert = converter(sp.type, sp.code, path.type_code, path.element, defs)
        except fhirpath.Unsupported as exc:
            # A choice alternative the parameter type cannot index (a date parameter over
            # occurrenceString, a number over a Range): no rows for it, as in HAPI FHIR.
            reasons.append(str(exc))
            continue
        walkers.append(fhirpath.split(path, convert))
    if not walkers and reasons:
        raise fhirpath.Unsupported("; ".join(reasons))
    if reasons:
        SKIPPED.append((resource_type, sp.code, "; ".join(reasons)))
    return walkers


# (resource type, parameter, why) for choice alternatives left out of a parameter's index
SKIPPED: list[tuple[str, str, str]] = []


def _nothing(node: Any, out: list[Any], root: dict[str, Any]) -> None:
    return


def _combine(walkers: list[fhirpath.Walker]) -> fhirpath.Walker:
    if not walkers:
        return _nothing
    if len(walkers) == 1:
        return walkers[0]
    items = tuple(walkers)

    def every(node: Any, out: list[Any], root: dict[str, Any]) -> None:
        for w in items:
            w(node, out, root)

    return every


def _composite(
    defs: Definitions,
    sp: SearchParamDef,
    resource_type: str,
    context: tuple[str, str],
    by_url: dict[str, SearchParamDef],
) -> Converter:
    parts: list[fhirpath.Walker] = []
    for url, expression in sp.components:
        component = by_url.get(url)
        if component is None:
            raise fhirpath.Unsupported(f"composite component {url}")
        walkers = []
        for path, _end in fhirpath.resolve(defs, expression, context, resource_type):
            try:
                convert = converter(
                    component.type, component.code, path.type_code, path.element, defs
                )
            except fhirpath.Unsupported:
                # R4 has components whose expression does not fit the referenced parameter
                # (DocumentReference-relationship: its code is bound to a reference parameter;
                # Group-characteristic-value: a token over value[x]). Index by the FHIR type.
                natural = _NATURAL_SEARCH_TYPE.get(path.type_code)
                if natural is None:
                    continue
                convert = converter(natural, component.code, path.type_code, path.element, defs)
            walkers.append(fhirpath.walker(path, convert))
        parts.append(_combine(walkers))
    param = sp.code
    # Last component first: it is the value part (value-quantity, value-concept ...) that is
    # usually absent, so most composites stop before converting the code.
    backwards = tuple(reversed(parts))

    def composite(node: Any, out: list[Any], root: dict[str, Any]) -> None:
        values: list[list[Any]] = []
        for part in backwards:
            found: list[Any] = []
            part(node, found, root)
            if not found:
                return
            values.append(found)
        values.reverse()
        for combo in itertools.product(*values):
            out.append(CompositeIndex(param, combo))

    return composite


_NATURAL_SEARCH_TYPE = {
    "code": "token",
    "Coding": "token",
    "CodeableConcept": "token",
    "Identifier": "token",
    "boolean": "token",
    "Quantity": "quantity",
    "Range": "quantity",
    "Reference": "reference",
    "string": "string",
    "dateTime": "date",
    "Period": "date",
}


def _compile_fallback(sp: SearchParamDef, resource_type: str) -> fhirpath.Walker:
    """Evaluate with fhirpathpy (the R4 model) and convert the untyped results."""
    assert sp.expression is not None
    try:  # optional: no R4 parameter needs it today (see fallback_params())
        engine = importlib.import_module("fhirpathpy")
        models = importlib.import_module("fhirpathpy.models").models
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise fhirpath.Unsupported("fhirpathpy is not installed") from exc
    compiled: Callable[[dict[str, Any]], list[Any]] = engine.compile(
        sp.expression, model=models["r4"]
    )
    param, search_type = sp.code, sp.type

    def evaluate(node: Any, out: list[Any], root: dict[str, Any]) -> None:
        for value in compiled(root):
            _sniff(search_type, param, value, out, root)

    return evaluate


def _sniff(search_type: str, param: str, value: Any, out: list[Any], root: dict[str, Any]) -> None:
    if value is True or value is False:
        code = "boolean"
    elif isinstance(value, str):
        code = {"date": "dateTime", "reference": "canonical", "uri": "uri"}.get(search_type, "code")
    elif isinstance(value, int | float | Decimal):
        code = "decimal"
    elif isinstance(value, dict):
        if "coding" in value or "text" in value:
            code = "CodeableConcept"
        elif "reference" in value:
            code = "Reference"
        elif "start" in value or "end" in value:
            code = "Period"
        elif "value" in value and search_type == "quantity":
            code = "Quantity"
        elif "code" in value:
            code = "Coding"
        else:
            code = "Identifier"
    else:
        return
    try:
        converter(search_type, param, code, None, load())(value, out, root)
    except fhirpath.Unsupported:
        return


class SearchIndex:
    """Every search parameter of every resource type, compiled."""

    def __init__(self, defs: Definitions) -> None:
        self.defs = defs
        by_url = {sp.url: sp for sp in defs.search_params}
        self.params: dict[str, dict[str, CompiledParam]] = {t: {} for t in defs.resource_types}
        self.unsupported: list[tuple[str, str, str]] = []  # (type, code, reason)
        for sp in defs.search_params:
            if sp.expression is None:
                continue  # _text, _content, _query: not index rows
            for resource_type in self._types_of(sp):
                compiled = self._compile(sp, resource_type, by_url)
                if compiled is not None:
                    self.params[resource_type][sp.code] = compiled
        self.extractors = {
            t: _dispatch([e for p in ps.values() for e in p.entries]) if ps else None
            for t, ps in self.params.items()
        }

    def _types_of(self, sp: SearchParamDef) -> list[str]:
        if "Resource" in sp.base or "DomainResource" in sp.base:
            return sorted(self.defs.resource_types)
        return [b for b in sp.base if b in self.defs.resource_types]

    def _compile(
        self, sp: SearchParamDef, resource_type: str, by_url: dict[str, SearchParamDef]
    ) -> CompiledParam | None:
        try:
            entries = _compile_native(self.defs, sp, resource_type, by_url)
            return CompiledParam(sp, resource_type, True, tuple(entries))
        except fhirpath.Unsupported as native_reason:
            try:
                walker = _compile_fallback(sp, resource_type)
            except Exception as exc:  # any engine failure means "not indexed", never a crash
                self.unsupported.append((resource_type, sp.code, f"{native_reason}; {exc}"))
                return None
            return CompiledParam(sp, resource_type, False, ((None, walker),))


_index: SearchIndex | None = None
_index_lock = threading.Lock()


def search_index() -> SearchIndex:
    """The compiled parameters, built once per process on first use (the API server starts
    building them at startup; a request that comes meanwhile waits for that build)."""
    global _index
    index = _index
    if index is None:
        with _index_lock:
            if _index is None:
                _index = SearchIndex(load())
            index = _index
    return index


def parameters(resource_type: str) -> dict[str, CompiledParam]:
    """The search parameters of a resource type by code (``birthdate``, ``_id`` ...)."""
    return search_index().params.get(resource_type, {})


def fallback_params() -> list[tuple[str, str]]:
    """(resource type, code) of the parameters evaluated by the general FHIRPath engine."""
    return sorted(
        (t, code)
        for t, ps in search_index().params.items()
        for code, p in ps.items()
        if not p.native
    )


def extract_index_values(resource: dict[str, Any]) -> list[IndexValue]:
    """Every index row of a (validated) resource, for all of its type's search parameters."""
    resource_type = resource.get("resourceType")
    extractor = search_index().extractors.get(resource_type)  # type: ignore[arg-type]
    out: list[IndexValue] = []
    if extractor is not None:
        extractor(resource, out, resource)
        domain = resource_type not in fulltext.NO_NARRATIVE
        out.extend(TextIndex(p, b) for p, b in fulltext.index_bodies(resource, domain))
    return out
