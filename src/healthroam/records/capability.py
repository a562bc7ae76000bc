"""What the FHIR store supports, per resource type, for the CapabilityStatement."""

from __future__ import annotations

from typing import Any

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


def store_resources() -> list[dict[str, Any]]:
    """One CapabilityStatement.rest.resource per stored type, with its search parameters."""
    out = []
    for resource_type in sorted(SUPPORTED_TYPES - NOT_STORED):
        params = [
            {"name": code, "definition": p.definition.url, "type": p.definition.type}
            for code, p in sorted(parameters(resource_type).items())
            if p.definition.type != "special"
        ]
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
RESULT_PARAMETERS = sorted(RESULT_PARAMS - {"_cursor", "_snapshot", "_offset", "_format"})
