"""Stored FHIR resources: the current version and its metadata."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from healthroam.errors import HealthroamError

_UNSET: Any = object()


def dumps(value: Any) -> str:
    """JSON as served (compact, UTF-8 characters kept), like the API's JSONResponse."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


# What :func:`dumps` leaves as it is inside a string (with ensure_ascii off it escapes only
# the quote, the backslash and control characters).
_PLAIN_STRING = re.compile(r'[^"\\\x00-\x1f]*')


def json_string(text: str) -> str:
    """``dumps(text)`` for a string, without the encoder when nothing needs escaping (ids,
    types, URLs, instants: the common case when a Bundle is spliced together)."""
    if _PLAIN_STRING.fullmatch(text):
        return f'"{text}"'
    return dumps(text)


class StoredResource:
    """A stored resource. Read from the database it may carry its JSON text instead of a
    decoded document (``raw``: the body without ``meta``, ``meta`` decoded apart): it is then
    served by splicing that text (:meth:`served_json`) and decoded only if ``content`` is used
    (treat ``content`` as read-only). ``patient`` (whose data it is, as
    :func:`patient_reference` says) may come with it too."""

    __slots__ = (
        "_content",
        "_meta",
        "_patient",
        "_raw",
        "id",
        "institution_code",
        "last_updated",
        "resource_type",
        "version",
    )

    def __init__(
        self,
        resource_type: str,
        id: str,
        version: int,
        last_updated: datetime,
        content: dict[str, Any] | None = None,
        institution_code: str | None = None,  # the institution that wrote it (None: unknown)
        *,
        raw: str | None = None,
        meta: dict[str, Any] | None = None,
        patient: str | None = _UNSET,
    ) -> None:
        if content is None and raw is None:
            raise ValueError("a stored resource needs its content or its JSON text")
        self.resource_type, self.id, self.version = resource_type, id, version
        self.last_updated, self.institution_code = last_updated, institution_code
        self._content, self._raw, self._meta, self._patient = content, raw, meta, patient

    @property
    def content(self) -> dict[str, Any]:
        """The stored body (no resourceType/id, no server-owned meta fields)."""
        if self._content is None:
            body: dict[str, Any] = json.loads(self._raw or "{}")
            if self._meta:
                body["meta"] = self._meta
            self._content = body
        return self._content

    @property
    def patient(self) -> str | None:
        """Whose data this is (``Patient/<id>``), or None."""
        if self._patient is _UNSET:
            self._patient = patient_reference(self.resource_type, self.id, self.content)
        result: str | None = self._patient
        return result

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.id}"

    def _served_meta(self) -> dict[str, Any]:
        source = self._meta if self._raw is not None else self.content.get("meta")
        meta = dict(source or {})
        meta["versionId"] = str(self.version)
        meta["lastUpdated"] = instant(self.last_updated)
        return meta

    def with_meta(self) -> dict[str, Any]:
        """The resource as served: content with meta.versionId and meta.lastUpdated set."""
        meta = self._served_meta()
        return {"resourceType": self.resource_type, "id": self.id, **self.content, "meta": meta}

    def served_json(self) -> str:
        """:meth:`with_meta` as JSON text; from the stored text without decoding it when the
        resource was read that way."""
        if self._raw is None:
            return dumps(self.with_meta())
        if self._meta:
            meta = dumps(self._served_meta())
        else:  # what dumps(self._served_meta()) gives for no stored meta, without the dict
            meta = (
                f'{{"versionId":{json_string(str(self.version))},'
                f'"lastUpdated":"{instant(self.last_updated)}"}}'
            )
        head = (
            f'{{"resourceType":{json_string(self.resource_type)},"id":{json_string(self.id)},'
            f'"meta":{meta}'
        )
        rest = self._raw.lstrip()[1:].lstrip()
        return head + "}" if rest.startswith("}") else head + "," + rest

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StoredResource):
            return NotImplemented
        return (
            self.resource_type,
            self.id,
            self.version,
            self.last_updated,
            self.institution_code,
            self.content,
        ) == (
            other.resource_type,
            other.id,
            other.version,
            other.last_updated,
            other.institution_code,
            other.content,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"StoredResource({self.reference}, version {self.version})"


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
