"""Stored FHIR resources: the current version and its metadata."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from healthroam.errors import HealthroamError


@dataclass(frozen=True, slots=True)
class StoredResource:
    resource_type: str
    id: str
    version: int
    last_updated: datetime
    content: dict[str, Any]
    institution_code: str | None = None  # the institution that wrote it (None: unknown)

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.id}"

    def with_meta(self) -> dict[str, Any]:
        """The resource as served: content with meta.versionId and meta.lastUpdated set."""
        meta = dict(self.content.get("meta") or {})
        meta["versionId"] = str(self.version)
        meta["lastUpdated"] = instant(self.last_updated)
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


class NotSupported(HealthroamError):
    """An interaction this store does not offer on a type (HTTP 405)."""

    status, code, title = 405, "not-supported", "Not supported"


def operation_outcome(
    severity: str, code: str, diagnostics: str, expression: str | None = None
) -> dict[str, Any]:
    """An OperationOutcome with one issue (bundle entries, search warnings)."""
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def instant(moment: datetime) -> str:
    """A FHIR instant in UTC with milliseconds (naive datetimes are UTC, as SQLite returns)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stored_body(content: dict[str, Any]) -> dict[str, Any]:
    """What is stored of a resource: no resourceType/id, no server-owned meta fields."""
    body = {k: v for k, v in content.items() if k not in ("resourceType", "id")}
    meta = {
        k: v for k, v in (body.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")
    }
    if meta:
        body["meta"] = meta
    else:
        body.pop("meta", None)
    return body
