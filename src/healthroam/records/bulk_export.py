"""FHIR Bulk Data 2.0 ``$export``: kick-off, status, NDJSON files, run by a background worker.

A kick-off stores a job with the caller's client, scopes and purpose of use; a worker (in the
API process, :class:`ExportWorker`) claims it, streams the matching current resources into
NDJSON files under ``<bulk_dir>/<job>/`` and writes the manifest. The job never reads more
than the caller's scopes allow, and every person whose data it exports is audited (one entry
per person per job, appended as the files are written).

A care provider (hospital, clinic, health centre) exports only the resources it wrote itself:
the care-relationship rules of the whole record (exchange/care) do not stretch to bulk reads
of other institutions' data. An agency (health commission, insurer) exports every resource its
scopes allow.

Levels: system (``/$export``), every Patient compartment (``/Patient/$export``) and one Group's
members (``/Group/[id]/$export``; members may be stored Patients or golden master persons, whose
source Patients are all exported).

Claims (decision 0052): every server process runs a worker (decision 0048). A claim is a lease
with an owner token: while the job runs, a heartbeat thread of its runner refreshes it every
``heartbeat_every`` seconds, however slow the export's reads are; only a job whose heartbeat
is older than :data:`STALE_AFTER` (its runner's process is gone or frozen) is taken over, from
the start, by another worker under a new token. Every write of progress, audit and completion
checks the token, and each claim writes its files in a directory of its own
(``<bulk_dir>/<job>/<token>/``): a runner that comes back after losing its claim stops at its
next write and removes only its own files.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import and_, exists, false, or_, select, update

from healthroam.db.engine import Database
from healthroam.db.schema import fhir_resources, institutions
from healthroam.db.tables_bulk import bulk_export_jobs
from healthroam.db.tables_records import fhir_idx_reference
from healthroam.errors import Forbidden, Gone, InvalidInput, NotFound
from healthroam.records.model import StoredResource, patient_reference
from healthroam.records.search import check_type
from healthroam.registry.service import RegistryService
from healthroam.security.audit import Action
from healthroam.security.model import InstitutionKind, Principal
from healthroam.security.scopes import ScopeSet
from healthroam.security.service import AuditTrail, Clock, utcnow

log = logging.getLogger(__name__)

OUTPUT_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
LEVELS = ("system", "patient", "group")
# Kick-off parameters of the Bulk Data spec that this server does not implement: refused
# (or ignored with `Prefer: handling=lenient`) rather than silently half-honoured.
UNSUPPORTED = frozenset(
    {"_typeFilter", "_elements", "patient", "includeAssociatedData", "_until", "organizeOutputBy"}
)
KNOWN = frozenset({"_outputFormat", "_type", "_since"})
CHUNK = 1000
STALE_AFTER = timedelta(minutes=2)  # a running job without a heartbeat this long is re-run
HEARTBEAT_EVERY = 15.0  # seconds between a runner's heartbeats (8 fit in STALE_AFTER)
EXPIRE_EVERY = 60.0  # seconds between a worker's looks for finished jobs past retention
COMMIT_LAG = timedelta(seconds=5)  # longest expected write transaction


@dataclass(frozen=True, slots=True)
class ExportRequest:
    level: str
    group_id: str | None
    types: tuple[str, ...] | None
    since: datetime | None
    request_url: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class JobStatus:
    id: str
    status: str
    progress: str | None
    manifest: dict[str, Any] | None
    error: str | None


def parse_kickoff(
    level: str,
    params: Sequence[tuple[str, str]],
    *,
    request_url: str,
    group_id: str | None = None,
    lenient: bool = False,
) -> ExportRequest:
    """Check a kick-off's parameters (pure; raises InvalidInput naming the parameter)."""
    if level not in LEVELS:
        raise InvalidInput(f"unknown export level {level}", expression="level")
    warnings: list[str] = []
    types: list[str] = []
    since: datetime | None = None
    for name, value in params:
        if name == "_outputFormat":
            if value not in OUTPUT_FORMATS:
                raise InvalidInput(
                    "_outputFormat must be application/fhir+ndjson", expression="_outputFormat"
                )
        elif name == "_type":
            for part in value.split(","):
                part = part.strip()
                if not part:
                    continue
                try:
                    check_type(part)
                except InvalidInput:
                    raise InvalidInput(
                        f"_type: {part} is not a resource type", expression="_type"
                    ) from None
                types.append(part)
        elif name == "_since":
            since = _instant(value)
        elif name in UNSUPPORTED or name not in KNOWN:
            message = f"export parameter {name} is not supported"
            if not lenient:
                raise InvalidInput(message, expression=name)
            warnings.append(message + " (ignored)")
    return ExportRequest(
        level=level,
        group_id=group_id,
        types=tuple(dict.fromkeys(types)) or None,
        since=since,
        request_url=request_url,
        warnings=tuple(warnings),
    )


