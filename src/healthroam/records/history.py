"""The history interactions: ``_since``, ``_at``, ``_count`` and keyset paging, as a Bundle."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from healthroam.errors import InvalidInput
from healthroam.records.model import instant
from healthroam.records.search import MAX_COUNT, parse_date

DEFAULT_COUNT = 50


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    since: datetime | None
    at: datetime | None
    count: int
    before: tuple[datetime, str, str, int] | None  # keyset: the last entry of the previous page


def parse_history(items: list[tuple[str, str]]) -> HistoryQuery:
    since = at = None
    count = DEFAULT_COUNT
    before = None
    for name, value in items:
        if name == "_since":
            _, since, _ = parse_date(value, "_since")
        elif name == "_at":
            _, _, at = parse_date(value, "_at")  # the version current at the end of that period
        elif name == "_count":
            if not value.isdigit() or int(value) < 1:
                raise InvalidInput("_count must be a positive integer", expression="_count")
            count = min(int(value), MAX_COUNT)
        elif name == "_page":
            parts = value.split("|")
            try:
                before = (datetime.fromisoformat(parts[0]), parts[1], parts[2], int(parts[3]))
            except (ValueError, IndexError):
                raise InvalidInput("_page is not valid", expression="_page") from None
        elif name not in ("_format", "_pretty"):
            raise InvalidInput(f"unknown history parameter {name}", expression=name)
    return HistoryQuery(since, at, count, before)


def history_bundle(
    rows: list[Any], query: HistoryQuery, items: list[tuple[str, str]], self_url: str, base: str
) -> dict[str, Any]:
    """Newest first; ``rows`` may hold one more than ``count`` (then a next link is added)."""
    page = rows[: query.count]
    links = [{"relation": "self", "url": f"{self_url}?{urlencode(items)}" if items else self_url}]
    if len(rows) > query.count and page:
        last = page[-1]
        moment = last.last_updated
        cursor = f"{moment.isoformat()}|{last.resource_type}|{last.id}|{last.version}"
        kept = [(k, v) for k, v in items if k != "_page"] + [("_page", cursor)]
        links.append({"relation": "next", "url": f"{self_url}?{urlencode(kept)}"})
    entries = []
    for row in page:
        reference = f"{row.resource_type}/{row.id}"
        method = "DELETE" if row.deleted else ("POST" if row.version == 1 else "PUT")
        entry: dict[str, Any] = {
            "fullUrl": f"{base}/{reference}",
            "request": {
                "method": method,
                "url": row.resource_type if method == "POST" else reference,
            },
            "response": {
                "status": "204 No Content"
                if row.deleted
                else ("201 Created" if row.version == 1 else "200 OK"),
                "etag": f'W/"{row.version}"',
                "lastModified": instant(row.last_updated),
            },
        }
        if not row.deleted:
            meta = dict(row.content.get("meta") or {})
            meta["versionId"] = str(row.version)
            meta["lastUpdated"] = instant(row.last_updated)
            entry["resource"] = {
                "resourceType": row.resource_type,
                "id": row.id,
                **row.content,
                "meta": meta,
            }
        entries.append(entry)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "history", "link": links}
    if entries:
        bundle["entry"] = entries
    return bundle
