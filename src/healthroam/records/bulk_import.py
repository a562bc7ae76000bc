"""Bulk import of NDJSON for initial loads: a hospital's history, a health-archive migration.

Each line is one resource, validated like a FHIR write and stored with the id it carries (so
references between the imported resources keep working). Lines are taken a chunk at a time;
each chunk is one transaction, committed before the next is read, so whatever the report counts
as imported is durable. A line that fails (bad JSON, invalid resource, missing scope, a care
provider's update of a resource another institution wrote) is reported with its line number
and skipped; the rest of its chunk is imported.

New resources of every type but Patient take a fast path (multi-row inserts of the resource,
its first version and its search index rows). Patients go through the record service, so each
is matched and linked in the master patient index exactly as a FHIR create would be. A line
whose id already exists becomes a new version where a FHIR update would be allowed (the record
gate: the institution that wrote it, or an agency), unless its content is unchanged (then
nothing is written): re-sending a file after fixing its bad lines is safe.
An import that grows the store by a tenth or more ends with ``ANALYZE``.

Audit (decision 0036): the fast path writes one entry per chunk and patient, naming every
resource it wrote (``detail``); Patients and new versions keep one entry each.

Speed (decisions 0027, 0036): parsing, validation and index extraction
(:mod:`healthroam.records.bulk_prepare`) run in worker processes, 250 lines per task, once an
import is larger than that, a few chunks ahead of the writer; on PostgreSQL they hand over finished
``COPY`` text. Patients are registered on a second connection beside the fast path (each of
the two commits its share of a chunk before the chunk is counted), because registry matching
waits on the database far more than it computes.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, tuple_

from healthroam.db.engine import Database
from healthroam.db.schema import fhir_resource_versions, fhir_resources
from healthroam.db.statistics import refresh_statistics
from healthroam.db.tables_records import INDEX_TABLES, STORE_TABLES
from healthroam.errors import HealthroamError, Unavailable
from healthroam.records.bulk_prepare import (
    LineError,
    Prepared,
    PreparedLine,
    copy_field,
    prepare_chunk,
)
from healthroam.records.repository import STAMPED as STAMPED_TABLES
from healthroam.records.repository import millis
from healthroam.records.service import RecordService, WriteRefused
from healthroam.security.audit import Action, AuditRecord
from healthroam.security.model import Principal
from healthroam.security.service import AuditTrail, Clock, utcnow

MAX_ERRORS = 1000  # reported in full up to this many; counted beyond
PIECE = 250  # lines per task for the worker processes (a chunk is written as one)
TABLES = {t.name: t for t in INDEX_TABLES}
# Written by the write, not prepared by the workers: the token and date rows' lastUpdated (the
# chunk's time, known only when it is written), always the last column.
STAMPED = {t.name: "last_updated" for t in STAMPED_TABLES}
COLUMNS: dict[str, tuple[str, ...]] = {
    t.name: tuple(c.name for c in t.columns if c.name != "row_id" and c.name != STAMPED.get(t.name))
    for t in INDEX_TABLES
}
__all__ = ["BulkImporter", "ImportReport", "LineError"]


@dataclass(slots=True)
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    errors: list[LineError] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def lines(self) -> int:
        return self.created + self.updated + self.unchanged + self.failed

    def fail(self, line: int, detail: str, expression: str | None = None) -> None:
        with self._lock:
            self.failed += 1
            if len(self.errors) < MAX_ERRORS:
                self.errors.append(LineError(line, detail, expression))

    def add(self, *, created: int = 0, updated: int = 0, unchanged: int = 0) -> None:
        with self._lock:
            self.created += created
            self.updated += updated
            self.unchanged += unchanged

    def sort_errors(self) -> None:
        self.errors.sort(key=lambda e: e.line)


class BulkImporter:
    def __init__(
        self,
        db: Database,
        audit: AuditTrail,
        records: RecordService,
        *,
        chunk_size: int = 1000,
        processes: int = 0,
        clock: Clock = utcnow,
    ) -> None:
        """``processes``: worker processes for parsing, validation and indexing of imports
        larger than one chunk (0: all in this process)."""
        self.db, self.audit, self.records = db, audit, records
        self.chunk_size = chunk_size
        self.processes = processes
        self.clock = clock
        self._pool: ProcessPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self.copy_text = db.dialect == "postgresql"

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None

    def import_lines(
        self,
        principal: Principal,
        lines: Iterable[bytes | str],
        *,
        progress: Callable[[ImportReport], None] | None = None,
    ) -> ImportReport:
        report = ImportReport()
        patients = _PatientLane(self, principal, report, threaded=self.db.dialect != "sqlite")
        try:
            for chunk in self._chunks(principal, lines, report):
                others = [line for line in chunk if line.resource_type != "Patient"]
                mine = [line for line in chunk if line.resource_type == "Patient"]
                if mine:
                    patients.put(mine)
                if others:
                    with self.db.transaction() as conn:
                        refused = self._store(conn, principal, others, report)
                    self._record_refusals(refused)
                if progress is not None:
                    progress(report)
        finally:
            patients.finish()
        report.sort_errors()
        self._refresh_statistics(report.created)
        return report

    def _record_refusals(self, refusals: list[WriteRefused]) -> None:
        for refusal in refusals:
            self.records.record_refusal(refusal)

    def _refresh_statistics(self, created: int) -> None:
        """ANALYZE the store's tables when this import grew them by a tenth or more (or they
        were never analyzed), as autovacuum would do only later, if at all, and SQLite never:
        with stale statistics a date-range search ran 60 times slower on PostgreSQL and a
        code-and-value search hundreds of times slower on SQLite (``db/statistics.py``)."""
        if created:
            refresh_statistics(self.db, STORE_TABLES)

    # --- parsing and validation (no database; worker processes for large imports) -------------

    def _raw_chunks(
        self, lines: Iterable[bytes | str], size: int
    ) -> Iterator[list[tuple[int, bytes | str]]]:
        chunk: list[tuple[int, bytes | str]] = []
        for number, raw in enumerate(lines, start=1):
            chunk.append((number, raw))
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _pool_for_import(self) -> ProcessPoolExecutor | None:
        if self.processes < 1:
            return None
        with self._pool_lock:
            if self._pool is None:
                method = "forkserver" if os.name == "posix" else "spawn"
                self._pool = ProcessPoolExecutor(
                    self.processes, mp_context=multiprocessing.get_context(method)
                )
            return self._pool

    def _forget_pool(self, pool: ProcessPoolExecutor) -> None:
        with self._pool_lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def _prepared(
        self, principal: Principal, lines: Iterable[bytes | str]
    ) -> Iterator[list[Prepared]]:
        """Prepared pieces in input order. With worker processes, lines go to them in pieces
        of :data:`PIECE` lines (so that even a one-chunk import uses every worker), a few
        chunks ahead of the writer, once there is more than one piece."""
        size = min(self.chunk_size, PIECE) if self.processes > 0 else self.chunk_size
        raw = self._raw_chunks(lines, size)
        first = next(raw, None)
        if first is None:
            return
        second = next(raw, None)
        pool = self._pool_for_import() if second is not None else None
        chunks: Iterator[list[tuple[int, bytes | str]]] = (
            iter((first,)) if second is None else itertools.chain((first, second), raw)
        )
        if pool is None:
            for chunk in chunks:
                yield prepare_chunk(principal, chunk, COLUMNS, self.copy_text)
            return
        pending: deque[Future[list[Prepared]]] = deque()
        ahead = 2 * self.processes * max(1, self.chunk_size // size)
        try:
            for chunk in chunks:
                pending.append(
                    pool.submit(prepare_chunk, principal, chunk, COLUMNS, self.copy_text)
                )
                if len(pending) > ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except BrokenProcessPool:
            # A worker died (killed, out of memory): this pool can take no more work. The next
            # import starts a new one; what was stored before stays, and sending the same
            # file again stores the rest (unchanged lines count as unchanged).
            self._forget_pool(pool)
            raise Unavailable(
                "an import worker process was lost; the lines stored so far are kept: send "
                "the import again to store the rest"
            ) from None

    def _chunks(
        self, principal: Principal, lines: Iterable[bytes | str], report: ImportReport
    ) -> Iterator[list[PreparedLine]]:
        chunk: list[PreparedLine] = []
        seen: set[tuple[str, str]] = set()
        for prepared in self._prepared(principal, lines):
            for line in prepared:
                if isinstance(line, LineError):
                    report.fail(line.line, line.detail, line.expression)
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

    # --- storing one chunk (one transaction) --------------------------------------------------

    def _store(
        self,
        conn: Connection,
        principal: Principal,
        chunk: list[PreparedLine],
        report: ImportReport,
    ) -> list[WriteRefused]:
        """Store one chunk; the refused updates of other institutions' resources are returned,
        for their audit entries to be recorded once the chunk's transaction has ended."""
        refusals: list[WriteRefused] = []
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
        fast: list[PreparedLine] = []
        patients: list[PreparedLine] = []
        for line in chunk:
            found = existing.get((line.resource_type, line.resource_id))
            if found is None:
                (patients if line.resource_type == "Patient" else fast).append(line)
                continue
            if found is not None:
                if found.institution_code not in (None, principal.institution_code):
                    # The record gate, as on a FHIR update: a care provider changes only
                    # what its own institution wrote; an agency may correct any record.
                    try:
                        self.records.check_write(
                            conn,
                            principal,
                            (line.resource_type, line.resource_id),
                            found.institution_code,
                            found.content,
                            "update",
                        )
                    except WriteRefused as refusal:
                        refusals.append(refusal)
                        report.fail(
                            line.number,
                            f"{refusal.detail}; import it with another id",
                            f"{line.resource_type}.id",
                        )
                        continue
                if not found.deleted and found.content == line.stored():
                    report.add(unchanged=1)
                    continue
            self._one(conn, principal, line, report, update=True)
        if patients:
            self._new_patients(conn, principal, patients, report)
        if fast:
            self._write_new(conn, fast, millis(self.clock()), principal.institution_code)
            self.audit.append(conn, self._audit_records(principal, fast))
            report.add(created=len(fast))
        return refusals

    def _audit_records(self, principal: Principal, lines: list[PreparedLine]) -> list[AuditRecord]:
        """One audit entry per patient (and one for resources about no patient) for the
        resources of a chunk written on the fast path (decision 0036): who (the principal),
        what (every resource, ``Type/id`` in ``detail``; the type when there is one), about
        whom (``patient_ref``), when, why (purpose of use)."""
        groups: dict[str | None, list[PreparedLine]] = {}
        for line in lines:
            groups.setdefault(line.patient_ref, []).append(line)
        records = []
        for patient_ref, group in groups.items():
            types = {line.resource_type for line in group}
            records.append(
                self.audit.event(
                    principal,
                    action=Action.CREATE,
                    subtype="import",
                    resource_type=types.pop() if len(types) == 1 else None,
                    resource_id=group[0].resource_id if len(group) == 1 else None,
                    patient_ref=patient_ref,
                    detail=" ".join(f"{line.resource_type}/{line.resource_id}" for line in group),
                )
            )
        return records

    def _write_new(
        self, conn: Connection, lines: list[PreparedLine], now: datetime, institution: str | None
    ) -> None:
        """Version 1 of each resource, its first history row and its index rows."""
        if self.copy_text:
            raw: Any = conn.connection.dbapi_connection
            assert raw is not None
            stamp, owner = copy_field(now), copy_field(institution)
            keys = [f"{line.resource_type}\t{line.resource_id}\t1\t{stamp}\tf\t" for line in lines]
            bodies = [copy_field(line.body) for line in lines]
            current = "".join(
                [f"{key}{owner}\t{body}\n" for key, body in zip(keys, bodies, strict=True)]
            )
            versions = "".join(
                [f"{key}POST\t{body}\n" for key, body in zip(keys, bodies, strict=True)]
            )
            blocks: list[tuple[str, tuple[str, ...], str]] = [
                (
                    fhir_resources.name,
                    ("resource_type", "id", "version", "last_updated", "deleted",
                     "institution_code", "content"),
                    current,
                ),
                (
                    fhir_resource_versions.name,
                    ("resource_type", "id", "version", "last_updated", "deleted", "method",
                     "content"),
                    versions,
                ),
            ]  # fmt: skip
            for name, columns in COLUMNS.items():
                block = "".join(str(line.index.get(name, "")) for line in lines)
                if block and name in STAMPED:
                    # A raw newline only ever ends a row in COPY text (a value's are escaped).
                    block = block.replace("\n", f"\t{stamp}\n")
                    columns = (*columns, STAMPED[name])
                if block:
                    blocks.append((name, columns, block))
            with raw.cursor() as cursor:
                for name, columns, block in blocks:
                    names = ", ".join(f'"{c}"' for c in columns)
                    # Table and column names come from our metadata, never from input.
                    with cursor.copy(f'COPY "{name}" ({names}) FROM STDIN') as copy:
                        copy.write(block)
            return
        base = {"version": 1, "last_updated": now, "deleted": False}
        conn.execute(
            insert(fhir_resources),
            [
                {
                    "resource_type": line.resource_type,
                    "id": line.resource_id,
                    "institution_code": institution,
                    "content": line.stored(),
                    **base,
                }
                for line in lines
            ],
        )
        conn.execute(
            insert(fhir_resource_versions),
            [
                {
                    "resource_type": line.resource_type,
                    "id": line.resource_id,
                    "method": "POST",
                    "content": line.stored(),
                    **base,
                }
                for line in lines
            ],
        )
        for name, columns in COLUMNS.items():
            stamped = {STAMPED[name]: now} if name in STAMPED else {}
            rows = [
                dict(zip(columns, values, strict=True)) | stamped
                for line in lines
                for values in line.index.get(name, ())
                if not isinstance(values, str)
            ]
            if rows:
                conn.execute(insert(TABLES[name]), rows)

    def _new_patients(
        self,
        conn: Connection,
        principal: Principal,
        lines: list[PreparedLine],
        report: ImportReport,
    ) -> None:
        """New Patients of a chunk through the record service in one batch (one insert per
        table and one audit insert; each is matched and linked in the registry as by a
        create), in a savepoint. If one is refused, the batch is rolled back and each is
        created on its own so that the refused line alone is reported."""
        if len(lines) > 1:
            savepoint = conn.begin_nested()
            try:
                self.records.create_many_in(
                    conn,
                    principal,
                    [(line.resource_type, line.resource_id, line.content()) for line in lines],
                )
            except HealthroamError:
                savepoint.rollback()
            else:
                savepoint.commit()
                report.add(created=len(lines))
                return
        for line in lines:
            self._one(conn, principal, line, report, update=False)

    def _one(
        self,
        conn: Connection,
        principal: Principal,
        line: PreparedLine,
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
                    line.content(),
                    method="PUT",
                    gated=False,  # internal: the record gate was asked above
                )
            else:
                self.records.create_in(
                    conn,
                    principal,
                    line.resource_type,
                    line.content(),
                    resource_id=line.resource_id,
                )
        except HealthroamError as error:
            savepoint.rollback()
            report.fail(line.number, error.detail, error.expression)
            return
        savepoint.commit()
        report.add(updated=1) if update else report.add(created=1)


