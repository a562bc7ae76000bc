"""Jinja2 rendering of the clinician page (autoescaped; templates and static files in the
package, read once)."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from healthroam.web.messages import translator

STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


@cache
def environment() -> Environment:
    return Environment(
        loader=PackageLoader("healthroam.web", "templates"),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(template: str, lang: str, **context: Any) -> str:
    return environment().get_template(template).render(t=translator(lang), lang=lang, **context)


@cache
def static_file(name: str) -> tuple[bytes, str] | None:
    """The bytes and media type of a file under web/static, or None (no path traversal: only
    plain names of the known types)."""
    suffix = name[name.rfind(".") :] if "." in name else ""
    if "/" in name or "\\" in name or name.startswith(".") or suffix not in STATIC_TYPES:
        return None
    resource = files("healthroam.web").joinpath("static", name)
    if not resource.is_file():
        return None
    return resource.read_bytes(), STATIC_TYPES[suffix]
