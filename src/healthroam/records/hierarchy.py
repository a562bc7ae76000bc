"""``:above`` and ``:below``: subsumption where the code or the URL itself says it.

Tokens: this store has no terminology server, so only code systems whose codes spell their
place in the hierarchy are supported (the ones the province's data use):

- ICD-10 (WHO, ICD-10-CM and the national clinical editions' ``E11.900x001`` extensions):
  ``E11`` is above ``E11.9``, which is above ``E11.90`` and ``E11.900x001``;
- WHO ATC: levels of 1, 3, 4, 5 and 7 characters (``A`` > ``A10`` > ``A10B`` > ``A10BA`` >
  ``A10BA02``).

Any other system (LOINC, SNOMED CT ...) is refused with the parameter named, never ignored.

URIs (FHIR R4 search, uri): ``:below`` finds the URL and every URL under it by path
(``http://a.org/fhir`` is below-matched by ``http://a.org/fhir/ValueSet/1`` but not by
``http://a.org/fhirx``); ``:above`` finds the stored URLs that are the value or one of its
path prefixes (``.../ValueSet/123/_history/5`` finds ``.../ValueSet/123`` and ``.../fhir``).
Both are for URLs only: a URN (``urn:oid:``) is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from healthroam.errors import InvalidInput

ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD10_CM = "http://hl7.org/fhir/sid/icd-10-cm"
ATC = "http://www.whocc.no/atc"
_ICD = re.compile(r"[A-Z][0-9][0-9A-Z](\.[0-9A-Za-z]+)?")
_ATC = re.compile(r"[A-Z]([0-9]{2}([A-Z]([A-Z]([0-9]{2})?)?)?)?")
_ATC_LEVELS = (1, 3, 4, 5, 7)
SYSTEMS = {ICD10: "icd", ICD10_CM: "icd", ATC: "atc"}


@dataclass(frozen=True, slots=True)
class Below:
    """Codes equal to ``exact`` or starting with ``prefix``."""

    exact: str
    prefix: str


def _split(value: str, name: str, modifier: str) -> tuple[str, str]:
    system, bar, code = value.partition("|")
    if not bar or not system or not code:
        raise InvalidInput(
            f"{name} takes system|code: :{modifier} needs the code system", expression=name
        )
    kind = SYSTEMS.get(system)
    if kind is None:
        known = ", ".join(sorted(SYSTEMS))
        raise InvalidInput(
            f"{name}: no subsumption is known for {system} (:{modifier} works for {known})",
            expression=name,
        )
    pattern = _ICD if kind == "icd" else _ATC
    if not pattern.fullmatch(code):
        raise InvalidInput(
            f"{name}: {code} is not {'an ICD-10' if kind == 'icd' else 'an ATC'} code",
            expression=name,
        )
    return system, code


def check_token(value: str, name: str, modifier: str) -> None:
    _split(value, name, modifier)


def token_below(value: str, name: str) -> tuple[str, Below]:
    """(system, codes below ``value`` including itself)."""
    system, code = _split(value, name, "below")
    if SYSTEMS[system] == "icd" and "." not in code:
        return system, Below(code, code + ".")
    return system, Below(code, code)


def token_above(value: str, name: str) -> tuple[str, tuple[str, ...]]:
    """(system, the codes above ``value`` including itself)."""
    system, code = _split(value, name, "above")
    if SYSTEMS[system] == "icd":
        category, _, rest = code.partition(".")
        return system, (category, *(f"{category}.{rest[:n]}" for n in range(1, len(rest) + 1)))
    return system, tuple(code[:n] for n in _ATC_LEVELS if n <= len(code))


def _url_parts(value: str, name: str, modifier: str) -> tuple[str, list[str]]:
    if value.lower().startswith("urn:"):
        raise InvalidInput(f"{name}: :{modifier} is for URLs, not URNs", expression=name)
    parts = urlsplit(value)
    if not parts.scheme or not parts.netloc:
        raise InvalidInput(
            f"{name}: :{modifier} takes an absolute URL (scheme://host/path)", expression=name
        )
    root = f"{parts.scheme}://{parts.netloc}"
    return root, [s for s in parts.path.split("/") if s]


def check_uri(value: str, name: str, modifier: str) -> None:
    _url_parts(value, name, modifier)


def uri_below(value: str, name: str) -> tuple[tuple[str, ...], str]:
    """(URIs equal to the value, with or without its final ``/``; the path prefix of the
    URIs under it)."""
    _url_parts(value, name, "below")
    base = value.rstrip("/")
    return (base, base + "/"), base + "/"


def uri_above(value: str, name: str) -> tuple[str, ...]:
    """The value and every path prefix of it, each with and without a final ``/``."""
    root, segments = _url_parts(value, name, "above")
    out = [value]
    for n in range(len(segments) + 1):
        path = root + "".join("/" + s for s in segments[:n])
        out += [path, path + "/"]
    return tuple(dict.fromkeys(out))
