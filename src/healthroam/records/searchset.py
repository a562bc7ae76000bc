"""Search results as a FHIR ``searchset`` Bundle (entries, links, unknown-parameter outcome)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from healthroam.records.model import operation_outcome
from healthroam.records.search import subset
from healthroam.records.service import SearchResult


def searchset(
    result: SearchResult, self_url: str, base: str, query: str | None = None
) -> dict[str, Any]:
    """``self_url``: the search endpoint (``.../fhir/Observation``); ``base``: ``.../fhir``."""
    request = result.request
    links = [{"relation": "self", "url": f"{self_url}?{query}" if query else self_url}]
    if result.next_params is not None:
        links.append({"relation": "next", "url": f"{self_url}?{urlencode(result.next_params)}"})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if result.total is not None:
        bundle["total"] = result.total
    bundle["link"] = links
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"{base}/{stored.reference}",
            "resource": subset(stored.with_meta(), request),
            "search": {"mode": "match"},
        }
        for stored in result.matches
    ]
    entries += [
        {
            "fullUrl": f"{base}/{stored.reference}",
            "resource": subset(stored.with_meta(), request),
            "search": {"mode": "include"},
        }
        for stored in result.included
    ]
    if result.unknown:
        entries.append(
            {
                "resource": operation_outcome(
                    "warning",
                    "not-supported",
                    "search parameters not supported and ignored: "
                    + ", ".join(sorted(set(result.unknown))),
                ),
                "search": {"mode": "outcome"},
            }
        )
    if result.notice:  # the record gate left other institutions' data out
        entries.append(
            {
                "resource": operation_outcome("information", "suppressed", result.notice),
                "search": {"mode": "outcome"},
            }
        )
    if entries and request.summary != "count":
        bundle["entry"] = entries
    return bundle
