"""The database-free half of a bulk ``$import``: parse, validate and index NDJSON lines.

A chunk of raw lines goes in; out come, per line, either an error (line number, reason, path)
or everything the store will write for it: the stored JSON body, the patient it belongs to, and
its search index rows — already formatted as PostgreSQL ``COPY`` text when the target is
PostgreSQL, as column tuples otherwise. Nothing here touches the database, so the work can run
in worker processes (:class:`~healthroam.records.bulk_import.BulkImporter` uses a process pool
for large imports) and the importing process only sends finished rows.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from healthroam.errors import HealthroamError, InvalidInput
from healthroam.records.model import patient_reference, stored_body
from healthroam.records.repository import index_rows
from healthroam.records.service import check_store_type, require
from healthroam.records.validation import ID_PATTERN, validate_resource
from healthroam.security.model import Principal


@dataclass(frozen=True, slots=True)
class LineError:
    line: int
    detail: str
    expression: str | None = None


@dataclass(frozen=True, slots=True)
class PreparedLine:
    number: int
    resource_type: str
    resource_id: str
    body: str  # the stored body (no resourceType/id/server meta) as compact JSON
    patient_ref: str | None
    # index rows by table name: COPY text (PostgreSQL) or a list of column tuples
    index: dict[str, str] | dict[str, list[tuple[Any, ...]]]
    resource: dict[str, Any] | None = None  # the validated resource, for Patients only

    def content(self) -> dict[str, Any]:
        """The validated resource (rebuilt from the stored body where it was not kept)."""
        if self.resource is not None:
            return self.resource
        return {"resourceType": self.resource_type, "id": self.resource_id, **self.stored()}

    def stored(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.body)
        return body


Prepared = PreparedLine | LineError


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def copy_field(value: Any) -> str:
    """One value in PostgreSQL's COPY text format."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, str):
        # str.replace scans in C; translate() with a mapping looks up every character.
        text: str = value
        if "\\" in text:
            text = text.replace("\\", "\\\\")
        if "\t" in text or "\n" in text or "\r" in text:
            text = text.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
        return text
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def copy_line(values: tuple[Any, ...] | list[Any]) -> str:
    return "\t".join(copy_field(v) for v in values) + "\n"


def copy_row(values: list[Any]) -> str:
    """The same text as :func:`copy_line`, faster for the usual row: strings and NULLs are
    placed without a call each, and the joined line is checked once (by C scans) for
    anything that needs escaping - a tab, newline, carriage return or backslash that is not
    one of the NULL markers - in which case the row is formatted by :func:`copy_line`."""
    parts = [v if type(v) is str else "\\N" if v is None else copy_field(v) for v in values]
    line = "\t".join(parts)
    if (
        line.count("\t") != len(parts) - 1
        or line.count("\\") != values.count(None)
        or "\n" in line
        or "\r" in line
    ):
        return copy_line(values)
    return line + "\n"


def prepare_chunk(
    principal: Principal,
    lines: list[tuple[int, bytes | str]],
    columns: dict[str, tuple[str, ...]],
    copy_text: bool,
) -> list[Prepared]:
    """Parse, check and index each numbered line. ``columns`` gives each index table's column
    order; ``copy_text`` chooses COPY text over tuples."""
    out: list[Prepared] = []
    for number, raw in lines:
        try:
            text = raw.decode("utf-8", errors="strict") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError:
            out.append(LineError(number, "the line is not UTF-8"))
            continue
        if not text.strip():
            continue
        try:
            out.append(_prepare(principal, number, text, columns, copy_text))
        except HealthroamError as error:
            out.append(LineError(number, error.detail, error.expression))
    return out


def _prepare(
    principal: Principal,
    number: int,
    text: str,
    columns: dict[str, tuple[str, ...]],
    copy_text: bool,
) -> PreparedLine:
    try:
        body = json.loads(text)
    except ValueError:
        raise InvalidInput("the line is not a JSON resource") from None
    if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
        raise InvalidInput("the line is not a FHIR resource", expression="resourceType")
    resource_type: str = body["resourceType"]
    check_store_type(resource_type)
    require(principal, resource_type, "c")
    resource_id = body.get("id")
    if resource_id is None:
        resource_id = str(uuid.uuid4())
        body = {**body, "id": resource_id}
    if not isinstance(resource_id, str) or not ID_PATTERN.match(resource_id):
        raise InvalidInput(
            "a resource id is 1-64 of A-Z a-z 0-9 - .", expression=f"{resource_type}.id"
        )
    resource = validate_resource(body, resource_type)
    rows = index_rows(resource_type, resource_id, resource)
    index: dict[str, Any] = {}
    for table, dicts in rows.items():
        order = columns[table.name]
        if copy_text:
            index[table.name] = "".join([copy_row([row.get(c) for c in order]) for row in dicts])
        else:
            index[table.name] = [tuple([row.get(c) for c in order]) for row in dicts]
    return PreparedLine(
        number,
        resource_type,
        resource_id,
        dumps(stored_body(resource)),
        patient_reference(resource_type, resource_id, resource),
        index,
        resource if resource_type == "Patient" else None,
    )
