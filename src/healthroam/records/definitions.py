"""The official FHIR R4 (4.0.1) definitions, compiled into ``data/r4-definitions.json.gz``.

``scripts/build-fhir-definitions`` builds that file from the StructureDefinition snapshots,
SearchParameters, ValueSets and CodeSystems of the npm package ``hl7.fhir.r4.examples@4.0.1``
(CC0). This module only loads it, once, into plain frozen objects; ``validation.py`` and
``search_params.py`` compile those into fast checkers and extractors.
"""

from __future__ import annotations

import functools
import gzip
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

DATA_FILE = "r4-definitions.json.gz"


@dataclass(frozen=True, slots=True)
class ElementDef:
    """One element of a type's snapshot, its path relative to the type (``contact.name``)."""

    path: str
    min: int
    max: int | None  # None: unbounded ("*")
    types: tuple[str, ...]
    binding: str | None  # value set URL of a required-strength binding
    content_reference: str | None  # relative path of the element whose definition is reused

    @property
    def name(self) -> str:
        """The last path segment without ``[x]``: the FHIRPath name (``deceased``)."""
        last = self.path.rsplit(".", 1)[-1]
        return last[:-3] if last.endswith("[x]") else last

    @property
    def parent(self) -> str:
        return self.path.rsplit(".", 1)[0] if "." in self.path else ""

    @property
    def is_choice(self) -> bool:
        return self.path.endswith("[x]")

    @property
    def is_list(self) -> bool:
        return self.max is None or self.max > 1

    def json_keys(self) -> dict[str, str]:
        """JSON property name -> type code (``deceasedBoolean`` -> ``boolean``)."""
        if not self.is_choice:
            return {self.name: self.types[0] if self.types else ""}
        return {self.name + t[0].upper() + t[1:]: t for t in self.types}


@dataclass(frozen=True)
class TypeDef:
    name: str
    kind: str  # resource | complex-type
    abstract: bool
    base: str | None
    elements: tuple[ElementDef, ...]

    @functools.cached_property
    def by_path(self) -> dict[str, ElementDef]:
        out = {}
        for el in self.elements:
            out[el.path[:-3] if el.path.endswith("[x]") else el.path] = el
        return out

    @functools.cached_property
    def children(self) -> dict[str, tuple[ElementDef, ...]]:
        """Parent relative path ('' for the root) -> its child elements."""
        out: dict[str, list[ElementDef]] = {}
        for el in self.elements:
            out.setdefault(el.parent, []).append(el)
        return {k: tuple(v) for k, v in out.items()}


@dataclass(frozen=True, slots=True)
class PrimitiveDef:
    name: str
    json: str  # string | boolean | integer | number
    regex: str | None


@dataclass(frozen=True, slots=True)
class SearchParamDef:
    url: str
    code: str
    type: str  # number date string token reference composite quantity uri special
    base: tuple[str, ...]
    expression: str | None
    target: tuple[str, ...]
    components: tuple[tuple[str, str], ...]  # (definition URL, expression)
    modifiers: tuple[str, ...]
    comparators: tuple[str, ...]


class Definitions:
    """Everything the compiled file holds, with small lookups."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.fhir_version: str = raw["fhirVersion"]
        self.primitives = {
            name: PrimitiveDef(name, p["json"], p["regex"]) for name, p in raw["primitives"].items()
        }
        self.types: dict[str, TypeDef] = {}
        for name, t in raw["types"].items():
            elements = tuple(
                ElementDef(
                    path=e[0],
                    min=e[1],
                    max=None if e[2] == "*" else int(e[2]),
                    types=tuple(e[3]),
                    binding=e[4],
                    content_reference=e[5],
                )
                for e in t["elements"]
            )
            self.types[name] = TypeDef(name, t["kind"], t["abstract"], t["base"], elements)
        self.value_sets: dict[str, dict[str, frozenset[str]] | None] = {
            url: None if vs is None else {s: frozenset(c) for s, c in vs.items()}
            for url, vs in raw["valueSets"].items()
        }
        self.search_params = tuple(
            SearchParamDef(
                url=p["url"],
                code=p["code"],
                type=p["type"],
                base=tuple(p["base"]),
                expression=p.get("expression"),
                target=tuple(p.get("target", ())),
                components=tuple((c[0], c[1]) for c in p.get("component", ())),
                modifiers=tuple(p.get("modifier", ())),
                comparators=tuple(p.get("comparator", ())),
            )
            for p in raw["searchParams"]
        )
        self.resource_types = frozenset(
            n for n, t in self.types.items() if t.kind == "resource" and not t.abstract
        )

    def element(self, type_name: str, path: str) -> ElementDef | None:
        """The element at ``path`` (relative, choice names without ``[x]``) of a type."""
        t = self.types.get(type_name)
        return None if t is None else t.by_path.get(path)


@functools.cache
def load() -> Definitions:
    """The definitions, read and decoded once per process (about 0.1 s)."""
    blob = resources.files("healthroam.records").joinpath("data", DATA_FILE).read_bytes()
    return Definitions(json.loads(gzip.decompress(blob)))
