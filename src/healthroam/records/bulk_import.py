"""Bulk import of NDJSON for initial loads: a hospital's history, a health-archive migration.

Each line is one resource, validated like a FHIR write and stored with the id it carries (so
references between the imported resources keep working). Lines are taken a chunk at a time;
each chunk is one transaction, committed before the next is read, so whatever the report counts
as imported is durable. A line that fails (bad JSON, invalid resource, missing scope, an id that
belongs to another institution) is reported with its line number and skipped; the rest of its
chunk is imported.

New resources of every type but Patient take a fast path (multi-row inserts of the resource,
its first version and its search index rows). Patients go through the record service, so each
is matched and linked in the master patient index exactly as a FHIR create would be. A line
whose id already exists at the same institution becomes a new version, unless its content is
unchanged (then nothing is written): re-sending a file after fixing its bad lines is safe.
On PostgreSQL an import that grows the store by a tenth or more ends with ``ANALYZE``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select, text, tuple_

from healthroam.db.engine import Database
from healthroam.db.schema import fhir_resource_versions, fhir_resources
from healthroam.db.tables_records import INDEX_TABLES
from healthroam.errors import HealthroamError, InvalidInput
from healthroam.records.model import patient_reference, stored_body
from healthroam.records.repository import ResourceRepository
from healthroam.records.service import RecordService, check_store_type, require
from healthroam.records.validation import ID_PATTERN, validate_resource
from healthroam.security.audit import Action
from healthroam.security.model import Principal
from healthroam.security.service import AuditTrail, Clock, utcnow

MAX_ERRORS = 1000  # reported in full up to this many; counted beyond


@dataclass(frozen=True, slots=True)
class LineError:
    line: int
    detail: str
    expression: str | None = None


@dataclass(slots=True)
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    errors: list[LineError] = field(default_factory=list)

    @property
    def lines(self) -> int:
        return self.created + self.updated + self.unchanged + self.failed

    def fail(self, line: int, detail: str, expression: str | None = None) -> None:
        self.failed += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(LineError(line, detail, expression))


@dataclass(frozen=True, slots=True)
class _Line:
    number: int
    resource_type: str
    resource_id: str
    resource: dict[str, Any]


class BulkImporter:
    def __init__(
        self,
        db: Database,
        audit: AuditTrail,
        records: RecordService,
        *,
        chunk_size: int = 1000,
        clock: Clock = utcnow,
    ) -> None:
        self.db, self.audit, self.records = db, audit, records
        self.chunk_size = chunk_size
        self.clock = clock

    def import_lines(
        self,
        principal: Principal,
        lines: Iterable[bytes | str],
        *,
        progress: Callable[[ImportReport], None] | None = None,
    ) -> ImportReport:
        report = ImportReport()
        for chunk in self._chunks(principal, lines, report):
            with self.db.transaction() as conn:
                self._store(conn, principal, chunk, report)
            if progress is not None:
                progress(report)
        self._refresh_statistics(report.created)
        return report

    def _refresh_statistics(self, created: int) -> None:
        """On PostgreSQL, ANALYZE the store's tables when this import grew them by a tenth or
        more (or they were never analyzed), as autovacuum would do only later, if at all:
        with stale statistics the planner takes a freshly loaded index table for empty and
        a date-range search ran 60 times slower."""
        if self.db.dialect != "postgresql" or created == 0:
            return
        with self.db.transaction() as conn:
            estimated = conn.execute(
                text("SELECT reltuples FROM pg_class WHERE relname = :name"),
                {"name": fhir_resources.name},
            ).scalar()
            if estimated is not None and estimated > 0 and created * 10 < estimated:
                return
            tables = [fhir_resources, fhir_resource_versions, *INDEX_TABLES]
            conn.execute(text("ANALYZE " + ", ".join(f'"{t.name}"' for t in tables)))

    # --- parsing and validation (no database) -------------------------------------------------

    def _chunks(
        self, principal: Principal, lines: Iterable[bytes | str], report: ImportReport
    ) -> Iterator[list[_Line]]:
        chunk: list[_Line] = []
        seen: set[tuple[str, str]] = set()
        for number, raw in enumerate(lines, start=1):
            text = raw.decode("utf-8", errors="strict") if isinstance(raw, bytes) else raw
            if not text.strip():
                continue
            try:
                line = self._parse(principal, number, text)
            except UnicodeDecodeError:
                report.fail(number, "the line is not UTF-8")
                continue
            except HealthroamError as error:
                report.fail(number, error.detail, error.expression)
                continue
            key = (line.resource_type, line.resource_id)
            if key in seen:
                # Two versions of one resource in one chunk: store what came before first.
                yield chunk
                chunk, seen = [], set()
            seen.add(key)
            chunk.append(line)
            if len(chunk) >= self.chunk_size:
                yield chunk
                chunk, seen = [], set()
        if chunk:
            yield chunk

    @staticmethod
    def _parse(principal: Principal, number: int, text: str) -> _Line:
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
        return _Line(number, resource_type, resource_id, resource)

    # --- storing one chunk (one transaction) --------------------------------------------------

    def _store(
        self, conn: Connection, principal: Principal, chunk: list[_Line], report: ImportReport
    ) -> None:
        c = fhir_resources.c
        existing: dict[tuple[str, str], Any] = {}
        keys = [(line.resource_type, line.resource_id) for line in chunk]
        for start in range(0, len(keys), 500):
            rows = conn.execute(
                select(c.resource_type, c.id, c.institution_code, c.deleted, c.content).where(
                    tuple_(c.resource_type, c.id).in_(keys[start : start + 500])
                )
            )
            existing.update({(row.resource_type, row.id): row for row in rows})
        fast: list[_Line] = []
        for line in chunk:
            found = existing.get((line.resource_type, line.resource_id))
            if found is None and line.resource_type != "Patient":
                fast.append(line)
                continue
            if found is not None:
                if found.institution_code not in (None, principal.institution_code):
                    report.fail(
                        line.number,
                        f"{line.resource_type}/{line.resource_id} belongs to another "
                        "institution; import it with another id",
                        f"{line.resource_type}.id",
                    )
                    continue
                if not found.deleted and found.content == stored_body(line.resource):
                    report.unchanged += 1
                    continue
            self._one(conn, principal, line, report, update=found is not None)
        if fast:
            ResourceRepository(conn).create_many(
                [(line.resource_type, line.resource_id, line.resource) for line in fast],
                self.clock(),
                principal.institution_code,
            )
            self.audit.append(
                conn,
                [
                    self.audit.event(
                        principal,
                        action=Action.CREATE,
                        subtype="import",
                        resource_type=line.resource_type,
                        resource_id=line.resource_id,
                        patient_ref=patient_reference(
                            line.resource_type, line.resource_id, line.resource
                        ),
                    )
                    for line in fast
                ],
            )
            report.created += len(fast)

    def _one(
        self,
        conn: Connection,
        principal: Principal,
        line: _Line,
        report: ImportReport,
        *,
        update: bool,
    ) -> None:
        """Through the record service (Patients are matched; existing ids get a new version),
        in a savepoint so that a refused line leaves the rest of the chunk intact."""
        savepoint = conn.begin_nested()
        try:
            if update:
                self.records.update_in(
                    conn,
                    principal,
                    line.resource_type,
                    line.resource_id,
                    line.resource,
                    method="PUT",
                )
            else:
                self.records.create_in(
                    conn,
                    principal,
                    line.resource_type,
                    line.resource,
                    resource_id=line.resource_id,
                )
        except HealthroamError as error:
            savepoint.rollback()
            report.fail(line.number, error.detail, error.expression)
            return
        savepoint.commit()
        if update:
            report.updated += 1
        else:
            report.created += 1
