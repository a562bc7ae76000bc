"""What the FHIR store supports, per resource type, for the CapabilityStatement."""

from __future__ import annotations

from typing import Any

from healthroam.records.definitions import load
from healthroam.records.fulltext import NO_NARRATIVE
from healthroam.records.search import RESULT_PARAMS
from healthroam.records.search_params import parameters
from healthroam.records.service import NOT_STORED
from healthroam.records.validation import SUPPORTED_TYPES

_INTERACTIONS = (
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)


RESULT_PARAMETERS = sorted(RESULT_PARAMS - {"_cursor", "_snapshot", "_offset", "_format"})
_FULLTEXT_DOC = (
    'Full text, words ANDed, "quoted phrases", word* prefixes; Chinese matched as written '
    "within longer text (character pairs)."
)
SEARCH_DOCUMENTATION = (
    "Search modifiers: token :not :text :of-type :missing, and :above/:below for ICD-10 "
    "(http://hl7.org/fhir/sid/icd-10, -cm) and ATC (http://www.whocc.no/atc) only, other "
    "systems refused; string :exact :contains :text :missing; reference :[type] :identifier "
    ":missing; uri :above :below (URLs, by path) :missing; date, number, quantity, composite "
    ":missing; _id :not :missing; _text/_content :missing. Not supported: token :in :not-in, "
    "_filter, _list, _query, Location near. Result parameters: " + ", ".join(RESULT_PARAMETERS)
)


def _fulltext_params(resource_type: str) -> list[dict[str, Any]]:
    urls = {sp.code: sp.url for sp in load().search_params if sp.code in ("_text", "_content")}
    codes = ["_content"] + ([] if resource_type in NO_NARRATIVE else ["_text"])
    return [
        {"name": c, "definition": urls[c], "type": "string", "documentation": _FULLTEXT_DOC}
        for c in codes
    ]


def store_resources() -> list[dict[str, Any]]:
    """One CapabilityStatement.rest.resource per stored type, with its search parameters."""
    out = []
    for resource_type in sorted(SUPPORTED_TYPES - NOT_STORED):
        params = [
            {"name": code, "definition": p.definition.url, "type": p.definition.type}
            for code, p in sorted(parameters(resource_type).items())
            if p.definition.type != "special"
        ]
        params = sorted(params + _fulltext_params(resource_type), key=lambda p: p["name"])
        interactions = [
            i for i in _INTERACTIONS if not (resource_type == "Patient" and i == "delete")
        ]
        out.append(
            {
                "type": resource_type,
                "interaction": [{"code": i} for i in interactions],
                "versioning": "versioned-update",
                "readHistory": True,
                "updateCreate": True,
                "conditionalCreate": True,
                "conditionalRead": "not-supported",
                "conditionalUpdate": True,
                "conditionalDelete": "not-supported" if resource_type == "Patient" else "single",
                "referencePolicy": ["literal", "logical"],
                "searchInclude": ["*"],
                "searchRevInclude": ["*"],
                "searchParam": params,
            }
        )
    return out


SYSTEM_INTERACTIONS = [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}]
