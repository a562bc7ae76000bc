"""FHIR search requests, parsed into plain clauses (the repository turns them into SQL).

A query string becomes a :class:`SearchRequest`: filter clauses (ANDed; the values inside a
clause are ORed), result parameters (``_include``, ``_sort``, ``_count`` ...) and the
parameters this server does not know (reported, or refused with ``Prefer: handling=strict``).

Clauses:
- :class:`Match`    one parameter of the resource's own type, with a modifier and its values
- :class:`Missing`  ``param:missing=true|false``
- :class:`Chain`    ``subject.name=x`` / ``subject:Patient.identifier=x``: a reference whose
  target (one clause per candidate target type, ORed) satisfies the rest of the chain
- :class:`Has`      ``_has:Observation:patient:code=x``: resources of another type point here
  with that reference parameter and satisfy the clause

``_text`` and ``_content`` are ``Match`` clauses of kind ``fulltext`` (``fulltext.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from healthroam.errors import InvalidInput
from healthroam.records import fulltext, hierarchy
from healthroam.records.definitions import load
from healthroam.records.search_params import date_range, normalize, parameters
from healthroam.records.validation import SUPPORTED_TYPES

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
RESULT_PARAMS = frozenset(
    {
        "_include",
        "_revinclude",
        "_sort",
        "_count",
        "_summary",
        "_total",
        "_elements",
        "_format",
        "_pretty",
        "_cursor",
        "_snapshot",
        "_offset",
    }
)
MODIFIERS = {
    "token": {"not", "text", "of-type", "above", "below", "missing"},
    "string": {"exact", "contains", "text", "missing"},
    "date": {"missing"},
    "reference": {"identifier", "missing"},  # and a resource type
    "quantity": {"missing"},
    "number": {"missing"},
    "uri": {"above", "below", "missing"},
    "composite": {"missing"},
    "fulltext": {"missing"},  # _text, _content
    "_id": {"not", "missing"},
}
FULLTEXT = ("_text", "_content")
DEFAULT_COUNT, MAX_COUNT = 20, 1000
# ORed values (and parameters) one search may carry: each is a condition in the statement,
# and thousands take the database seconds to compile and run (30,000 about a minute on
# SQLite), a cheap way to tie up a server. 1,000 ids or codes per request is far beyond a
# clinical query and what the shape cache of decision 0054 keeps.
MAX_VALUES = 1000
SORTABLE = frozenset({"string", "date", "token", "number", "quantity", "reference", "uri"})
_UNESCAPED_COMMA = re.compile(r"(?<!\\),")


class UnknownParameter(InvalidInput):
    """A search parameter this server does not support on the type."""


@dataclass(frozen=True, slots=True)
class Match:
    code: str
    kind: str  # token string date reference quantity uri number composite _id _lastUpdated
    # fulltext (_text, _content)
    modifier: str | None
    values: tuple[str, ...]
    components: tuple[str, ...] = ()  # composite: the component parameter types


@dataclass(frozen=True, slots=True)
class Missing:
    code: str
    kind: str
    missing: bool


@dataclass(frozen=True, slots=True)
class Chain:
    code: str  # the reference parameter
    targets: tuple[tuple[str, Clause], ...]  # (target type, clause on it), ORed


@dataclass(frozen=True, slots=True)
class Has:
    source_type: str
    code: str  # the source type's reference parameter pointing here
    clause: Clause


Clause = Match | Missing | Chain | Has


@dataclass(frozen=True, slots=True)
class Include:
    source_type: str
    code: str  # "*" for every reference parameter
    target_type: str | None
    iterate: bool


@dataclass(frozen=True, slots=True)
class SortKey:
    code: str
    kind: str
    descending: bool


@dataclass(slots=True)
class SearchRequest:
    resource_type: str
    clauses: list[Clause] = field(default_factory=list)
    includes: list[Include] = field(default_factory=list)
    revincludes: list[Include] = field(default_factory=list)
    sort: list[SortKey] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    summary: str | None = None  # count | true | text | data | false
    total: str | None = None  # none | estimate | accurate
    elements: tuple[str, ...] = ()
    cursor: tuple[datetime, str] | None = None  # keyset paging (default order)
    snapshot: str | None = None  # stored result list (sorted searches)
    offset: int = 0
    unknown: list[str] = field(default_factory=list)


def split_values(value: str) -> tuple[str, ...]:
    """The ORed values of one parameter: commas separate, ``\\,`` is a literal comma."""
    return tuple(v.replace("\\,", ",") for v in _UNESCAPED_COMMA.split(value) if v != "")


def check_type(resource_type: str) -> None:
    if resource_type not in SUPPORTED_TYPES:
        raise InvalidInput(f"{resource_type} is not an R4 resource type", expression="type")


def _kind(resource_type: str, code: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(parameter type, targets, component types) of a parameter on a resource type."""
    if code == "_id":
        return "_id", (), ()
    if code == "_lastUpdated":
        return "_lastUpdated", (), ()
    if code in FULLTEXT and not (code == "_text" and resource_type in fulltext.NO_NARRATIVE):
        return "fulltext", (), ()
    compiled = parameters(resource_type).get(code)
    if compiled is None or compiled.definition.type == "special":
        raise UnknownParameter(
            f"unknown search parameter '{code}' on {resource_type}", expression=code
        )
    components: tuple[str, ...] = ()
    if compiled.definition.type == "composite":
        by_url = {sp.url: sp for sp in load().search_params}
        components = tuple(by_url[url].type for url, _ in compiled.definition.components)
    return compiled.definition.type, compiled.definition.target, components