def _instant(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput("_since must be a FHIR instant", expression="_since") from None
    if moment.tzinfo is None:
        raise InvalidInput("_since must carry a time zone", expression="_since")
    return moment


@dataclass(slots=True)
class _Output:
    """NDJSON files of one resource type, rolled over every ``limit`` resources."""

    directory: Path
    resource_type: str
    limit: int
    files: list[tuple[str, int]] = field(default_factory=list)  # (name, count)
    _handle: TextIO | None = None

    def write(self, line: str) -> None:
        if self._handle is None or self.files[-1][1] >= self.limit:
            self.close()
            name = f"{self.resource_type}-{len(self.files) + 1}.ndjson"
            self._handle = (self.directory / name).open("w", encoding="utf-8")
            self.files.append((name, 0))
        self._handle.write(line)
        self._handle.write("\n")
        name, count = self.files[-1]
        self.files[-1] = (name, count + 1)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class ClaimLost(Exception):
    """The runner's claim is no longer the job's: the job was cancelled, or another worker
    took it over after this runner's heartbeat stopped (its process was frozen or cut off)."""


class _Lease:
    """Keeps a claim alive: a thread that refreshes the job's heartbeat every ``every`` seconds
    for as long as the runner works (slow reads or writes do not make the job look stale)."""

    def __init__(self, service: BulkExportService, job_id: str, owner: str, every: float) -> None:
        self.service, self.job_id, self.owner, self.every = service, job_id, owner, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="bulk-export-lease", daemon=True)

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                if not self.service._touch(self.job_id, self.owner):
                    return  # cancelled or taken over: the runner finds out at its next write
            except Exception as error:  # the database may be back at the next beat
                log.warning("bulk export %s heartbeat: %s", self.job_id, type(error).__name__)