class _PatientLane:
    """Patients of an import, registered in input order on their own connection (a thread
    on PostgreSQL; inline on SQLite, which has one writer). Each batch is one transaction."""

    _DONE: Any = object()

    def __init__(
        self, importer: BulkImporter, principal: Principal, report: ImportReport, *, threaded: bool
    ) -> None:
        self.importer, self.principal, self.report = importer, principal, report
        self.error: BaseException | None = None
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=4)
        self.thread: threading.Thread | None = None
        if threaded:
            self.thread = threading.Thread(target=self._run, name="import-patients", daemon=True)
            self.thread.start()

    def put(self, lines: list[PreparedLine]) -> None:
        if self.thread is None:
            self._store(lines)
            return
        if self.error is not None:
            raise self.error
        self.queue.put(lines)

    def finish(self) -> None:
        if self.thread is not None:
            self.queue.put(self._DONE)
            self.thread.join()
            self.thread = None
        if self.error is not None:
            raise self.error

    def _store(self, lines: list[PreparedLine]) -> None:
        with self.importer.db.transaction() as conn:
            refused = self.importer._store(conn, self.principal, lines, self.report)
        self.importer._record_refusals(refused)

    def _run(self) -> None:
        while True:
            lines = self.queue.get()
            if lines is self._DONE:
                return
            if self.error is not None:
                continue  # drain after a failure; the importer raises it
            try:
                self._store(lines)
            except BaseException as error:  # handed to the importing thread
                self.error = error