def parse_clause(resource_type: str, name: str, value: str) -> Clause:
    """One filter parameter (name may carry modifiers, a chain or ``_has``)."""
    if name.startswith("_has:"):
        parts = name.split(":", 3)
        if len(parts) != 4 or not parts[3]:
            raise InvalidInput("_has takes _has:Type:reference:parameter", expression=name)
        _, source, code, rest = parts
        check_type(source)
        kind, _targets, _ = _kind(source, code)
        if kind != "reference":
            raise InvalidInput(f"{source}.{code} is not a reference parameter", expression=name)
        return Has(source, code, parse_clause(source, rest, value))
    head, dot, tail = name.partition(".")
    code, colon, modifier = head.partition(":")
    kind, targets, components = _kind(resource_type, code)
    if dot:
        if kind != "reference":
            raise InvalidInput(f"only reference parameters can be chained: {code}", expression=name)
        if colon:
            check_type(modifier)
            candidates: tuple[str, ...] = (modifier,)
        else:
            inner = tail.split(".", 1)[0].split(":", 1)[0]
            candidates = tuple(
                t
                for t in (targets or tuple(sorted(SUPPORTED_TYPES)))
                if t in SUPPORTED_TYPES
                and (inner in ("_id", "_lastUpdated", *FULLTEXT) or inner in parameters(t))
            )
            if not candidates:
                raise UnknownParameter(
                    f"no target of {resource_type}.{code} has a parameter '{inner}'",
                    expression=name,
                )
        return Chain(code, tuple((t, parse_clause(t, tail, value)) for t in candidates))
    mod = modifier if colon else None
    if mod == "missing":
        if value not in ("true", "false"):
            raise InvalidInput(":missing takes true or false", expression=name)
        return Missing(code, kind, value == "true")
    if (
        mod is not None
        and mod not in MODIFIERS.get(kind, set())
        and not (kind == "reference" and mod in SUPPORTED_TYPES)
    ):
        raise InvalidInput(f"modifier :{mod} is not supported on {code}", expression=name)
    values = split_values(value)
    if not values:
        raise InvalidInput(f"{name} needs a value", expression=name)
    for v in values:
        _check_value(kind, v, name, components, mod)
    return Match(code, kind, mod, values, components)


def _check_value(
    kind: str, value: str, name: str, components: tuple[str, ...], modifier: str | None = None
) -> None:
    if kind == "fulltext":
        phrases = fulltext.parse_query(value)
        if not phrases:
            raise InvalidInput(f"{name} needs words (letters or digits)", expression=name)
        if fulltext.query_size(phrases) > fulltext.MAX_QUERY_TERMS:
            raise InvalidInput(f"{name} has too many words", expression=name)
    elif modifier == "text":
        if not text_words(value):
            raise InvalidInput(f"{name} needs words (letters or digits)", expression=name)
    elif kind == "token" and modifier in ("above", "below"):
        hierarchy.check_token(value, name, modifier)
    elif kind == "uri" and modifier in ("above", "below"):
        hierarchy.check_uri(value, name, modifier)
    elif kind in ("date", "_lastUpdated"):
        parse_date(value, name)
    elif kind in ("number", "quantity"):
        parse_number(value.split("|", 1)[0], name)
    elif kind == "composite":
        parts = value.split("$")
        if len(parts) != len(components):
            raise InvalidInput(
                f"{name} takes {len(components)} components separated by $", expression=name
            )
        for part, component in zip(parts, components, strict=True):
            _check_value(component, part, name, ())


def text_words(value: str) -> list[str]:
    """The folded words of a ``:text`` search (string and token), at most 16."""
    return [w for w in normalize(value).split() if any(c.isalnum() for c in w)][:16]


def split_prefix(value: str) -> tuple[str, str]:
    if value[:2] in PREFIXES and len(value) > 2 and not value[2].isalpha():
        return value[:2], value[2:]
    return "eq", value


def parse_date(value: str, name: str) -> tuple[str, datetime, datetime]:
    """(prefix, low, high): the UTC interval the search value covers, both ends inclusive."""
    prefix, text = split_prefix(value)
    interval = date_range(text) if len(text) >= 4 else None
    if interval is None:
        raise InvalidInput(f"{name} must be a FHIR date, dateTime or instant", expression=name)
    return prefix, interval[0], interval[1]


