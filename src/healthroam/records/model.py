"""Stored FHIR resources: the current version and its metadata."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class StoredResource:
    resource_type: str
    id: str
    version: int
    last_updated: datetime
    content: dict[str, Any]

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.id}"

    def with_meta(self) -> dict[str, Any]:
        """The resource as served: content with meta.versionId and meta.lastUpdated set."""
        updated = self.last_updated
        if updated.tzinfo is None:
            updated = updated.replace(tzinfo=UTC)
        meta = dict(self.content.get("meta") or {})
        meta["versionId"] = str(self.version)
        meta["lastUpdated"] = (
            updated.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        )
        return {"resourceType": self.resource_type, "id": self.id, **self.content, "meta": meta}


def patient_reference(resource_type: str, resource_id: str, content: dict[str, Any]) -> str | None:
    """Whose data a resource is: the Patient itself, or its ``subject``/``patient`` reference."""
    if resource_type == "Patient":
        return f"Patient/{resource_id}"
    for key in ("subject", "patient"):
        value = content.get(key)
        if isinstance(value, dict):
            ref = value.get("reference")
            if isinstance(ref, str) and ref.startswith("Patient/"):
                return ref
    return None
