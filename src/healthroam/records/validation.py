"""Structural validation of FHIR R4 resources against the official definitions.

The compiled definitions (``definitions.py``) are turned, once per process, into one checker
closure per resource, datatype and backbone element. A checker walks the parsed JSON and checks
JSON types and regexes of primitives, cardinality (arrays vs single values, min and max), required
elements, unknown elements (``_x`` primitive-extension siblings allowed), exactly one type per
choice element, required-strength bindings whose value set could be expanded, extension shape
(ext-1), and nested resources (``contained``, ``Bundle.entry.resource``,
``Parameters.parameter.resource``) by their own ``resourceType``.

Every problem names its element as a FHIRPath-like expression with indexes, such as
``Patient.name[0].given[1]`` or ``Bundle.entry[3].resource.status``. Messages never quote the
offending value (it may be personal data).

Checkers build no path strings on the happy path: a failure raises ``_Fail`` and each level adds
its path segment while the exception unwinds.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from healthroam.errors import InvalidInput, Unprocessable
from healthroam.records.definitions import Definitions, ElementDef, TypeDef, load

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
MAX_ISSUES = 100

# (value, collect-all) -> True when a primitive list held a null (needs its ``_x`` sibling)
Checker = Callable[[Any, bool], Any]


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem, shaped for an OperationOutcome issue."""

    expression: str
    message: str
    code: str = "structure"  # FHIR IssueType: structure | required | value | code-invalid
    severity: str = "error"


class _Fail(Exception):
    """Raised by checkers; ``issues`` hold [message, code, reversed path segments]."""

    __slots__ = ("issues",)

    def __init__(self, issues: list[tuple[str, str, list[str]]]) -> None:
        super().__init__()
        self.issues = issues

    def prefix(self, segment: str) -> _Fail:
        for issue in self.issues:
            issue[2].append(segment)
        return self


def _fail(message: str, code: str = "value") -> _Fail:
    return _Fail([(message, code, [])])


def _expression(root: str, segments: list[str]) -> str:
    out = root
    for seg in reversed(segments):
        out = out + seg if seg.startswith("[") else f"{out}.{seg}"
    return out


# --- primitives --------------------------------------------------------------------------------

_INT32 = (-(2**31), 2**31 - 1)
_B64_CHARS = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def _real_date(text: str) -> bool:
    if len(text) < 10:
        return True
    try:
        date(int(text[0:4]), int(text[5:7]), int(text[8:10]))
    except ValueError:
        return False
    return True


def _primitive_checker(name: str, json_kind: str, regex: str | None) -> Checker:
    label = f"is not a valid {name}"
    if json_kind == "boolean":

        def check_bool(v: Any, collect: bool) -> None:
            if v is not True and v is not False:
                raise _fail(f"{label} (JSON true or false)")

        return check_bool
    if json_kind == "integer":
        low = 1 if name == "positiveInt" else 0 if name == "unsignedInt" else _INT32[0]
        high = _INT32[1]

        def check_int(v: Any, collect: bool) -> None:
            if type(v) is not int or not low <= v <= high:
                raise _fail(f"{label} (a JSON integer in range)")

        return check_int
    if json_kind == "number":

        def check_decimal(v: Any, collect: bool) -> None:
            t = type(v)
            if t is int:
                return
            if t is not float or not math.isfinite(v):
                raise _fail(f"{label} (a JSON number)")

        return check_decimal
    if name == "base64Binary":
        # The spec's regex backtracks badly on long invalid input; this is equivalent.
        def check_b64(v: Any, collect: bool) -> None:
            if type(v) is not str:
                raise _fail(f"{label} (a JSON string)")
            packed = "".join(v.split())
            if len(packed) % 4 or not _B64_CHARS.fullmatch(packed):
                raise _fail(label)

        return check_b64
    if name == "xhtml":

        def check_xhtml(v: Any, collect: bool) -> None:
            if type(v) is not str or not v.lstrip().startswith("<div") or "\x00" in v:
                raise _fail(f"{label} (an XHTML <div> as a JSON string, without U+0000)")

        return check_xhtml
    # The spec regexes are Java regexes: \s and \S are ASCII classes there (NBSP is \S).
    pattern = regex or r"[ \r\n\t\S]+"
    matcher = re.compile(pattern, re.ASCII).fullmatch
    if name in ("date", "dateTime", "instant"):

        def check_date(v: Any, collect: bool) -> None:
            if type(v) is not str or not matcher(v) or not _real_date(v):
                raise _fail(label)

        return check_date

    def check_string(v: Any, collect: bool) -> None:
        if type(v) is not str or not matcher(v):
            raise _fail(label)
        if "\x00" in v:  # the spec's \S admits it; no store (PostgreSQL, XML) can keep it
            raise _fail(f"{label}: it holds the character U+0000")

    return check_string