def parse_number(value: str, name: str) -> tuple[str, Decimal, Decimal]:
    """(prefix, value, half of its implied precision): ``100`` is [99.5, 100.5)."""
    prefix, text = split_prefix(value)
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise InvalidInput(f"{name} must be a number", expression=name) from None
    if not number.is_finite():
        raise InvalidInput(f"{name} must be a number", expression=name)
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)
    return prefix, number, Decimal(5) * Decimal(10) ** (exponent - 1)


def _include(value: str, name: str, reverse: bool) -> Include:
    iterate = name.endswith(":iterate") or name.endswith(":recurse")
    if value == "*":
        return Include("*", "*", None, iterate)
    parts = value.split(":")
    if len(parts) not in (2, 3):
        raise InvalidInput(f"{name} takes Type:parameter[:targetType]", expression=name)
    check_type(parts[0])
    target = parts[2] if len(parts) == 3 else None
    if target is not None:
        check_type(target)
    if parts[1] != "*":
        kind, _, _ = _kind(parts[0], parts[1])
        if kind != "reference":
            raise InvalidInput(f"{value} is not a reference parameter", expression=name)
    return Include(parts[0], parts[1], target, iterate)


def parse_search(
    resource_type: str, items: list[tuple[str, str]], *, strict: bool = False
) -> SearchRequest:
    """A search request from the query's (name, value) pairs, in order."""
    check_type(resource_type)
    request = SearchRequest(resource_type)
    ored = 0
    for name, value in items:
        base = name.split(":", 1)[0]
        if base in RESULT_PARAMS:
            _result_param(request, name, base, value)
            continue
        ored += value.count(",") + 1
        if ored > MAX_VALUES:
            raise InvalidInput(
                f"a search takes at most {MAX_VALUES:,} values in all (comma-separated "
                f"values and parameters); {name} goes past it",
                expression=name,
            )
        try:
            request.clauses.append(parse_clause(resource_type, name, value))
        except UnknownParameter:
            if strict:
                raise
            request.unknown.append(name)
    return request


def _integer(value: str, name: str, low: int) -> int:
    if not value.isdigit() or int(value) < low:
        raise InvalidInput(f"{name} must be an integer of at least {low}", expression=name)
    return int(value)


def _result_param(request: SearchRequest, name: str, base: str, value: str) -> None:
    if base == "_include":
        request.includes.append(_include(value, name, False))
    elif base == "_revinclude":
        request.revincludes.append(_include(value, name, True))
    elif base == "_count":
        request.count = min(_integer(value, name, 0), MAX_COUNT)
    elif base == "_summary":
        if value not in ("count", "true", "text", "data", "false"):
            raise InvalidInput("_summary is count, true, text, data or false", expression=name)
        request.summary = value
    elif base == "_total":
        if value not in ("none", "estimate", "accurate"):
            raise InvalidInput("_total is none, estimate or accurate", expression=name)
        request.total = value
    elif base == "_elements":
        request.elements = tuple(e.strip() for e in value.split(",") if e.strip())
    elif base == "_sort":
        for key in value.split(","):
            code = key.removeprefix("-")
            kind, _, _ = _kind(request.resource_type, code)
            if kind not in SORTABLE and kind not in ("_id", "_lastUpdated"):
                raise InvalidInput(f"cannot sort on {code}", expression=name)
            request.sort.append(SortKey(code, kind, key.startswith("-")))
    elif base == "_cursor":
        moment, _, rid = value.partition("|")
        try:
            request.cursor = (datetime.fromisoformat(moment), rid)
        except ValueError:
            raise InvalidInput("_cursor is not valid", expression=name) from None
    elif base == "_snapshot":
        request.snapshot = value
    elif base == "_offset":
        request.offset = _integer(value, name, 0)


_SUMMARY_ELEMENTS = frozenset(
    {
        "identifier",
        "active",
        "status",
        "intent",
        "category",
        "code",
        "type",
        "subject",
        "patient",
        "encounter",
        "name",
        "gender",
        "birthDate",
        "deceasedBoolean",
        "deceasedDateTime",
        "effectiveDateTime",
        "effectivePeriod",
        "issued",
        "date",
        "period",
        "class",
        "url",
        "version",
        "title",
    }
)
SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}


def subset(resource: dict[str, Any], request: SearchRequest) -> dict[str, Any]:
    """Apply ``_elements`` or ``_summary=true|text|data`` to a served resource."""
    keep: set[str] | None = None
    if request.elements:
        keep = set(request.elements)
    elif request.summary == "true":
        keep = set(_SUMMARY_ELEMENTS)
    elif request.summary == "text":
        keep = {"text"}
    elif request.summary == "data":
        out = {k: v for k, v in resource.items() if k != "text"}
        return _mark(out)
    if keep is None:
        return resource
    always = {"resourceType", "id", "meta"}
    return _mark({k: v for k, v in resource.items() if k in keep or k in always})


def _mark(resource: dict[str, Any]) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    return {**resource, "meta": meta}