class BulkExportService:
    def __init__(
        self,
        db: Database,
        audit: AuditTrail,
        registry: RegistryService,
        directory: Path,
        *,
        file_max_resources: int = 100_000,
        retention: timedelta = timedelta(hours=24),
        clock: Clock = utcnow,
        heartbeat_every: float = HEARTBEAT_EVERY,
    ) -> None:
        self.db, self.audit, self.registry = db, audit, registry
        self.directory = directory
        self.file_max_resources = file_max_resources
        self.retention = retention
        self.clock = clock
        self.heartbeat_every = heartbeat_every

    # --- the API side -------------------------------------------------------------------------

    def kick_off(self, principal: Principal, request: ExportRequest) -> str:
        """Store the job (202 Accepted); the worker runs it."""
        for resource_type in request.types or ():
            if not _exportable(principal, resource_type):
                raise Forbidden(
                    f"token scopes do not allow reading and searching {resource_type}",
                    expression="_type",
                )
        if request.level == "group":
            self._group_members(principal, request.group_id or "")  # 404 now, not later
        job_id = str(uuid.uuid4())
        now = self.clock()
        with self.db.transaction() as conn:
            kind = conn.execute(
                select(institutions.c.kind).where(institutions.c.code == principal.institution_code)
            ).scalar()
            conn.execute(
                bulk_export_jobs.insert().values(
                    id=job_id,
                    own_only=kind != InstitutionKind.AGENCY.value,
                    client_id=principal.client_id,
                    institution_code=principal.institution_code,
                    scopes=str(principal.scopes),
                    purpose_of_use=principal.purpose_of_use,
                    end_user=principal.end_user,
                    level=request.level,
                    group_id=request.group_id,
                    types=",".join(request.types) if request.types else None,
                    since=request.since,
                    request_url=request.request_url,
                    status="accepted",
                    created_at=now,
                    manifest={"warnings": list(request.warnings)} if request.warnings else None,
                )
            )
            self.audit.append(
                conn,
                [
                    self.audit.event(
                        principal,
                        action=Action.EXECUTE,
                        event_type="query",
                        subtype="export",
                        resource_type="Group" if request.group_id else None,
                        resource_id=request.group_id,
                        query=request.request_url.partition("?")[2] or None,
                        detail=f"bulk export {job_id} accepted",
                    )
                ],
            )
        return job_id

    def status(self, principal: Principal, job_id: str) -> JobStatus:
        row = self._own_job(principal, job_id)
        if row.status == "expired":
            raise Gone("the export's files have expired", expression="job")
        if row.status == "cancelled":
            raise NotFound("no such export job", expression="job")
        manifest = row.manifest if row.status == "completed" else None
        return JobStatus(row.id, row.status, row.progress, manifest, row.error)

    def cancel(self, principal: Principal, job_id: str) -> None:
        row = self._own_job(principal, job_id)
        if row.status in ("cancelled", "expired"):
            raise NotFound("no such export job", expression="job")
        with self.db.transaction() as conn:
            conn.execute(
                update(bulk_export_jobs)
                .where(bulk_export_jobs.c.id == job_id)
                .values(status="cancelled", finished_at=self.clock())
            )
        shutil.rmtree(self.directory / job_id, ignore_errors=True)

    def file(self, principal: Principal, job_id: str, name: str) -> Path:
        """An output file of a completed job of the same client."""
        row = self._own_job(principal, job_id)
        if row.status != "completed":
            raise NotFound("no such export file", expression="file")
        names = {o["file"] for o in (row.manifest or {}).get("output", [])}
        if name not in names:
            raise NotFound("no such export file", expression="file")
        path = self._files_of(job_id, row.owner) / name
        if not path.is_file():
            raise Gone("the export's files have expired", expression="file")
        return path

    def _own_job(self, principal: Principal, job_id: str) -> Any:
        with self.db.transaction(readonly=True) as conn:
            row = conn.execute(
                select(bulk_export_jobs).where(bulk_export_jobs.c.id == job_id)
            ).first()
        # Another client's job is as invisible as a missing one.
        if row is None or row.client_id != principal.client_id:
            raise NotFound("no such export job", expression="job")
        return row

    # --- the worker side ----------------------------------------------------------------------

    def run_pending(self) -> str | None:
        """Claim and run the oldest accepted job; returns its id, or None when there is none."""
        job = self._claim()
        if job is None:
            return None
        files = self._files_of(job.id, job.owner)
        with _Lease(self, job.id, job.owner, self.heartbeat_every):
            try:
                manifest = self._run(job, files)
            except ClaimLost:
                log.warning("bulk export %s: claim lost (cancelled or taken over)", job.id)
                shutil.rmtree(files, ignore_errors=True)
                return str(job.id)
            except Exception as error:
                log.exception("bulk export %s failed: %s", job.id, type(error).__name__)
                shutil.rmtree(files, ignore_errors=True)
                self._finish(job, status="failed", error=type(error).__name__)
                return str(job.id)
            if not self._finish(job, status="completed", manifest=manifest):
                shutil.rmtree(files, ignore_errors=True)  # taken over or cancelled meanwhile
        return str(job.id)

    def _files_of(self, job_id: str, owner: str | None) -> Path:
        """Where a claim writes its files (jobs finished before claims had owners: the job's
        own directory)."""
        return self.directory / job_id / owner if owner else self.directory / job_id

    def expire(self) -> int:
        """Delete the files of jobs finished longer than the retention ago."""
        cutoff = self.clock() - self.retention
        c = bulk_export_jobs.c
        with self.db.transaction() as conn:
            ids = (
                conn.execute(
                    select(c.id).where(
                        c.status.in_(("completed", "failed")), c.finished_at < cutoff
                    )
                )
                .scalars()
                .all()
            )
            if ids:
                conn.execute(update(bulk_export_jobs).where(c.id.in_(ids)).values(status="expired"))
        for job_id in ids:
            shutil.rmtree(self.directory / job_id, ignore_errors=True)
        return len(ids)

    def has_work(self) -> bool:
        """Whether a job waits for a worker: accepted, or running with its runner's heartbeat
        gone. One read under no write lock: the worker's idle tick, so that an idle server
        does not take SQLite's write lock (or update rows on PostgreSQL) twice a second."""
        c = bulk_export_jobs.c
        stale = self.clock() - STALE_AFTER
        with self.db.transaction(readonly=True) as conn:
            waiting = conn.execute(
                select(c.id)
                .where(
                    or_(
                        c.status == "accepted",
                        and_(c.status == "running", c.heartbeat_at < stale),
                    )
                )
                .limit(1)
            ).first()
        return waiting is not None

    def _claim(self) -> Any:
        c = bulk_export_jobs.c
        with self.db.transaction() as conn:
            now = self.clock()  # after the write lock is held, not before waiting for it
            # A job whose runner is gone (no heartbeat) is taken up again from the start.
            conn.execute(
                update(bulk_export_jobs)
                .where(c.status == "running", c.heartbeat_at < now - STALE_AFTER)
                .values(status="accepted", owner=None)
            )
            # Several server processes each run a worker (decision 0048): on PostgreSQL the
            # oldest job no other worker is claiming right now (SKIP LOCKED: a second worker
            # takes the next job instead of waiting for the first one's claim and then finding
            # the job taken); SQLite has one writer, the transaction holds it.
            query = select(c.id).where(c.status == "accepted").order_by(c.created_at).limit(1)
            if self.db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            candidate = conn.execute(query).scalar()
            if candidate is None:
                return None
            claimed = conn.execute(
                update(bulk_export_jobs)
                .where(c.id == candidate, c.status == "accepted")
                .values(
                    status="running",
                    owner=uuid.uuid4().hex,
                    heartbeat_at=now,
                    transaction_time=now,
                    progress=None,
                )
            )
            if claimed.rowcount != 1:
                return None
            return conn.execute(select(bulk_export_jobs).where(c.id == candidate)).first()

    @staticmethod
    def _held(job_id: str, owner: str) -> Any:
        """The job is running under this claim (the condition of every write of its runner)."""
        c = bulk_export_jobs.c
        return and_(c.id == job_id, c.owner == owner, c.status == "running")

    def _touch(self, job_id: str, owner: str) -> bool:
        """Refresh the claim's heartbeat; False when the claim is no longer held."""
        with self.db.transaction() as conn:
            held = conn.execute(
                update(bulk_export_jobs)
                .where(self._held(job_id, owner))
                .values(heartbeat_at=self.clock())
            )
            return held.rowcount == 1

    def _progress(self, job: Any, progress: str, people: list[str]) -> None:
        """Record progress and audit the people of the chunk just written, in one transaction,
        if the claim is still held (else nothing: :class:`ClaimLost`)."""
        with self.db.transaction() as conn:
            held = conn.execute(
                update(bulk_export_jobs)
                .where(self._held(job.id, job.owner))
                .values(heartbeat_at=self.clock(), progress=progress)
            )
            if held.rowcount != 1:
                raise ClaimLost
            if people:
                self.audit.append(
                    conn,
                    self.audit.patient_queries(
                        self._principal(job),
                        people,
                        subtype="export",
                        detail=f"bulk export {job.id}",
                    ),
                )

    def _finish(
        self,
        job: Any,
        *,
        status: str,
        manifest: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> bool:
        """Complete or fail the job if the claim is still held; whether it was."""
        with self.db.transaction() as conn:
            held = conn.execute(
                update(bulk_export_jobs)
                .where(self._held(job.id, job.owner))
                .values(
                    status=status,
                    finished_at=self.clock(),
                    manifest=manifest,
                    error=error,
                    progress="done" if status == "completed" else None,
                )
            )
            return held.rowcount == 1

    def _principal(self, job: Any) -> Principal:
        return Principal(
            client_id=job.client_id,
            institution_code=job.institution_code,
            scopes=ScopeSet.parse(job.scopes),
            purpose_of_use=job.purpose_of_use,
            end_user=job.end_user,
        )

    def _run(self, job: Any, directory: Path) -> dict[str, Any]:
        principal = self._principal(job)
        directory.mkdir(parents=True, exist_ok=True)
        until: datetime = job.transaction_time
        patients: list[str] | None = None
        if job.level == "group":
            patients = self._group_members(principal, job.group_id)
        types = self._types(job, principal)
        outputs: list[_Output] = []
        audited: set[str] = set()
        exported = 0
        for resource_type in types:
            output = _Output(directory, resource_type, self.file_max_resources)
            outputs.append(output)
            try:
                for chunk in self._chunks(job, resource_type, until, patients):
                    people: list[str] = []
                    for resource_id, version, last_updated, content in chunk:
                        stored = StoredResource(
                            resource_type, resource_id, version, last_updated, content
                        )
                        resource = stored.with_meta()
                        output.write(json.dumps(resource, ensure_ascii=False))
                        ref = patient_reference(resource_type, resource_id, resource)
                        if ref is not None and ref not in audited:
                            audited.add(ref)
                            people.append(ref)
                    exported += len(chunk)
                    self._progress(job, f"{exported} resources, {resource_type}", people)
            finally:
                output.close()
        return {
            # Writes that stamped their time before `until` but committed after these reads
            # are not in the files; reporting a time COMMIT_LAG earlier makes the next export
            # with `_since=transactionTime` include them (some resources twice, none lost).
            "transactionTime": _instant_text(_aware(until) - COMMIT_LAG),
            "request": job.request_url,
            "requiresAccessToken": True,
            "output": [
                {
                    "type": o.resource_type,
                    "file": name,  # the API turns it into a URL on its own base
                    "count": count,
                }
                for o in outputs
                for name, count in o.files
            ],
            "error": [],
            **({"extension": {"warnings": job.manifest["warnings"]}} if job.manifest else {}),
        }

    def _types(self, job: Any, principal: Principal) -> list[str]:
        if job.types:
            return [t for t in job.types.split(",") if _exportable(principal, t)]
        with self.db.transaction(readonly=True) as conn:
            present = (
                conn.execute(
                    select(fhir_resources.c.resource_type)
                    .where(fhir_resources.c.deleted == false())
                    .distinct()
                )
                .scalars()
                .all()
            )
        readable = sorted(t for t in present if _exportable(principal, t))
        # Patient first: a reader can then resolve every other file's subject references.
        return sorted(readable, key=lambda t: t != "Patient")

    def _chunks(
        self, job: Any, resource_type: str, until: datetime, patients: list[str] | None
    ) -> Iterator[list[tuple[str, int, datetime, dict[str, Any]]]]:
        """Current resources of one type, in id order, ``CHUNK`` at a time (keyset paging, so
        no transaction stays open while files are written)."""
        r = fhir_resources.c
        conditions = [
            r.resource_type == resource_type,
            r.deleted == false(),
            r.last_updated <= until,
        ]
        if job.since is not None:
            conditions.append(r.last_updated > job.since)
        if job.level != "system":
            conditions.append(self._in_compartment(resource_type, patients))
        if job.own_only:
            conditions.append(r.institution_code == job.institution_code)
        after = ""
        while True:
            with self.db.transaction(readonly=True) as conn:
                rows = conn.execute(
                    select(r.id, r.version, r.last_updated, r.content)
                    .where(*conditions, r.id > after)
                    .order_by(r.id)
                    .limit(CHUNK)
                ).all()
            if not rows:
                return
            yield [(row[0], row[1], row[2], row[3]) for row in rows]
            after = rows[-1][0]

    @staticmethod
    def _in_compartment(resource_type: str, patients: list[str] | None) -> Any:
        """The resource is (or refers to) one of ``patients`` (None: any Patient)."""
        r = fhir_resources.c
        ref = fhir_idx_reference.c
        refers = [
            ref.resource_type == resource_type,
            ref.resource_id == r.id,
            ref.target_type == "Patient",
        ]
        if patients is not None:
            refers.append(ref.target_id.in_(patients))
        if resource_type == "Patient":
            return r.id.in_(patients) if patients is not None else r.id.is_not(None)
        return exists(select(ref.row_id).where(and_(*refers)))

    def _group_members(self, principal: Principal, group_id: str) -> list[str]:
        """Stored Patient ids of a Group's members; a golden member (master index id) brings
        every source Patient the registry links to that person."""
        if not principal.scopes.allows("Group", "r"):
            raise Forbidden("a Group export needs system/Group.rs", expression="Group")
        with self.db.transaction(readonly=True) as conn:
            row = conn.execute(
                select(fhir_resources.c.content).where(
                    fhir_resources.c.resource_type == "Group",
                    fhir_resources.c.id == group_id,
                    fhir_resources.c.deleted == false(),
                )
            ).first()
        if row is None:
            raise NotFound(f"no Group {group_id}", expression="Group.id")
        patients: list[str] = []
        for member in row[0].get("member", []):
            reference = member.get("entity", {}).get("reference", "")
            kind, _, member_id = reference.partition("/")
            if kind != "Patient" or not member_id:
                continue
            patients.extend(self._patient_ids(member_id))
        return list(dict.fromkeys(patients))

    def _patient_ids(self, member_id: str) -> list[str]:
        if len(member_id) == 64 and all(ch in "0123456789ABCDEF" for ch in member_id):
            try:
                view = self.registry.resolve(member_id)
            except NotFound:
                return []
            if view.survivor is not None:
                view = self.registry.resolve(view.survivor.master_index_id)
            return [s.fhir_patient_id for s in view.sources if s.fhir_patient_id]
        return [member_id]


def _exportable(principal: Principal, resource_type: str) -> bool:
    return principal.scopes.allows(resource_type, "r") and principal.scopes.allows(
        resource_type, "s"
    )


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; they are stored as UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _instant_text(moment: datetime) -> str:
    return _aware(moment).astimezone(UTC).isoformat().replace("+00:00", "Z")


class ExportWorker:
    """Runs accepted export jobs in a background thread of each API process (decision 0048:
    every server process runs one; a job is claimed under a row lock and held by a lease with
    an owner token, decision 0052, so it runs once)."""

    def __init__(self, service: BulkExportService, interval_ms: int) -> None:
        self.service = service
        self.interval = max(interval_ms, 10) / 1000
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="bulk-export", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        expired_at = 0.0
        while not self._stop.is_set():
            try:
                # A kick-off in this process wakes the worker (has_work is then true); the
                # idle tick is one read, the claim's write transaction only when a job waits.
                if self.service.has_work():
                    while not self._stop.is_set() and self.service.run_pending():
                        pass
                if time.monotonic() - expired_at >= EXPIRE_EVERY:
                    self.service.expire()
                    expired_at = time.monotonic()
            except Exception as error:  # keep serving; the job row says what failed
                log.error("bulk export worker: %s", type(error).__name__)
            self._wake.wait(self.interval)
            self._wake.clear()
