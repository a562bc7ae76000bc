"""Full-text terms for ``_text`` (the narrative) and ``_content`` (the whole resource).

One tokenisation, done here in Python, feeds both backends' own full-text engines (SQLite
FTS5, PostgreSQL ``to_tsvector('simple', ...)``), so a search finds the same resources on
either (decision 0029):

- text is folded like string search (case, accents, full-width forms: :func:`fold`) and cut
  into words of letters and digits; punctuation and ``_`` separate words;
- Chinese and Japanese have no spaces, so a run of Han or kana characters is stored as its
  overlapping character pairs plus its last character (``高血压`` -> ``高血 血压 压``), and a
  search for ``高血压`` looks for the adjacent pairs ``高血 血压`` as a phrase: it finds the
  word anywhere inside a longer run (``原发性高血压``), never a text that only has its
  characters apart; a single character (``压``) is a prefix search over the pairs;
- the stored body is those terms joined by spaces, at most :data:`MAX_TERMS` of them.

The search value: words (ANDed), ``"quoted phrases"`` and ``word*`` (prefix); commas between
values OR them as for every FHIR parameter.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

MAX_TERMS = 10_000  # PostgreSQL keeps word positions up to 16,383 (phrases need them)
MAX_QUERY_TERMS = 64
# Resource types without a narrative (Resource, not DomainResource): no _text.
NO_NARRATIVE = frozenset({"Bundle", "Binary", "Parameters"})
_WORD = re.compile(r"[^\W_]+")
_CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+")
_MARKUP = re.compile(r"<!--.*?-->|<\s*/?\s*([A-Za-z0-9]*)[^>]*>", re.DOTALL)
# Tags inside a line of text (<b>高血压</b>病史 is one run of text); any other tag separates.
_INLINE = frozenset(
    {"a", "abbr", "b", "big", "cite", "code", "em", "font", "i", "q", "s", "small", "span"}
    | {"strong", "sub", "sup", "tt", "u", "var"}
)
_QUERY_PART = re.compile(r'"([^"]*)"?|(\S+)')
# Keys whose string values are identifiers, links or payloads, not text a person would search.
_SKIPPED_KEYS = frozenset(
    {
        "resourceType",
        "id",
        "meta",
        "div",  # the narrative's markup: its text is added without the tags
        "reference",
        "system",
        "url",
        "data",  # base64 attachments
        "contentType",
        "language",
    }
)


# Every combining mark (nonzero canonical combining class), mapped to nothing for
# str.translate: one pass in C instead of a Python call per character. None lies above
# U+1FFFF in this Unicode version (a test checks the whole range).
COMBINING_LIMIT = 0x20000
DROP_COMBINING: dict[int, None] = {
    c: None for c in range(COMBINING_LIMIT) if unicodedata.combining(chr(c))
}


def fold(text: str) -> str:
    """Case- and accent-folded (NFKD: full-width letters become ASCII), like string search."""
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFKD", text).translate(DROP_COMBINING).casefold()


def _pieces(word: str) -> Iterator[tuple[str, bool]]:
    """(piece, is a CJK run) of one folded word, in order."""
    pos = 0
    for run in _CJK.finditer(word):
        if run.start() > pos:
            yield word[pos : run.start()], False
        yield run.group(), True
        pos = run.end()
    if pos < len(word):
        yield word[pos:], False


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


def terms(text: str) -> list[str]:
    """The stored terms of a text, in order."""
    out: list[str] = []
    for word in _WORD.findall(fold(text)):
        if word.isascii():
            out.append(word)
            continue
        for piece, cjk in _pieces(word):
            if cjk:
                out.extend(piece[i : i + 2] for i in range(len(piece) - 1))
                out.append(piece[-1])
            else:
                out.append(piece)
    return out


def body(text: str) -> str:
    return " ".join(terms(text)[:MAX_TERMS])


def _tag(match: re.Match[str]) -> str:
    return "" if (match.group(1) or "").lower() in _INLINE else " "


def narrative(div: str) -> str:
    """The text of an XHTML narrative (tags and comments dropped, entities decoded)."""
    return html.unescape(_MARKUP.sub(_tag, div))


def _strings(node: Any, out: list[str]) -> None:
    if isinstance(node, str):
        out.append(node)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key not in _SKIPPED_KEYS:
                _strings(value, out)
    elif isinstance(node, list):
        for item in node:
            _strings(item, out)


def index_bodies(resource: dict[str, Any], domain: bool) -> list[tuple[str, str]]:
    """(``_text`` / ``_content``, stored body) of a resource; ``domain``: a DomainResource,
    which has a narrative."""
    narrative_text = ""
    text = resource.get("text")
    if domain and isinstance(text, dict) and isinstance(text.get("div"), str):
        narrative_text = narrative(text["div"])
    found: list[str] = [narrative_text] if narrative_text else []
    for key, value in resource.items():
        if key not in _SKIPPED_KEYS and not (domain and key == "text"):
            _strings(value, found)
    out = []
    if narrative_text:
        narrative_body = body(narrative_text)
        if narrative_body:
            out.append(("_text", narrative_body))
    content = body(" ".join(found))
    if content:
        out.append(("_content", content))
    return out


# --- search values --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Term:
    text: str
    prefix: bool = False


Phrase = tuple[Term, ...]  # adjacent terms


def _phrase(text: str, prefix: bool) -> Phrase:
    """The terms a phrase of the search value must have, adjacent and in order."""
    pieces: list[tuple[str, bool]] = []
    for word in _WORD.findall(fold(text)):
        pieces.extend(_pieces(word) if not word.isascii() else [(word, False)])
    out: list[Term] = []
    for n, (piece, cjk) in enumerate(pieces):
        last = n == len(pieces) - 1
        if not cjk:
            out.append(Term(piece, prefix and last))
        elif len(piece) == 1:
            # Alone or at the end it is the first character of a pair or a run's last one.
            out.append(Term(piece, last))
        else:
            out.extend(Term(piece[i : i + 2]) for i in range(len(piece) - 1))
            if not last:  # the stored run's last character sits between it and what follows
                out.append(Term(piece[-1]))
    return tuple(out)


def parse_query(value: str) -> tuple[Phrase, ...]:
    """The phrases (ANDed) of one search value: words, ``"phrases"``, ``word*``."""
    phrases: list[Phrase] = []
    for quoted, bare in _QUERY_PART.findall(value):
        phrase = _phrase(quoted, False) if quoted else _phrase(bare, bare.endswith("*"))
        if phrase:
            phrases.append(phrase)
    return tuple(phrases)


def query_size(phrases: tuple[Phrase, ...]) -> int:
    return sum(len(p) for p in phrases)


def fts5_query(values: list[tuple[Phrase, ...]]) -> str:
    """An SQLite FTS5 MATCH expression: phrases ANDed, values ORed (terms are letters and
    digits only, so quoting them is safe)."""
    return " OR ".join(
        "(" + " AND ".join(" + ".join(_fts5_term(t) for t in p) for p in phrases) + ")"
        for phrases in values
    )


def _fts5_term(term: Term) -> str:
    return f'"{term.text}"' + (" *" if term.prefix else "")


def tsquery(values: list[tuple[Phrase, ...]]) -> str:
    """A PostgreSQL ``to_tsquery`` text: ``<->`` between adjacent terms, ``&`` between
    phrases, ``|`` between values."""
    return " | ".join(
        "(" + " & ".join("(" + " <-> ".join(_ts_term(t) for t in p) + ")" for p in phrases) + ")"
        for phrases in values
    )


def _ts_term(term: Term) -> str:
    return f"'{term.text}'" + (":*" if term.prefix else "")


def like_patterns(phrases: tuple[Phrase, ...]) -> list[str]:
    """``LIKE`` patterns over ``' ' || body || ' '``, one per phrase (the fallback without
    FTS5; the caller escapes nothing: terms are letters and digits)."""
    out = []
    for phrase in phrases:
        words = " ".join(t.text for t in phrase)
        out.append(f"% {words}%" if phrase[-1].prefix else f"% {words} %")
    return out