def _bound_code(inner: Checker, codes: frozenset[str], url: str) -> Checker:
    message = f"is not a code of the required value set {url}"

    def check(v: Any, collect: bool) -> None:
        inner(v, collect)
        if v not in codes:
            raise _fail(message, "code-invalid")

    return check


def _bound_concept(inner: Checker, by_system: dict[str, frozenset[str]], url: str) -> Checker:
    # A coding in one of the value set's systems must use one of its codes; codings in other
    # systems are let through (translations), so a concept with only text or foreign codings
    # passes: lenient on purpose, as the value set cannot say which systems are translations.
    message = f"has a coding that is not in the required value set {url}"

    def check(v: Any, collect: bool) -> None:
        inner(v, collect)
        for coding in v.get("coding", ()):
            codes = by_system.get(coding.get("system"))
            if codes is not None and coding.get("code") not in codes:
                raise _fail(message, "code-invalid")

    return check


# --- compiled nodes ----------------------------------------------------------------------------


class _Node:
    """One object shape: a resource, a datatype or a backbone element."""

    __slots__ = ("check", "choice_of", "fields", "required", "singles")

    def __init__(self, resource_type: str | None, extension_rule: bool) -> None:
        self.fields: dict[str, Checker] = {}
        self.singles: set[str] = set()  # keys of single-valued elements
        self.required: list[tuple[str, tuple[str, ...]]] = []
        self.choice_of: dict[str, str] = {}
        self.check: Checker = self._build(resource_type, extension_rule)

    def _build(self, resource_type: str | None, extension_rule: bool) -> Checker:
        fields = self.fields
        singles = self.singles
        required = self.required
        choice_of = self.choice_of

        def check(obj: Any, collect: bool) -> None:
            if type(obj) is not dict:
                raise _fail("must be a JSON object", "structure")
            if not obj:
                raise _fail("must not be an empty object", "structure")
            issues: list[tuple[str, str, list[str]]] | None = None
            seen_choice: dict[str, str] | None = None
            for key, value in obj.items():
                checker = fields.get(key)
                if checker is None:
                    if key == "resourceType" and resource_type is not None:
                        continue
                    failure = _Fail([("is not an element of this type", "structure", [key])])
                else:
                    try:
                        # Single-valued checkers are the leaf checks themselves: their JSON
                        # type test refuses arrays and nulls (the message is fixed below).
                        if checker(value, collect) is True and "_" + key not in obj:
                            raise _fail("has a null without a matching _ element", "structure")
                    except _Fail as caught:
                        failure = _single_message(caught, key, value, singles).prefix(key)
                    else:
                        if not choice_of or key not in choice_of:
                            continue
                        group = choice_of[key]
                        if seen_choice is None:
                            seen_choice = {}
                        if group not in seen_choice:
                            seen_choice[group] = key
                            continue
                        failure = _Fail([("may have only one type", "structure", [group])])
                if not collect:
                    raise failure
                issues = (issues or []) + failure.issues
            for name, keys in required:
                for k in keys:
                    if k in obj:
                        break
                else:
                    missing = _Fail([("is required (minimum cardinality 1)", "required", [name])])
                    if not collect:
                        raise missing
                    issues = (issues or []) + missing.issues
            if extension_rule:
                has_value = any(k.startswith(("value", "_value")) for k in obj)
                if has_value == ("extension" in obj):
                    rule = _fail("must have either extensions or a value[x], not both (ext-1)")
                    if not collect:
                        raise rule
                    issues = (issues or []) + rule.issues
            if issues:
                raise _Fail(issues)

        return check


