"""A compiler for the FHIRPath subset used by the R4 search parameter expressions.

Nearly every R4 SearchParameter ``expression`` is a path with unions (``|``), type casts
(``as T``, ``.as(T)``, ``.ofType(T)``) and two kinds of filter: ``.where(resolve() is T)`` and
``.where(field='literal')``; composite components add ``%resource``. This module parses that
subset and resolves it *statically* against the R4 definitions: every alternative becomes a chain
of JSON keys ending at a known FHIR type (``Observation.value as Quantity`` -> ``valueQuantity``
of type Quantity), so extraction needs no type sniffing at run time. Anything else raises
``Unsupported`` and ``search_params`` hands it to a general FHIRPath engine.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from healthroam.records.definitions import Definitions, ElementDef


class Unsupported(ValueError):
    """The expression is outside the compiled subset."""


# A walker visits one node (dict, list item or primitive) and appends results to ``out``;
# ``root`` is the resource, for ``%resource`` and for resolving ``#contained`` references.
Walker = Callable[[Any, list[Any], dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class Step:
    kind: str  # key | index | resolve_is | field_eq
    key: str = ""  # JSON key, or the field compared
    value: str = ""  # key: an index ("0") or ""; resolve_is: the type; field_eq: the literal


@dataclass(frozen=True, slots=True)
class Path:
    """One alternative: JSON keys and filters from the context (or root), ending at a type."""

    from_root: bool
    steps: tuple[Step, ...]
    type_code: str
    element: ElementDef | None


# --- parsing ------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:('(?:[^'\\]|\\.)*')|(%?[A-Za-z_][A-Za-z0-9_]*)|(\[\d+\])|(!=|[().|=]))")


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise Unsupported(f"cannot parse at {pos}")
        out.append(next(g for g in m.groups() if g is not None))
        pos = m.end()
    return out


# Parsed alternative: (root, [(op, arg, arg2)]) with root '' (context), '%resource' or a type.
_Alt = tuple[str, list[tuple[str, str, str]]]


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise Unsupported(f"expected {expected or 'a token'}")
        self.i += 1
        return tok

    def parse(self) -> list[_Alt]:
        alts = self.union()
        if self.peek() is not None:
            raise Unsupported(f"unexpected {self.peek()}")
        return alts

    def union(self) -> list[_Alt]:
        alts = self.as_expr()
        while self.peek() == "|":
            self.take()
            alts = alts + self.as_expr()
        return alts

    def as_expr(self) -> list[_Alt]:
        alts = self.postfix()
        if self.peek() == "as":
            self.take()
            type_name = self.take()
            alts = [(root, [*ops, ("as", type_name, "")]) for root, ops in alts]
        return alts

    def postfix(self) -> list[_Alt]:
        tok = self.take()
        alts: list[_Alt]
        if tok == "(":
            alts = self.union()
            self.take(")")
        elif tok[0] == "%":
            if tok != "%resource":
                raise Unsupported(tok)
            alts = [("%resource", [])]
        elif tok[0].isupper():
            alts = [(tok, [])]
        else:
            alts = [("", [("child", tok, "")])]
        while self.peek() == "." or (self.peek() or "").startswith("["):
            tok = self.take()
            op = self.member() if tok == "." else ("index", tok[1:-1], "")
            alts = [(root, [*ops, op]) for root, ops in alts]
        return alts

    def member(self) -> tuple[str, str, str]:
        name = self.take()
        if self.peek() != "(":
            return ("child", name, "")
        self.take("(")
        if name in ("as", "ofType"):
            type_name = self.take()
            self.take(")")
            return ("as", type_name, "")
        if name == "where":
            first = self.take()
            if first == "resolve":
                self.take("(")
                self.take(")")
                self.take("is")
                type_name = self.take()
                self.take(")")
                return ("resolve_is", type_name, "")
            self.take("=")
            literal = self.take()
            if not literal.startswith("'"):
                raise Unsupported("where() compares with a string literal only")
            self.take(")")
            return ("field_eq", first, literal[1:-1])
        raise Unsupported(f"function {name}()")


def parse(text: str) -> list[_Alt]:
    return _Parser(text).parse()


# --- static resolution against the definitions --------------------------------------------------

# A position in the definitions: (type name, path inside it) - ("Observation", "component").
_Pos = tuple[str, str]


def _children(defs: Definitions, pos: _Pos, name: str) -> list[tuple[str, _Pos, str, ElementDef]]:
    """(json key, new position, type code, element) for ``name`` below ``pos``."""
    type_name, path = pos
    t = defs.types.get(type_name)
    if t is None:
        raise Unsupported(f"no children of {type_name}")
    el = t.by_path.get(f"{path}.{name}" if path else name)
    if el is None:
        raise Unsupported(f"{type_name}.{path}.{name} is not an element")
    if el.content_reference is not None:
        return [(name, (type_name, el.content_reference), "BackboneElement", el)]
    if el.path in t.children:
        return [(name, (type_name, el.path), el.types[0] if el.types else "", el)]
    return [(key, (code, ""), code, el) for key, code in el.json_keys().items()]


def _same_type(code: str, wanted: str) -> bool:
    return code == wanted or code.lower() == wanted.lower()


def resolve(
    defs: Definitions, text: str, context: _Pos, resource_type: str
) -> list[tuple[Path, _Pos]]:
    """Compile ``text`` evaluated at ``context`` into typed paths (and where each ends)."""
    out: list[tuple[Path, _Pos]] = []
    for root, ops in parse(text):
        from_root = False
        start: _Pos = context
        if root == "%resource":
            from_root, start = True, (resource_type, "")
        elif root:
            if root not in (resource_type, "Resource", "DomainResource"):
                continue  # a union branch for another resource type
            if context != (resource_type, ""):
                from_root = True
            start = (resource_type, "")
        states: list[tuple[list[Step], _Pos, str, ElementDef | None]] = [
            ([], start, start[0], None)
        ]
        for op, arg, literal in ops:
            nxt: list[tuple[list[Step], _Pos, str, ElementDef | None]] = []
            for steps, pos, code, el in states:
                if op == "child":
                    for key, new_pos, new_code, new_el in _children(defs, pos, arg):
                        nxt.append(([*steps, Step("key", key)], new_pos, new_code, new_el))
                elif op == "as":
                    if _same_type(code, arg):
                        nxt.append((steps, pos, code, el))
                elif op == "resolve_is":
                    if code not in ("Reference", "canonical"):
                        raise Unsupported("resolve() on a non-reference")
                    nxt.append(([*steps, Step("resolve_is", "", arg)], pos, code, el))
                elif op == "index":
                    if not steps or steps[-1].kind != "key":
                        raise Unsupported("an index applies to an element")
                    last = steps[-1]
                    indexed = Step("key", last.key, arg)
                    nxt.append(([*steps[:-1], indexed], pos, code, el))
                elif op == "field_eq":
                    nxt.append(([*steps, Step("field_eq", arg, literal)], pos, code, el))
                else:  # pragma: no cover - the parser emits only the ops above
                    raise Unsupported(op)
            states = nxt
        for steps, pos, code, el in states:
            out.append((Path(from_root, tuple(steps), code, el), pos))
    return out


# --- walkers --------------------------------------------------------------------------------------


def reference_type(reference: Any, root: dict[str, Any]) -> str | None:
    """The resource type a Reference points at, from ``reference`` (or ``type``)."""
    if type(reference) is not dict:
        return None
    ref = reference.get("reference")
    if type(ref) is str:
        if ref.startswith("#"):
            for res in root.get("contained", ()):
                if type(res) is dict and res.get("id") == ref[1:]:
                    found = res.get("resourceType")
                    return found if type(found) is str else None
            return None
        parts = ref.split("/")
        if len(parts) >= 2 and parts[-2][:1].isupper():
            return parts[-2]
        if len(parts) >= 4 and parts[-4][:1].isupper() and parts[-2] == "_history":
            return parts[-4]
    declared = reference.get("type")
    return declared if type(declared) is str else None


def walker(path: Path, terminal: Walker) -> Walker:
    """Chain closures for ``path``; ``terminal`` receives every value at its end."""
    fn = terminal
    for step in reversed(path.steps):
        fn = _step(step, fn)
    if not path.from_root:
        return fn
    inner = fn

    def from_root(node: Any, out: list[Any], root: dict[str, Any]) -> None:
        inner(root, out, root)

    return from_root


def split(path: Path, terminal: Walker) -> tuple[str | None, Walker]:
    """(first JSON key, walker for the rest) so that callers can dispatch on the resource's
    keys once instead of asking every parameter whether its key is there; (None, walker) when
    the path does not start with a plain key."""
    if path.from_root or not path.steps or path.steps[0].kind != "key" or path.steps[0].value:
        return None, walker(path, terminal)
    rest = Path(False, path.steps[1:], path.type_code, path.element)
    return path.steps[0].key, walker(rest, terminal)


def _step(step: Step, nxt: Walker) -> Walker:
    if step.kind == "key" and step.value:
        key, index = step.key, int(step.value)

        def nth(node: Any, out: list[Any], root: dict[str, Any]) -> None:
            if type(node) is dict:
                v = node.get(key)
                if type(v) is list and len(v) > index and v[index] is not None:
                    nxt(v[index], out, root)
                elif index == 0 and v is not None and type(v) is not list:
                    nxt(v, out, root)

        return nth
    if step.kind == "key":
        key = step.key

        def child(node: Any, out: list[Any], root: dict[str, Any]) -> None:
            if type(node) is not dict:
                return
            v = node.get(key)
            if v is None:
                return
            if type(v) is list:
                for item in v:
                    if item is not None:
                        nxt(item, out, root)
            else:
                nxt(v, out, root)

        return child
    if step.kind == "resolve_is":
        wanted = step.value

        def resolve_is(node: Any, out: list[Any], root: dict[str, Any]) -> None:
            if reference_type(node, root) == wanted:
                nxt(node, out, root)

        return resolve_is
    field, literal = step.key, step.value

    def field_eq(node: Any, out: list[Any], root: dict[str, Any]) -> None:
        if type(node) is dict and node.get(field) == literal:
            nxt(node, out, root)

    return field_eq
