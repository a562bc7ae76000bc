"""FHIR interactions on the shared health record, each audited.

Every interaction checks the caller's SMART scopes, opens one transaction (``*_in`` variants
run inside a caller's transaction, for Bundles), writes the resource, its version and its index
rows together, and appends the audit entries in the same transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Connection

from healthroam.db.engine import Database
from healthroam.errors import (
    Conflict,
    Forbidden,
    Gone,
    InvalidInput,
    NotFound,
    PreconditionFailed,
)
from healthroam.records.model import (
    NotSupported,
    StoredResource,
    patient_reference,
)
from healthroam.records.patch import apply_patch
from healthroam.records.repository import (
    SNAPSHOT_LIMIT,
    Key,
    ResourceRepository,
    VisibleCondition,
)
from healthroam.records.search import (
    Include,
    SearchRequest,
    check_type,
    parse_search,
)
from healthroam.records.validation import ID_PATTERN, validate_resource
from healthroam.registry.fhir import fhir_path, patient_to_source
from healthroam.registry.normalize import normalize_record
from healthroam.registry.service import Registration, RegistryService
from healthroam.security.audit import Action, AuditRecord, Outcome
from healthroam.security.model import Principal
from healthroam.security.service import AuditTrail, Clock, utcnow

# Served by the audit trail itself (api/fhir.py), never stored here.
NOT_STORED = frozenset({"AuditEvent"})
INCLUDE_ROUNDS = 3  # _include:iterate / _revinclude:iterate depth


def require(principal: Principal, resource_type: str, interaction: str) -> None:
    """Refuse unless the principal's scopes grant ``interaction`` on ``resource_type``."""
    if not principal.scopes.allows(resource_type, interaction):
        raise Forbidden(
            f"token scopes do not allow '{interaction}' on {resource_type} "
            f"(need system/{resource_type}.{interaction})",
            expression=resource_type,
        )


def check_store_type(resource_type: str) -> None:
    """404 for anything that is not a resource type of this store."""
    try:
        check_type(resource_type)
    except InvalidInput:
        raise NotFound(f"{resource_type} is not a resource type", expression="type") from None
    if resource_type in NOT_STORED:
        raise NotSupported(f"{resource_type} is read-only here", expression=resource_type)


def check_id(resource_id: str, resource_type: str) -> None:
    if not ID_PATTERN.match(resource_id):
        raise InvalidInput(
            "a resource id is 1-64 of A-Z a-z 0-9 - .", expression=f"{resource_type}.id"
        )


def parse_if_match(value: str | None) -> int | None:
    """``W/"3"`` -> 3."""
    if value is None:
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise InvalidInput('If-Match must be an ETag like W/"3"', expression="If-Match")
    return int(text)