def _single_message(failure: _Fail, key: str, value: Any, singles: set[str]) -> _Fail:
    if key in singles and failure.issues and not failure.issues[0][2]:
        if type(value) is list:
            return _fail("must be a single value, not an array", "structure")
        if value is None:
            return _fail("must not be null", "structure")
    return failure


def _single(inner: Checker) -> Checker:
    """For ``_x`` of a single primitive (the leaf checks are used directly elsewhere)."""

    def check(v: Any, collect: bool) -> Any:
        if type(v) is list:
            raise _fail("must be a single value, not an array", "structure")
        return inner(v, collect)

    return check


def _many(inner: Checker, maximum: int | None, primitive: bool) -> Checker:
    def check(v: Any, collect: bool) -> bool:
        if type(v) is not list:
            raise _fail("must be an array", "structure")
        if not v:
            raise _fail("must not be an empty array", "structure")
        if maximum is not None and len(v) > maximum:
            raise _fail(f"has more than {maximum} items", "structure")
        nulls = False
        issues: list[tuple[str, str, list[str]]] | None = None
        for i, item in enumerate(v):
            if item is None and primitive:
                nulls = True
                continue
            try:
                if item is None:
                    raise _fail("must not be null", "structure")
                inner(item, collect)
            except _Fail as failure:
                failure.prefix(f"[{i}]")
                if not collect:
                    raise
                issues = (issues or []) + failure.issues
        if issues:
            raise _Fail(issues)
        return nulls

    return check


def _primitive_extension(element: Checker, is_list: bool) -> Checker:
    """``_given``: the id/extension part of primitive values (an array aligned with it)."""
    if not is_list:
        return _single(element)

    def check(v: Any, collect: bool) -> None:
        if type(v) is not list or not v:
            raise _fail("must be a non-empty array", "structure")
        for i, item in enumerate(v):
            if item is not None:
                try:
                    element(item, collect)
                except _Fail as failure:
                    raise failure.prefix(f"[{i}]") from None

    return check