def query_items(query: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(query, keep_blank_values=True)


@dataclass(frozen=True, slots=True)
class Notice:
    """What a write listener tells the caller: OperationOutcome issues (FHIR JSON) and links
    (a path under /fhir, a relation) - for example the duplicate-test alerts of a new order."""

    issues: tuple[dict[str, Any], ...] = ()
    links: tuple[tuple[str, str], ...] = ()

    def __add__(self, other: Notice) -> Notice:
        return Notice(self.issues + other.issues, self.links + other.links)


# Called inside the write's transaction after a resource of its type is created (True) or
# updated (False); it may write its own rows, and raising rolls the write back.
WriteListener = Callable[[Connection, Principal, StoredResource, bool], Notice]


@dataclass(frozen=True, slots=True)
class Access:
    """What the record gate allowed: who the read is audited as (purpose of use BTG after
    break-the-glass), a detail for the audit entry, and for searches and history the SQL
    condition of what may be shown (None: everything the scopes allow)."""

    principal: Principal
    detail: str | None = None
    visible: VisibleCondition | None = None
    notice: str | None = None  # other institutions' data was left out: how to see it


class RecordGate(Protocol):
    """Cross-institution access rules on top of SMART scopes (wired in from exchange/care):
    a care provider sees another institution's data about a person only with a care
    relationship or break-the-glass. Each method raises Forbidden to refuse."""

    def read(
        self,
        conn: Connection,
        principal: Principal,
        key: Key,
        institution: str | None,
        content: dict[str, Any] | None,
    ) -> Access: ...

    def search(
        self, conn: Connection, principal: Principal, request: SearchRequest, base_url: str
    ) -> Access: ...

    def history(self, conn: Connection, principal: Principal) -> Access: ...

    def write(
        self, conn: Connection, principal: Principal, key: Key, institution: str | None
    ) -> None:
        """Refuse (Forbidden) an update, patch or delete of a resource written by
        ``institution``: a care provider changes only what its own institution wrote."""


class AuditedRefusal(Forbidden):
    """The record gate refused an access. The refusal's audit entry is recorded once the
    transaction that asked has ended (:meth:`RecordService.record_refusal`: in a transaction
    of its own, as SQLite has one writer), so a rolled-back Bundle keeps it too."""

    def __init__(self, error: Forbidden, audit: AuditRecord) -> None:
        super().__init__(error.detail, expression=error.expression)
        self.audit = audit


class WriteRefused(AuditedRefusal):
    """An update, patch or delete of another institution's resource."""


class ReadRefused(AuditedRefusal):
    """A read or vread of a resource about a person whose record the caller may not see."""


class SearchRefused(AuditedRefusal):
    """A search restricted to a person whose record the caller may not see (Bundle entries)."""


@dataclass(frozen=True, slots=True)
class Created:
    stored: StoredResource
    registration: Registration | None = None  # for a Patient: the master person it joined
    created: bool = True  # False: a conditional create found the resource already there
    notice: Notice = field(default_factory=Notice)
    # A conditional create matched a resource the caller may not read: why it is not shown
    # (the answer carries where it is, never its body).
    withheld: str | None = None


@dataclass(slots=True)
class SearchResult:
    request: SearchRequest
    matches: list[StoredResource]
    included: list[StoredResource]
    total: int | None
    next_params: list[tuple[str, str]] | None
    unknown: list[str] = field(default_factory=list)
    notice: str | None = None  # other institutions' data left out (the record gate)


class RecordService:
    def __init__(
        self, db: Database, audit: AuditTrail, registry: RegistryService, clock: Clock = utcnow
    ) -> None:
        self.db, self.audit, self.registry, self.clock = db, audit, registry, clock
        self.listeners: dict[str, list[WriteListener]] = {}
        # Reads, searches and writes by API clients pass it; internal work (HL7 mapping and
        # bulk import, which call update_in with gated=False; the conditional matches of
        # writes) does not go through it.
        self.gate: RecordGate | None = None
        # Default-order pages by their search shape's statement (decision 0054; config
        # fhir_search_shapes).
        self.search_shapes = True

    def listen(self, resource_type: str, listener: WriteListener) -> None:
        """Call ``listener`` after every create and update of ``resource_type`` (wired in
        bootstrap.py, e.g. duplicate-test alerts on ServiceRequest)."""
        self.listeners.setdefault(resource_type, []).append(listener)

    def _notify(
        self, conn: Connection, principal: Principal, stored: StoredResource, created: bool
    ) -> Notice:
        notice = Notice()
        for listener in self.listeners.get(stored.resource_type, ()):
            notice = notice + listener(conn, principal, stored, created)
        return notice

    # --- audit --------------------------------------------------------------------------------

    def _event(
        self,
        principal: Principal,
        action: Action,
        subtype: str,
        resource_type: str,
        resource_id: str | None,
        content: dict[str, Any] | None,
        *,
        outcome: Outcome = Outcome.SUCCESS,
        detail: str | None = None,
    ) -> AuditRecord:
        return self.audit.event(
            principal,
            action=action,
            subtype=subtype,
            outcome=outcome,
            resource_type=resource_type,
            resource_id=resource_id,
            patient_ref=patient_reference(resource_type, resource_id or "", content)
            if content is not None and resource_id
            else None,
            detail=detail,
        )

    # --- create -------------------------------------------------------------------------------

    def create(
        self,
        principal: Principal,
        resource_type: str,
        body: Any,
        *,
        if_none_exist: str | None = None,
        base_url: str = "",
    ) -> Created:
        """Store a new resource; a Patient is also registered (matched) in the registry, in
        the same transaction, so the answer can say which master person it joined."""
        require(principal, resource_type, "c")
        resource = validate_resource(body, resource_type)
        with self.db.transaction() as conn:
            return self.create_in(
                conn,
                principal,
                resource_type,
                resource,
                if_none_exist=if_none_exist,
                base_url=base_url,
            )

    def create_in(
        self,
        conn: Connection,
        principal: Principal,
        resource_type: str,
        resource: dict[str, Any],
        *,
        if_none_exist: str | None = None,
        resource_id: str | None = None,
        base_url: str = "",
    ) -> Created:
        require(principal, resource_type, "c")
        if if_none_exist is not None:
            found = self._conditional_match(
                conn,
                principal,
                resource_type,
                if_none_exist,
                base_url,
                what="If-None-Exist",
                expression="If-None-Exist",
            )
            if found is not None:
                return self.matched_in(conn, principal, found)
        resource_id = resource_id or str(uuid.uuid4())
        registration = None
        repo = ResourceRepository(conn)
        stored = repo.create(
            resource_type, resource_id, resource, self.clock(), principal.institution_code
        )
        if resource_type == "Patient":
            registration = self._register(conn, principal, resource, resource_id, None)
        self.audit.append(
            conn,
            [self._event(principal, Action.CREATE, "create", resource_type, resource_id, resource)],
        )
        notice = self._notify(conn, principal, stored, True)
        return Created(stored, registration, notice=notice)

    def create_many_in(
        self,
        conn: Connection,
        principal: Principal,
        resources: Sequence[tuple[str, str, dict[str, Any]]],
        *,
        audit: Sequence[AuditRecord] = (),
    ) -> list[Created]:
        """:meth:`create_in` of several validated resources with the caller's ids, none of
        which exists yet (a taken id raises IntegrityError: run it in a savepoint). One insert
        per table and one audit insert (with ``audit``, further entries of the caller's) for
        all of them; Patients are registered and listeners called as for one create."""
        for resource_type, resource_id, _ in resources:
            require(principal, resource_type, "c")
            check_id(resource_id, resource_type)
        stored_all = ResourceRepository(conn).create_many(
            resources, self.clock(), principal.institution_code
        )
        registrations: list[Registration | None] = []
        events = list(audit)
        for resource_type, resource_id, resource in resources:
            registrations.append(
                self._register(conn, principal, resource, resource_id, None)
                if resource_type == "Patient"
                else None
            )
            events.append(
                self._event(
                    principal, Action.CREATE, "create", resource_type, resource_id, resource
                )
            )
        self.audit.append(conn, events)
        results = [
            Created(stored, registration, notice=self._notify(conn, principal, stored, True))
            for stored, registration in zip(stored_all, registrations, strict=True)
        ]
        return results

    def matched_in(self, conn: Connection, principal: Principal, stored: StoredResource) -> Created:
        """A conditional create found ``stored``: nothing is created, and the match is a read
        (audited) that the record gate decides; refused, the answer says only where it is."""
        key = (stored.resource_type, stored.id)
        refused: Forbidden | None
        try:
            require(principal, stored.resource_type, "r")
        except Forbidden as error:  # c and s scopes, no r: the match is not read either
            access, refused = Access(principal, "refused: scopes"), error
        else:
            access, refused = self._admit(
                conn, principal, key, stored.institution_code, stored.content
            )
        detail = "conditional create matched"
        if refused is not None:
            detail = f"{access.detail}; {detail}, not shown"
        elif access.detail:
            detail = f"{access.detail}; {detail}"
        self.audit.append(
            conn,
            [
                self._event(
                    access.principal,
                    Action.READ,
                    "read",
                    stored.resource_type,
                    stored.id,
                    stored.content,
                    outcome=Outcome.SUCCESS if refused is None else Outcome.MINOR_FAILURE,
                    detail=detail,
                )
            ],
        )
        withheld = None
        if refused is not None:
            withheld = (
                f"a matching {stored.resource_type} exists ({stored.reference}) and nothing "
                f"was created; it is not shown: {refused.detail}"
            )
        return Created(stored, None, created=False, withheld=withheld)

    def check_write(
        self,
        conn: Connection,
        principal: Principal,
        key: Key,
        institution: str | None,
        content: dict[str, Any] | None,
        subtype: str,
    ) -> None:
        """The record gate on changing the existing resource ``key`` (written by
        ``institution``); a refusal is raised as :class:`WriteRefused` with its audit entry."""
        if self.gate is None:
            return
        try:
            self.gate.write(conn, principal, key, institution)
        except Forbidden as error:
            event = self._event(
                principal,
                Action.DELETE if subtype == "delete" else Action.UPDATE,
                subtype,
                key[0],
                key[1],
                content,
                outcome=Outcome.MINOR_FAILURE,
                detail="refused: another institution's resource",
            )
            raise WriteRefused(error, event) from None

    def record_refusal(self, error: BaseException) -> None:
        """Record a refused access's audit entry (call it after the transaction that asked
        ended); other errors are left alone."""
        if isinstance(error, AuditedRefusal):
            self.audit.record([error.audit])

    def _register(
        self,
        conn: Connection,
        principal: Principal,
        resource: dict[str, Any],
        resource_id: str,
        institution: str | None,
    ) -> Registration:
        record, paths = patient_to_source(
            resource, institution or principal.institution_code, resource_id
        )
        try:
            normalized = normalize_record(record)
        except InvalidInput as error:
            raise fhir_path(error, paths) from None
        return self.registry.register_in(conn, principal, record, normalized)

    def _conditional(
        self, conn: Connection, resource_type: str, query: str, base_url: str
    ) -> list[StoredResource]:
        """Matches of a conditional interaction's search (at most two are read)."""
        query = query.split("?", 1)[1] if "?" in query else query
        request = parse_search(resource_type, query_items(query), strict=True)
        if not request.clauses:
            raise InvalidInput("a conditional interaction needs search criteria")
        repo = ResourceRepository(conn)
        keys = repo.find(request, repo.search_condition(request, base_url), 2)
        return repo.load(keys)

    def _conditional_match(
        self,
        conn: Connection,
        principal: Principal,
        resource_type: str,
        query: str,
        base_url: str,
        *,
        what: str,
        expression: str,
    ) -> StoredResource | None:
        """The one resource a conditional create, update or delete finds (None: none); more
        than one is refused (412, naming ``what`` matched)."""
        require(principal, resource_type, "s")
        found = self._conditional(conn, resource_type, query, base_url)
        if len(found) > 1:
            raise PreconditionFailed(
                f"{what} matched more than one resource", expression=expression
            )
        return found[0] if found else None

    # --- read ---------------------------------------------------------------------------------

    def read(self, principal: Principal, resource_type: str, resource_id: str) -> StoredResource:
        """Read and audit. The entry is committed with concurrent reads' entries (group
        commit, :meth:`AuditTrail.shared`: by this read's transaction or another's)
        before this returns; if that commit fails the read fails (``AuditNotRecorded``)."""
        require(principal, resource_type, "r")
        # The block ends once the entry is committed (by this transaction or another's).
        with self.audit.shared() as share, self.db.transaction() as conn:
            # The select goes first, outside the transaction (nothing was sent yet); the
            # gate's statements, if any, and the group's entries go in it.
            stored, deleted, refused, event = self._read_checked(
                conn, principal, resource_type, resource_id, first=True
            )
            if refused is None:
                share.join(conn, [event])
        if refused is not None:
            self.record_refusal(refused)
            raise refused
        return self._found(stored, deleted, resource_type, resource_id)

    def read_in(
        self, conn: Connection, principal: Principal, resource_type: str, resource_id: str
    ) -> StoredResource:
        stored, deleted, refused = self._read_audited(conn, principal, resource_type, resource_id)
        if refused is not None:
            raise refused
        return self._found(stored, deleted, resource_type, resource_id)

    def _admit(
        self,
        conn: Connection,
        principal: Principal,
        key: Key,
        institution: str | None,
        content: dict[str, Any] | None,
    ) -> tuple[Access, Forbidden | None]:
        """The record gate's answer for reading one resource (allowed when there is none)."""
        if self.gate is None:
            return Access(principal), None
        try:
            return self.gate.read(conn, principal, key, institution, content), None
        except Forbidden as refused:
            return Access(principal, "refused: no access to this person's record"), refused

    def _admit_past(
        self,
        conn: Connection,
        principal: Principal,
        resource_type: str,
        resource_id: str,
        content: dict[str, Any] | None,
    ) -> tuple[Access, Forbidden | None]:
        """:meth:`_admit` for an older version or the history of a resource: the institution
        is the current version's."""
        current = ResourceRepository(conn).current(resource_type, resource_id)
        institution = current.institution_code if current is not None else None
        return self._admit(conn, principal, (resource_type, resource_id), institution, content)

    def _read_audited(
        self, conn: Connection, principal: Principal, resource_type: str, resource_id: str
    ) -> tuple[StoredResource | None, bool, ReadRefused | None]:
        """Read and audit. A failed read is audited in ``conn``; a refused one comes back as
        :class:`ReadRefused` carrying its entry, for the caller to record once ``conn``'s
        transaction has ended (a Bundle's may roll back)."""
        stored, deleted, refused, event = self._read_checked(
            conn, principal, resource_type, resource_id
        )
        if refused is None:
            self.audit.append(conn, [event])
        return stored, deleted, refused

    def _read_checked(
        self,
        conn: Connection,
        principal: Principal,
        resource_type: str,
        resource_id: str,
        *,
        first: bool = False,
    ) -> tuple[StoredResource | None, bool, ReadRefused | None, AuditRecord]:
        """Read and decide (the record gate); the audit entry is returned, not written: a
        refused read comes back as :class:`ReadRefused` carrying it, any other read's entry
        is for the caller to record. ``first``: the read is the transaction's first
        statement (``ResourceRepository.read``)."""
        require(principal, resource_type, "r")
        stored, deleted = ResourceRepository(conn).read(resource_type, resource_id, first=first)
        access, refused = Access(principal), None
        if stored is not None:
            access, refused = self._admit(
                conn,
                principal,
                (resource_type, resource_id),
                stored.institution_code,
                stored.content,
            )
        failed = stored is None or refused is not None
        event = self._event(
            access.principal,
            Action.READ,
            "read",
            resource_type,
            resource_id,
            stored.content if stored else None,
            outcome=Outcome.MINOR_FAILURE if failed else Outcome.SUCCESS,
            detail=access.detail if stored else ("deleted" if deleted else "not found"),
        )
        if refused is not None:
            return None, deleted, ReadRefused(refused, event), event
        return stored, deleted, None, event

    @staticmethod
    def _found(
        stored: StoredResource | None, deleted: bool, resource_type: str, resource_id: str
    ) -> StoredResource:
        if stored is None:
            if deleted:
                raise Gone(
                    f"{resource_type}/{resource_id} has been deleted", expression=resource_type
                )
            raise NotFound(f"{resource_type}/{resource_id} is not known", expression=resource_type)
        return stored

    def vread(
        self, principal: Principal, resource_type: str, resource_id: str, version: str
    ) -> StoredResource:
        require(principal, resource_type, "r")
        if not version.isdigit():
            raise InvalidInput("a version id is a positive integer", expression="versionId")
        with self.db.transaction() as conn:
            try:
                return self.vread_in(conn, principal, resource_type, resource_id, int(version))
            except ReadRefused as error:
                refused = error
        self.record_refusal(refused)
        raise refused

    def vread_in(
        self,
        conn: Connection,
        principal: Principal,
        resource_type: str,
        resource_id: str,
        version: int,
    ) -> StoredResource:
        require(principal, resource_type, "r")
        repo = ResourceRepository(conn)
        row = repo.vread(resource_type, resource_id, version)
        content = row.content if row is not None and not row.deleted else None
        access, refused = Access(principal), None
        if content is not None:
            access, refused = self._admit_past(conn, principal, resource_type, resource_id, content)
        event = self._event(
            access.principal,
            Action.READ,
            "vread",
            resource_type,
            resource_id,
            content,
            outcome=Outcome.SUCCESS
            if content is not None and refused is None
            else Outcome.MINOR_FAILURE,
            detail=access.detail,
        )
        if refused is not None:
            raise ReadRefused(refused, event)  # recorded by the caller once ``conn`` has ended
        self.audit.append(conn, [event])
        if row is None:
            raise NotFound(
                f"{resource_type}/{resource_id} has no version {version}", expression="versionId"
            )
        if row.deleted:
            raise Gone(f"version {version} is a deletion", expression="versionId")
        return StoredResource(resource_type, resource_id, row.version, row.last_updated, content)

    # --- update / patch -----------------------------------------------------------------------

    def update(
        self,
        principal: Principal,
        resource_type: str,
        resource_id: str | None,
        body: Any,
        *,
        if_match: str | None = None,
        condition: str | None = None,
        base_url: str = "",
    ) -> Created:
        """PUT: a new version, or a create with the client's id (``created`` says which)."""
        require(principal, resource_type, "u")
        resource = validate_resource(body, resource_type)
        try:
            with self.db.transaction() as conn:
                return self.update_in(
                    conn,
                    principal,
                    resource_type,
                    resource_id,
                    resource,
                    if_match=if_match,
                    condition=condition,
                    base_url=base_url,
                )
        except WriteRefused as refused:
            self.record_refusal(refused)
            raise

    def update_in(
        self,
        conn: Connection,
        principal: Principal,
        resource_type: str,
        resource_id: str | None,
        resource: dict[str, Any],
        *,
        if_match: str | None = None,
        condition: str | None = None,
        base_url: str = "",
        method: str = "PUT",
        gated: bool = True,
    ) -> Created:
        """A new version of an existing resource, or a create with this id. ``gated``: the
        record gate decides whether the caller may change an existing resource (internal work
        - HL7 mapping, bulk import - passes False)."""
        require(principal, resource_type, "u")
        body_id = resource.get("id")
        if condition is not None:
            found = self._conditional_match(
                conn,
                principal,
                resource_type,
                condition,
                base_url,
                what="the conditional update",
                expression="url",
            )
            if found is not None:
                if body_id is not None and body_id != found.id:
                    raise InvalidInput(
                        "the body's id differs from the matched resource's", expression="id"
                    )
                resource_id = found.id
            else:
                resource_id = body_id if isinstance(body_id, str) else str(uuid.uuid4())
            resource = {**resource, "id": resource_id}
            body_id = resource_id
        assert resource_id is not None
        check_id(resource_id, resource_type)
        if body_id != resource_id:
            raise InvalidInput(
                "the resource's id must equal the id in the URL", expression=f"{resource_type}.id"
            )
        expected = parse_if_match(if_match)
        repo = ResourceRepository(conn)
        current = repo.current(resource_type, resource_id, lock=True)
        if current is None:
            if expected is not None:
                raise PreconditionFailed(
                    f"{resource_type}/{resource_id} does not exist", expression="If-Match"
                )
            return self.create_in(conn, principal, resource_type, resource, resource_id=resource_id)
        if gated:  # before If-Match, which would tell the version
            subtype = "patch" if method == "PATCH" else "update"
            key = (resource_type, resource_id)
            self.check_write(
                conn, principal, key, current.institution_code, current.content, subtype
            )
        if expected is not None and expected != current.version:
            raise PreconditionFailed(
                f"version {expected} is not the current version", expression="If-Match"
            )
        stored = repo.replace(current, resource, self.clock(), method)
        registration = None
        if resource_type == "Patient":
            registration = self._register(
                conn, principal, resource, resource_id, current.institution_code
            )
        self.audit.append(
            conn,
            [
                self._event(
                    principal,
                    Action.UPDATE,
                    "patch" if method == "PATCH" else "update",
                    resource_type,
                    resource_id,
                    resource,
                )
            ],
        )
        notice = self._notify(conn, principal, stored, bool(current.deleted))
        return Created(stored, registration, created=bool(current.deleted), notice=notice)

    def patch(
        self,
        principal: Principal,
        resource_type: str,
        resource_id: str,
        operations: Any,
        *,
        if_match: str | None = None,
    ) -> StoredResource:
        require(principal, resource_type, "u")
        try:
            with self.db.transaction() as conn:
                return self.patch_in(
                    conn, principal, resource_type, resource_id, operations, if_match=if_match
                )
        except WriteRefused as refused:
            self.record_refusal(refused)
            raise

    def patch_in(
        self,
        conn: Connection,
        principal: Principal,
        resource_type: str,
        resource_id: str,
        operations: Any,
        *,
        if_match: str | None = None,
    ) -> StoredResource:
        require(principal, resource_type, "u")
        stored, deleted = ResourceRepository(conn).read(resource_type, resource_id)
        if stored is None:
            if deleted:
                raise Gone(f"{resource_type}/{resource_id} has been deleted")
            raise NotFound(f"{resource_type}/{resource_id} is not known")
        # Gated before the patch is applied: its `test` operations would probe the content.
        key = (resource_type, resource_id)
        self.check_write(conn, principal, key, stored.institution_code, stored.content, "patch")
        current = {"resourceType": resource_type, "id": resource_id, **stored.content}
        patched = apply_patch(current, operations)
        resource = validate_resource(patched, resource_type)
        if resource.get("id") != resource_id:
            raise InvalidInput("a patch cannot change the id", expression=f"{resource_type}.id")
        return self.update_in(
            conn,
            principal,
            resource_type,
            resource_id,
            resource,
            if_match=if_match,
            method="PATCH",
            gated=False,  # decided above
        ).stored

    # --- delete -------------------------------------------------------------------------------

    def delete(
        self,
        principal: Principal,
        resource_type: str,
        resource_id: str | None,
        *,
        condition: str | None = None,
        base_url: str = "",
    ) -> bool:
        require(principal, resource_type, "d")
        try:
            with self.db.transaction() as conn:
                return self.delete_in(
                    conn,
                    principal,
                    resource_type,
                    resource_id,
                    condition=condition,
                    base_url=base_url,
                )
        except WriteRefused as refused:
            self.record_refusal(refused)
            raise

    def delete_in(
        self,
        conn: Connection,
        principal: Principal,
        resource_type: str,
        resource_id: str | None,
        *,
        condition: str | None = None,
        base_url: str = "",
    ) -> bool:
        """A deletion version; True when something was deleted (idempotent otherwise)."""
        require(principal, resource_type, "d")
        if resource_type == "Patient":
            raise NotSupported(
                "a Patient is a registry source record and cannot be deleted; "
                "update it with active=false",
                expression="Patient",
            )
        if condition is not None:
            found = self._conditional_match(
                conn,
                principal,
                resource_type,
                condition,
                base_url,
                what="the conditional delete",
                expression="url",
            )
            if found is None:
                return False
            resource_id = found.id
        assert resource_id is not None
        repo = ResourceRepository(conn)
        current = repo.current(resource_type, resource_id, lock=True)
        if current is None or current.deleted:
            return False
        key = (resource_type, resource_id)
        self.check_write(conn, principal, key, current.institution_code, current.content, "delete")
        repo.replace(current, None, self.clock(), "DELETE")
        self.audit.append(
            conn,
            [
                self._event(
                    principal, Action.DELETE, "delete", resource_type, resource_id, current.content
                )
            ],
        )
        return True

    # --- search -------------------------------------------------------------------------------

    def search(
        self,
        principal: Principal,
        resource_type: str,
        items: list[tuple[str, str]],
        *,
        strict: bool = False,
        base_url: str = "",
        query: str = "",
    ) -> SearchResult:
        require(principal, resource_type, "s")
        request = parse_search(resource_type, items, strict=strict)
        access, refused = Access(principal), None
        # Break-the-glass writes an access exception, so that search runs in a writable
        # transaction. On PostgreSQL the audit entries are committed with the search's
        # transaction, by group commit with concurrent reads and searches (decision 0042);
        # SQLite searches in a read transaction beside writers and writes the audit entries
        # after, by group commit too (one transaction would take the write lock per search).
        glass = self.gate is not None and principal.break_glass_reason is not None
        together = self.db.dialect == "postgresql"
        # The first page of a sorted search saves its result list for the pages after it. On
        # SQLite a read transaction that writes later fails at once (no busy wait) when another
        # connection committed meanwhile, so that search takes the write lock from its start.
        saves = bool(request.sort) and request.snapshot is None
        with (
            self.audit.shared() as share,
            self.db.transaction(readonly=not (glass or together or saves)) as conn,
        ):
            if self.gate is not None:
                try:
                    access = self.gate.search(conn, principal, request, base_url)
                except Forbidden as error:
                    refused = error
            if refused is None:
                result = self.search_in(conn, principal, request, items, base_url, access=access)
                if together:
                    share.join(
                        conn, self._search_audit(access.principal, result, query, access.detail)
                    )
        if refused is not None:
            self.audit.record([self._refused_search(principal, request, refused)])
            raise refused
        if not together:
            self.audit.record_shared(
                self._search_audit(access.principal, result, query, access.detail)
            )
        return result

    def _refused_search(
        self, principal: Principal, request: SearchRequest, error: Exception
    ) -> AuditRecord:
        return self.audit.event(
            principal,
            action=Action.EXECUTE,
            event_type="query",
            subtype="search-type",
            outcome=Outcome.MINOR_FAILURE,
            resource_type=request.resource_type,
            detail=f"refused: {type(error).__name__}",
        )

    def search_in(
        self,
        conn: Connection,
        principal: Principal,
        request: SearchRequest,
        items: list[tuple[str, str]],
        base_url: str,
        *,
        access: Access | None = None,
    ) -> SearchResult:
        require(principal, request.resource_type, "s")
        self._check_chain_scopes(principal, request)
        if access is None:  # a search entry of a Bundle
            access = Access(principal)
            if self.gate is not None:
                try:
                    access = self.gate.search(conn, principal, request, base_url)
                except Forbidden as error:
                    # Recorded by the Bundle once its transaction has ended (it may roll back).
                    raise SearchRefused(
                        error, self._refused_search(principal, request, error)
                    ) from None
        repo = ResourceRepository(conn)
        kept = [(k, v) for k, v in items if k not in ("_cursor", "_snapshot", "_offset")]
        shaped: list[StoredResource] | None = None
        if self.search_shapes and request.summary != "count" and request.count != 0:
            # The default order's page by its search shape's statement (decision 0054), when
            # the request has one here; the condition is then built only to count.
            shaped = repo.find_shaped(request, base_url, access.visible, request.count + 1)
        made: list[ColumnElement[bool]] = []

        def condition() -> ColumnElement[bool]:
            if not made:
                made.append(repo.search_condition(request, base_url, access.visible))
            return made[0]

        if request.summary == "count" or request.count == 0:
            return SearchResult(
                request, [], [], repo.count(condition()), None, request.unknown, access.notice
            )
        next_params: list[tuple[str, str]] | None = None
        total: int | None = None
        if request.snapshot is not None:
            keys, total = repo.snapshot_page(request.snapshot, request.offset, request.count + 1)
        elif request.sort:  # (the default order is found and loaded below)
            all_keys = repo.find(request, condition(), SNAPSHOT_LIMIT + 1)
            total = len(all_keys) if len(all_keys) <= SNAPSHOT_LIMIT else None
            keys = all_keys[: request.count + 1]
            if len(all_keys) > request.count:
                search_id = repo.save_snapshot(
                    all_keys[:SNAPSHOT_LIMIT], total or repo.count(condition()), self.clock()
                )
                request.snapshot = search_id
        if request.snapshot is None and not request.sort:
            # The default order: the page and its resources in one statement.
            loaded = shaped
            if loaded is None:
                loaded = repo.find_loaded(request, condition(), request.count + 1)
            more = len(loaded) > request.count
            matches = loaded[: request.count]
        else:
            more = len(keys) > request.count
            matches = repo.load(keys[: request.count])
        if more:
            if request.snapshot is not None:
                next_params = [
                    *kept,
                    ("_snapshot", request.snapshot),
                    ("_offset", str(request.offset + request.count)),
                ]
            else:  # the page's last match says where the next one starts
                last = matches[-1]
                moment = last.last_updated
                moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
                next_params = [*kept, ("_cursor", f"{moment.isoformat()}|{last.id}")]
        if total is None and request.total != "none":
            if not more and request.cursor is None and request.snapshot is None:
                total = len(matches)
            elif request.total in ("accurate", "estimate"):
                # Counting every match costs as much as the search grows; FHIR leaves
                # Bundle.total out unless asked (_total), so it is counted only then.
                total = repo.count(condition())
        included = self._includes(repo, principal, request, matches, access)
        return SearchResult(
            request, matches, included, total, next_params, request.unknown, access.notice
        )

    def _check_chain_scopes(self, principal: Principal, request: SearchRequest) -> None:
        from healthroam.records.search import Chain, Has

        def walk(clause: Any) -> None:
            if isinstance(clause, Chain):
                for target, inner in clause.targets:
                    require(principal, target, "s")
                    walk(inner)
            elif isinstance(clause, Has):
                require(principal, clause.source_type, "s")
                walk(clause.clause)

        for clause in request.clauses:
            walk(clause)

    def _includes(
        self,
        repo: ResourceRepository,
        principal: Principal,
        request: SearchRequest,
        matches: list[StoredResource],
        access: Access,
    ) -> list[StoredResource]:
        if not (request.includes or request.revincludes) or not matches:
            return []
        seen: set[Key] = {(m.resource_type, m.id) for m in matches}
        out: list[StoredResource] = []
        frontier: list[Key] = list(seen)
        for round_ in range(INCLUDE_ROUNDS):
            incs: list[Include] = [i for i in request.includes if round_ == 0 or i.iterate]
            revs: list[Include] = [i for i in request.revincludes if round_ == 0 or i.iterate]
            if not incs and not revs:
                break
            found = repo.included(frontier, incs) + repo.revincluded(frontier, revs)
            new = [
                k
                for k in dict.fromkeys(found)
                if k not in seen and principal.scopes.allows(k[0], "r")
            ]
            if new and access.visible is not None:
                new = repo.visible_keys(new, access.visible)  # never include a hidden one
            if not new:
                break
            seen.update(new)
            loaded = repo.load(new)
            out.extend(loaded)
            frontier = [(s.resource_type, s.id) for s in loaded]
        return out

    def _search_audit(
        self, principal: Principal, result: SearchResult, query: str, detail: str | None = None
    ) -> list[AuditRecord]:
        """One audit entry per patient whose data the search returned (one if none)."""
        patients: dict[str | None, None] = {}
        for stored in [*result.matches, *result.included]:
            patients[stored.patient] = None
        refs: list[str | None] = [p for p in patients if p is not None] or [None]
        first = self.audit.event(
            principal,
            action=Action.EXECUTE,
            event_type="query",
            subtype="search-type",
            resource_type=result.request.resource_type,
            patient_ref=refs[0],
            query=query,
            detail=detail,
        )
        # The entries differ only in the patient: one built, the others copied from it.
        return [first, *(replace(first, patient_ref=ref) for ref in refs[1:])]

    # --- history ------------------------------------------------------------------------------

    def history(
        self,
        principal: Principal,
        resource_type: str | None,
        resource_id: str | None,
        *,
        since: datetime | None,
        at: datetime | None,
        before: tuple[datetime, str, str, int] | None,
        count: int,
    ) -> list[Any]:
        """Versions newest first (``count + 1`` read so the caller knows whether more exist)."""
        if resource_type is None:
            require(principal, "*", "s")
        elif resource_id is None:
            require(principal, resource_type, "s")
        else:
            require(principal, resource_type, "r")
        refused: Forbidden | None = None
        with self.db.transaction() as conn:
            repo = ResourceRepository(conn)
            access = Access(principal)
            if self.gate is not None and resource_id is None:
                access = self.gate.history(conn, principal)
            rows = repo.history(
                resource_type,
                resource_id,
                since=since,
                at=at,
                before=before,
                count=count + 1,
                visible=access.visible,
            )
            if resource_type is not None and resource_id is not None and rows:
                content = next((r.content for r in rows if r.content), None)
                access, refused = self._admit_past(
                    conn, principal, resource_type, resource_id, content
                )
            patients = dict.fromkeys(
                patient_reference(r.resource_type, r.id, r.content) if r.content else None
                for r in rows[:count]
            )
            refs: list[str | None] = [p for p in patients if p is not None] or [None]
            self.audit.append(
                conn,
                [
                    self.audit.event(
                        access.principal,
                        action=Action.READ,
                        subtype="history-instance"
                        if resource_id
                        else ("history-type" if resource_type else "history-system"),
                        outcome=Outcome.MINOR_FAILURE if refused else Outcome.SUCCESS,
                        resource_type=resource_type,
                        resource_id=resource_id,
                        patient_ref=ref,
                        detail=access.detail,
                    )
                    for ref in refs
                ],
            )
        if refused is not None:
            raise refused
        if resource_id is not None and not rows and before is None and since is None and at is None:
            raise NotFound(f"{resource_type}/{resource_id} is not known")
        return rows

    def load_in(self, conn: Connection, keys: list[Key]) -> list[StoredResource]:
        return ResourceRepository(conn).load(keys)


__all__ = [
    "Conflict",
    "Created",
    "Notice",
    "RecordService",
    "SearchResult",
    "WriteListener",
    "WriteRefused",
    "require",
]