class _Compiler:
    def __init__(self, defs: Definitions) -> None:
        self.defs = defs
        self.nodes: dict[tuple[str, str], _Node] = {}
        self.primitives = {
            name: _primitive_checker(name, p.json, p.regex) for name, p in defs.primitives.items()
        }
        self.resource_checks: dict[str, Checker] = {}
        self.resource_check = self._resource_dispatch()

    def compile(self) -> dict[str, Checker]:
        for name, t in self.defs.types.items():
            for parent in t.children:
                self.node(name, parent)
        for name, t in self.defs.types.items():
            for parent, elements in t.children.items():
                self._fill(self.nodes[(name, parent)], t, elements)
        for name in self.defs.resource_types:
            self.resource_checks[name] = self.nodes[(name, "")].check
        return self.resource_checks

    def node(self, type_name: str, path: str) -> _Node:
        key = (type_name, path)
        if key not in self.nodes:
            is_resource = self.defs.types[type_name].kind == "resource" and path == ""
            extension_rule = type_name == "Extension" and path == ""
            self.nodes[key] = _Node(type_name if is_resource else None, extension_rule)
        return self.nodes[key]

    def _resource_dispatch(self) -> Checker:
        checks = self.resource_checks

        def check(v: Any, collect: bool) -> None:
            if type(v) is not dict:
                raise _fail("must be a JSON object (a resource)", "structure")
            inner = checks.get(v.get("resourceType"))  # type: ignore[arg-type]
            if inner is None:
                raise _fail("has no known resourceType", "structure")
            inner(v, collect)

        return check

    def _type_check(self, t: TypeDef, el: ElementDef, code: str) -> Checker:
        if el.content_reference is not None:
            return self.node(t.name, el.content_reference).check
        if code in self.primitives:
            check = self.primitives[code]
            if el.binding is not None:
                codes = self.defs.value_sets.get(el.binding)
                if codes is not None:
                    check = _bound_code(check, frozenset().union(*codes.values()), el.binding)
            return check
        if code == "Resource":
            return self.resource_check
        if code in ("BackboneElement", "Element") and el.path in t.children:
            return self.node(t.name, el.path).check
        check = self.node(code, "").check
        if el.binding is not None and code == "CodeableConcept":
            by_system = self.defs.value_sets.get(el.binding)
            if by_system is not None:
                check = _bound_concept(check, by_system, el.binding)
        return check

    def _fill(self, node: _Node, t: TypeDef, elements: tuple[ElementDef, ...]) -> None:
        element_check = self.node("Element", "").check
        for el in elements:
            keys = el.json_keys()
            if el.content_reference is not None:
                keys = {el.name: ""}
            required_keys: list[str] = []
            for json_key, code in keys.items():
                inner = self._type_check(t, el, code)
                primitive = code in self.primitives
                if el.is_list:
                    node.fields[json_key] = _many(inner, el.max, primitive)
                else:
                    node.fields[json_key] = inner
                    node.singles.add(json_key)
                required_keys.append(json_key)
                if primitive:
                    node.fields["_" + json_key] = _primitive_extension(element_check, el.is_list)
                    required_keys.append("_" + json_key)
                if el.is_choice:
                    node.choice_of[json_key] = el.name
            if el.min > 0:
                node.required.append((el.name, tuple(required_keys)))


@functools.cache
def _checkers() -> dict[str, Checker]:
    return _Compiler(load()).compile()


def __getattr__(name: str) -> frozenset[str]:
    # SUPPORTED_TYPES (every concrete R4 resource type) comes from the definitions, which are
    # loaded on first use rather than at import.
    if name == "SUPPORTED_TYPES":
        return load().resource_types
    raise AttributeError(name)


def _header(resource: Any, expected_type: str | None) -> str:
    if not isinstance(resource, dict):
        raise InvalidInput("the body must be a JSON object (a FHIR resource)", expression="$")
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        raise InvalidInput("resourceType is missing", expression="resourceType")
    if expected_type and resource_type != expected_type:
        raise InvalidInput(
            f"resourceType {resource_type} does not match the endpoint {expected_type}",
            expression="resourceType",
        )
    if resource_type not in load().resource_types:
        raise InvalidInput("resourceType is not an R4 resource type", expression="resourceType")
    return resource_type


def _run(resource: dict[str, Any], resource_type: str, collect: bool) -> list[Issue]:
    try:
        _checkers()[resource_type](resource, collect)
    except _Fail as failure:
        return [
            Issue(_expression(resource_type, segments), message, code)
            for message, code, segments in failure.issues[:MAX_ISSUES]
        ]
    return []


def validate_resource(resource: Any, expected_type: str | None = None) -> dict[str, Any]:
    """Check a parsed JSON body; return it (unchanged) or raise with the offending element.

    ``InvalidInput`` (400) when it is not a resource or not of ``expected_type``;
    ``Unprocessable`` (422) for the first structural problem, with ``expression`` naming it.
    """
    resource_type = _header(resource, expected_type)
    found = _run(resource, resource_type, collect=False)
    if found:
        first = found[0]
        raise Unprocessable(f"{first.expression} {first.message}", expression=first.expression)
    return resource  # type: ignore[no-any-return]


def issues(resource: Any, expected_type: str | None = None) -> list[Issue]:
    """Every problem (up to ``MAX_ISSUES``), for an OperationOutcome; empty when valid."""
    try:
        resource_type = _header(resource, expected_type)
    except InvalidInput as exc:
        return [Issue(exc.expression or "$", exc.detail, "invalid")]
    return _run(resource, resource_type, collect=True)
