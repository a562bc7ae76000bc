"""HL7 v2 message handlers: route on MSH-9 and write FHIR resources through RecordService.

Every write goes through :class:`RecordService` (a PUT with a deterministic id: validated
here first, then stored, indexed, audited and - for a Patient - registered in the master
patient index) inside the transport's transaction. Nothing here commits. Lookups of the
resources a message refers to (a Patient by MRN, an Encounter by visit number, a ServiceRequest
by order number) read the store by primary key, several in one query, and are audited as one
read entry per message and patient when they found stored data (written in the same insert as
the message's write entries where possible). A message's new Observations and
DiagnosticReport are created together (one insert per table). See docs/hl7-mapping.md,
docs/decisions/0013-hl7-mapping.md and 0022-hl7-statements.md.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from healthroam.errors import HealthroamError, InvalidInput, Unprocessable
from healthroam.exchange.hl7.contract import (
    AckCode,
    ErrorCode,
    Handled,
    Hl7Problem,
    Location,
    MessageContext,
    MessageHandler,
    Note,
    without_savepoints,
)
from healthroam.exchange.hl7.mapping_encounter import (
    encounter_from_pv1,
    visit_number,
    visit_system,
)
from healthroam.exchange.hl7.mapping_orders import (
    CREATES,
    filler_system,
    order_control,
    order_identifiers,
    order_numbers,
    placer_system,
    service_request,
)
from healthroam.exchange.hl7.mapping_patient import (
    Mapped,
    find_mrn,
    merge_patient,
    mrn_system,
    patient_from_pid,
)
from healthroam.exchange.hl7.mapping_results import observation_from_obx, report_from_obr
from healthroam.exchange.hl7.repository import CurrentRow, LookupRepository
from healthroam.exchange.hl7.segments import Message, Segment, fhir_datetime, missing
from healthroam.records.model import stored_body
from healthroam.records.service import Created, RecordService, require
from healthroam.records.validation import validate_resource
from healthroam.registry.fhir import FHIR_PATIENT_SYSTEM
from healthroam.registry.model import SourceKey
from healthroam.registry.service import RegistryService
from healthroam.security.audit import Action, AuditRecord

if TYPE_CHECKING:
    from healthroam.exchange.recognition.service import RecognitionService

# Resource ids are UUIDv5 of (type, institution, business key) in this namespace: the same
# MRN / visit number / order number always gives the same resource, on every node.
ID_NAMESPACE = uuid.UUID("5b0e3f0c-6a43-4c39-9d0c-48a1c2f7e013")
OrderAlerts = Callable[[Connection, MessageContext, dict[str, Any]], list[Note]]
ADT_EVENTS = frozenset({"A01", "A03", "A04", "A08", "A11", "A13", "A28", "A31", "A40"})
EVENTS = {
    "ADT": ADT_EVENTS,
    "ORU": frozenset({"R01"}),
    "ORM": frozenset({"O01"}),
    "OML": frozenset({"O21"}),
}
_UNSAFE_SEARCH = frozenset(",|$\\")
MAX_LINK_HOPS = 5


_NAMESPACE_BYTES = ID_NAMESPACE.bytes


@lru_cache(maxsize=16_384)
def _uuid5_text(name: str) -> str:
    """``str(uuid.uuid5(ID_NAMESPACE, name))`` without the UUID object, computed once per name
    while it stays among the process's most recent ones: a message's ids are asked for several
    times (its keys' look-up, then each mapping step), and a visit's later messages (orders,
    results, the discharge) ask for the same Patient and Encounter ids again (decision 0060)."""
    digest = bytearray(
        hashlib.sha1(_NAMESPACE_BYTES + name.encode(), usedforsecurity=False).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def resource_id(resource_type: str, institution: str, *key: str) -> str:
    return _uuid5_text("|".join((resource_type, institution, *key)))


def patient_id_for(institution: str, mrn: str) -> str:
    """The id a Patient first registered over HL7 v2 gets: UUIDv5 of institution and MRN."""
    return resource_id("Patient", institution, mrn_system(institution), mrn)


def _route(message: Message, context: MessageContext) -> tuple[str, str]:
    msh = message.msh
    kind = (msh.value(9, 1) or context.message_type or "").upper()
    event = (msh.value(9, 2) or context.trigger_event or "").upper()
    structure = (msh.value(9, 3) or "").upper()
    if structure and "_" in structure and (not kind or not event):
        kind, _, event = structure.partition("_")
    if kind not in EVENTS:
        raise Hl7Problem(
            "this message type is not supported (ADT, ORU, ORM, OML are)",
            location=Location("MSH", 1, 9, 1),
            error_code=ErrorCode.UNSUPPORTED_MESSAGE_TYPE,
            ack=AckCode.REJECT,
        )
    if event not in EVENTS[kind] or (structure and not structure.startswith(kind + "_")):
        raise Hl7Problem(
            f"event {event or '(none)'} of {kind} is not supported",
            location=Location("MSH", 1, 9, 2),
            error_code=ErrorCode.UNSUPPORTED_EVENT,
            ack=AckCode.REJECT,
        )
    return kind, event


@dataclass(slots=True)
class _Work:
    """One message being handled."""

    conn: Connection
    context: MessageContext
    message: Message
    audit: list[AuditRecord]  # the entries written at the message's end (AuditTrail.collecting)
    handled: Handled = field(default_factory=Handled)
    # current rows by (type, id) as far as read in this message (None: no such row)
    rows: dict[tuple[str, str], CurrentRow | None] = field(default_factory=dict)
    # by_identifier look-ups read with the message's keys, by (type, system, value); dropped
    # for a type once the message writes a resource of that type
    identified: dict[tuple[str, str, str], list[tuple[str, CurrentRow]]] = field(
        default_factory=dict
    )
    patients: list[str] = field(default_factory=list)  # the Patients the message concerns
    read: bool = False  # a look-up found stored data: audit a read of those patients
    audited: set[str] = field(default_factory=set)

    @property
    def institution(self) -> str:
        return self.context.sender.institution_code


class Dispatcher:
    """The :class:`MessageHandler` for every supported message type."""

    def __init__(
        self,
        records: RecordService,
        registry: RegistryService,
        *,
        order_alerts: OrderAlerts | None = None,
        default_offset: str = "+08:00",
    ) -> None:
        self.records, self.registry = records, registry
        self.order_alerts = order_alerts
        self.offset = default_offset

    def __call__(self, conn: Any, context: MessageContext, message: Any) -> Handled:
        parsed = Message(message)
        kind, event = _route(parsed, context)
        # The message's audit entries (registration, writes, look-ups) in one insert at its end.
        with self.records.audit.collecting(conn) as audit:
            work = _Work(conn, context, parsed, audit)
            keys, identifiers = self._message_keys(work)
            work.rows, work.identified = self._lookups(work.conn, keys, identifiers)
            if kind == "ADT":
                if event in ("A28", "A31"):
                    self._person(work)
                elif event == "A40":
                    self._merge(work)
                else:
                    self._visit(work, event)
            elif kind == "ORU":
                self._results(work)
            else:
                self._orders(work)
            audit.extend(self._read_events(work))
        return work.handled

    # --- look-ups -----------------------------------------------------------------------------

    def _message_keys(self, work: _Work) -> tuple[set[tuple[str, str]], set[tuple[str, str, str]]]:
        """The deterministic ids of the Patients, visits and orders a message names, and
        the (type, system, value) of the identifiers they carry (a resource a FHIR client
        created), to read in one query (a segment that cannot be read here fails later,
        where it is mapped)."""
        institution = work.institution
        keys: set[tuple[str, str]] = set()
        identifiers: set[tuple[str, str, str]] = set()

        def add(rtype: str, system: str, value: str) -> None:
            keys.add((rtype, resource_id(rtype, institution, system, value)))
            if not (_UNSAFE_SEARCH & set(value) or _UNSAFE_SEARCH & set(system)):
                identifiers.add((rtype, system, value))

        for seg in work.message.segments:
            try:
                if seg.id in ("PID", "MRG"):
                    mrn = find_mrn(seg.reps(3 if seg.id == "PID" else 1))
                    if mrn:
                        add("Patient", mrn_system(institution), mrn)
                elif seg.id == "PV1":
                    number = visit_number(seg)
                    if number:
                        add("Encounter", visit_system(institution), number)
                elif seg.id in ("ORC", "OBR"):
                    numbers = (
                        order_numbers(seg, None) if seg.id == "ORC" else order_numbers(None, seg)
                    )
                    for system, entity in zip(
                        (placer_system(institution), filler_system(institution)),
                        numbers,
                        strict=True,
                    ):
                        if entity is not None:
                            add("ServiceRequest", system, entity.id)
            except (HealthroamError, IndexError, ValueError):
                continue
        return keys, identifiers

    @staticmethod
    def _lookups(
        conn: Connection, keys: set[tuple[str, str]], identifiers: set[tuple[str, str, str]]
    ) -> tuple[
        dict[tuple[str, str], CurrentRow | None],
        dict[tuple[str, str, str], list[tuple[str, CurrentRow]]],
    ]:
        """The rows of ``keys`` (None: absent) and the identifier look-ups, in one query."""
        if not keys:
            return {}, {}
        found, identified = LookupRepository(conn).current_and_identified(keys, identifiers)
        return {key: found.get(key) for key in keys}, identified

    @staticmethod
    def _written(work: _Work, rtype: str, rid: str) -> None:
        """Forget what the message read of ``rtype`` that a write of (rtype, rid) may change."""
        work.rows.pop((rtype, rid), None)  # read again if needed
        if work.identified:
            work.identified = {k: v for k, v in work.identified.items() if k[0] != rtype}

    def _prefetch(self, work: _Work, keys: set[tuple[str, str]]) -> None:
        unknown = {key for key in keys if key not in work.rows}
        if unknown:
            found = LookupRepository(work.conn).current_many(unknown)
            for key in unknown:
                work.rows[key] = found.get(key)

    def _row(self, work: _Work, rtype: str, rid: str) -> CurrentRow | None:
        if (rtype, rid) not in work.rows:
            self._prefetch(work, {(rtype, rid)})
        return work.rows[(rtype, rid)]

    def _read_events(self, work: _Work) -> list[AuditRecord]:
        """One read entry per patient of the message not yet audited, when a look-up found
        stored data (the data of a Patient, or of a visit or order: that patient's)."""
        if not work.read:
            return []
        context = work.context
        events = [
            self.records.audit.event(
                context.principal,
                action=Action.READ,
                subtype="hl7-lookup",
                resource_type="Patient",
                resource_id=patient,
                patient_ref=f"Patient/{patient}",
                detail=f"HL7 v2 {context.message_type}^{context.trigger_event} "
                f"{context.control_id}"[:200],
            )
            for patient in dict.fromkeys(work.patients)
            if patient not in work.audited
        ]
        work.audited.update(work.patients)
        return events

    # --- storage ------------------------------------------------------------------------------

    def _write(
        self,
        work: _Work,
        mapped: Mapped,
        rid: str,
        default: Location,
        stored: dict[str, Any] | None = None,
    ) -> tuple[str, str | None]:
        """Validate and PUT (create or new version); FHIR errors come back as Hl7Problem
        naming the HL7 field that produced the element. Returns (id, master index id).
        When ``stored`` (the current content) already equals the result nothing is written:
        a message that changes nothing adds no version."""
        resource = {**mapped.resource, "id": rid}
        rtype = str(resource["resourceType"])
        if stored is not None and stored_body(resource) == stored:
            return rid, None
        try:
            validate_resource(resource, rtype)
            created = self._put(work, rtype, rid, resource)
        except Hl7Problem:
            raise
        except (InvalidInput, Unprocessable) as error:
            raise _problem(mapped, error, default) from None
        work.handled.written.append((rtype, rid))
        mii = created.registration.master_index_id if created.registration else None
        return rid, mii

    def _put(self, work: _Work, rtype: str, rid: str, resource: dict[str, Any]) -> Created:
        """A PUT (update_in). When the row is known to be absent it is created directly (the
        same scopes are required), in a savepoint: when a concurrent message created the same
        resource first (same deterministic id: a primary key conflict once that one commits)
        this one becomes its next version instead of failing."""
        principal = work.context.principal
        exists = self._row(work, rtype, rid) is not None
        self._written(work, rtype, rid)
        if exists:
            return self.records.update_in(work.conn, principal, rtype, rid, resource, gated=False)
        require(principal, rtype, "u")
        if without_savepoints(work.conn):
            # No savepoint (two statements): a lost race fails this message, and the gateway
            # applies the group again with savepoints, where the branch below applies.
            return self.records.create_in(work.conn, principal, rtype, resource, resource_id=rid)
        entries = len(work.audit)
        try:
            with work.conn.begin_nested():
                return self.records.create_in(
                    work.conn, principal, rtype, resource, resource_id=rid
                )
        except IntegrityError:
            del work.audit[entries:]  # rolled back with the savepoint
            return self.records.update_in(work.conn, principal, rtype, rid, resource, gated=False)

    def _write_new(self, work: _Work, items: list[tuple[Mapped, str, Location]]) -> None:
        """Write several resources: those absent are validated and created together (one
        insert per table, with the message's pending read entries in the same audit insert);
        those stored get a new version each, one by one. Written in ``items`` order."""
        fresh: list[tuple[str, str, dict[str, Any]]] = []
        for mapped, rid, default in items:
            rtype = str(mapped.resource["resourceType"])
            if self._row(work, rtype, rid) is None:
                resource = {**mapped.resource, "id": rid}
                try:
                    validate_resource(resource, rtype)
                except (InvalidInput, Unprocessable) as error:
                    raise _problem(mapped, error, default) from None
                fresh.append((rtype, rid, resource))
        if fresh:
            events = self._read_events(work)
            entries = len(work.audit)
            # Without the gateway's savepoints none here either (see _put).
            scope: AbstractContextManager[Any] = (
                nullcontext() if without_savepoints(work.conn) else work.conn.begin_nested()
            )
            try:
                with scope:
                    self.records.create_many_in(
                        work.conn, work.context.principal, fresh, audit=events
                    )
            except IntegrityError:  # a concurrent message wrote one first: one by one
                if without_savepoints(work.conn):
                    raise
                del work.audit[entries:]  # rolled back with the savepoint
                work.audited.difference_update(e.resource_id for e in events if e.resource_id)
                fresh = []
            except (InvalidInput, Unprocessable) as error:
                raise _problem(items[0][0], error, items[0][2]) from None
        created = {(rtype, rid) for rtype, rid, _ in fresh}
        for mapped, rid, default in items:
            rtype = str(mapped.resource["resourceType"])
            if (rtype, rid) in created:
                self._written(work, rtype, rid)
                work.handled.written.append((rtype, rid))
            else:
                self._write(work, mapped, rid, default)  # a new version, as before

    def _current(self, work: _Work, rtype: str, rid: str) -> dict[str, Any] | None:
        """The stored content of one of this institution's resources, None when absent."""
        row = self._row(work, rtype, rid)
        if row is None or row.deleted or row.content is None:
            return None
        if row.institution_code not in (None, work.institution):
            return None
        work.read = True
        return dict(row.content)

    def _by_identifier(
        self, work: _Work, rtype: str, system: str, value: str
    ) -> tuple[str, dict[str, Any]] | None:
        """A resource of this institution carrying ``system|value`` (the first one found)."""
        if _UNSAFE_SEARCH & set(value) or _UNSAFE_SEARCH & set(system):
            return None
        found = work.identified.get((rtype, system, value))
        if found is None:
            found = LookupRepository(work.conn).by_identifier(rtype, system, value)
        for rid, row in found:
            work.rows.setdefault((rtype, rid), row)
            content = self._current(work, rtype, rid)
            if content is not None and any(
                i.get("system") == system and i.get("value") == value
                for i in content.get("identifier") or []
            ):
                return rid, content
        return None

    def _find_patient(
        self, work: _Work, mrn: str, *, follow: bool = True
    ) -> tuple[str, dict[str, Any]] | None:
        rid = patient_id_for(work.institution, mrn)
        content = self._current(work, "Patient", rid)
        found = (rid, content) if content is not None else None
        if found is None:
            found = self._by_identifier(work, "Patient", mrn_system(work.institution), mrn)
        hops = 0
        while follow and found is not None and hops < MAX_LINK_HOPS:
            successor = _replaced_by(found[1])
            if successor is None or found[1].get("active", True):
                break
            next_content = self._current(work, "Patient", successor)
            if next_content is None:
                break
            found, hops = (successor, next_content), hops + 1
        return found

    def _master_of(self, work: _Work, patient_id: str) -> str | None:
        """The Patient's master index id: read with its row when that is still current in this
        message (not written since), otherwise looked up."""
        row = work.rows.get(("Patient", patient_id))
        if row is not None and row.master_known:
            return row.master_index_id
        return LookupRepository(work.conn).master_index_id(patient_id)

    # --- patients -----------------------------------------------------------------------------

    def _save_patient(self, work: _Work, pid: Segment, *, update: bool = True) -> str:
        """Create or update the PID's Patient; with ``update`` False an existing Patient is
        only looked up (results and orders do not rewrite demographics)."""
        mapped = patient_from_pid(pid, work.institution, self.offset)
        mrn = find_mrn(pid.reps(3)) or ""
        found = self._find_patient(work, mrn, follow=not update)
        if found is not None:
            work.patients.append(found[0])
        if found is not None and not update:
            work.handled.master_index_id = self._master_of(work, found[0])
            return found[0]
        rid = found[0] if found else patient_id_for(work.institution, mrn)
        if found is not None:
            mapped.resource = merge_patient(found[1], mapped.resource)
        _, mii = self._write(work, mapped, rid, pid.at(3), stored=found[1] if found else None)
        work.patients.append(rid)
        work.handled.master_index_id = mii or self._master_of(work, rid)
        return rid

    def _person(self, work: _Work) -> None:
        self._save_patient(work, work.message.require("PID"))

    # --- visits -------------------------------------------------------------------------------

    def _event_time(self, work: _Work) -> str | None:
        evn = work.message.first("EVN")
        for seg, field_no in ((evn, 6), (evn, 2), (work.message.msh, 7)):
            if seg is not None and seg.value(field_no):
                return fhir_datetime(seg.required(field_no), seg.at(field_no), self.offset)
        return None

    def _encounter_id(self, work: _Work, pv1: Segment | None) -> str | None:
        """An existing Encounter of the PV1's visit number (results and orders link to it)."""
        number = visit_number(pv1) if pv1 is not None else None
        if number is None:
            return None
        rid = resource_id("Encounter", work.institution, visit_system(work.institution), number)
        if self._current(work, "Encounter", rid) is not None:
            return rid
        found = self._by_identifier(work, "Encounter", visit_system(work.institution), number)
        return found[0] if found else None

    def _visit(self, work: _Work, event: str) -> None:
        pid = work.message.require("PID")
        patient_id = self._save_patient(work, pid)
        pv1 = work.message.first("PV1")
        if pv1 is None or (event == "A08" and visit_number(pv1) is None):
            if event == "A08":
                return
            pv1 = work.message.require("PV1")
        number = visit_number(pv1)
        if number is None:
            raise missing(pv1.at(19), "visit number")
        system = visit_system(work.institution)
        rid = resource_id("Encounter", work.institution, system, number)
        stored = self._current(work, "Encounter", rid)
        if stored is None:
            found = self._by_identifier(work, "Encounter", system, number)
            if found is not None:
                rid, stored = found
        if stored is None and event in ("A11", "A13"):
            raise Hl7Problem(
                f"PV1-19: no visit with this number to {'cancel' if event == 'A11' else 'reopen'}",
                location=pv1.at(19),
                error_code=ErrorCode.UNKNOWN_KEY,
            )
        mapped = encounter_from_pv1(
            pv1,
            work.message.first("PV2"),
            institution=work.institution,
            patient_id=patient_id,
            event=event,
            stored=stored,
            event_time=self._event_time(work),
            default_offset=self.offset,
        )
        if stored is not None:
            keep = {k: v for k, v in stored.items() if k not in mapped.resource and k != "meta"}
            mapped.resource = {**keep, **mapped.resource}
        if event == "A13":  # the discharge is cancelled: no end
            period = {k: v for k, v in (mapped.resource.get("period") or {}).items() if k != "end"}
            mapped.resource.pop("period", None)
            if period:
                mapped.resource["period"] = period
        self._write(work, mapped, rid, pv1.at(19), stored=stored)

    # --- merge --------------------------------------------------------------------------------

    def _merge(self, work: _Work) -> None:
        segments = work.message.segments
        pairs: list[tuple[Segment, Segment]] = []
        for index, seg in enumerate(segments):
            if seg.id == "PID":
                mrg = next((s for s in segments[index + 1 :] if s.id in ("MRG", "PID")), None)
                if mrg is None or mrg.id != "MRG":
                    raise Hl7Problem(
                        "each PID of an A40 needs its MRG segment",
                        location=Location("MRG", seg.sequence),
                        error_code=ErrorCode.SEGMENT_SEQUENCE,
                    )
                pairs.append((seg, mrg))
        if not pairs:
            work.message.require("PID")
        for pid, mrg in pairs:
            self._merge_pair(work, pid, mrg)

    def _merge_pair(self, work: _Work, pid: Segment, mrg: Segment) -> None:
        prior_mrn = find_mrn(mrg.reps(1))
        if prior_mrn is None:
            raise missing(mrg.at(1), "prior medical record number, CX.5 = MR")
        prior = self._find_patient(work, prior_mrn, follow=False)
        if prior is None:
            raise Hl7Problem(
                "MRG-1: no patient with this prior medical record number",
                location=mrg.at(1),
                error_code=ErrorCode.UNKNOWN_KEY,
            )
        survivor_id = self._save_patient(work, pid)
        prior_id, prior_content = prior
        work.patients.append(prior_id)
        if prior_id == survivor_id:
            raise Hl7Problem(
                "MRG-1 names the same patient as PID-3",
                location=mrg.at(1),
                error_code=ErrorCode.DATA_TYPE_ERROR,
            )
        # The prior record: inactive, replaced by the survivor.
        links = [
            link for link in prior_content.get("link") or [] if link.get("type") != "replaced-by"
        ]
        links.append({"other": {"reference": f"Patient/{survivor_id}"}, "type": "replaced-by"})
        updated = {**prior_content, "resourceType": "Patient", "active": False, "link": links}
        updated.pop("meta", None)
        self._write(work, Mapped(updated), prior_id, mrg.at(1), stored=prior_content)
        # The survivor: replaces the prior record.
        survivor = self._current(work, "Patient", survivor_id) or {}
        reference = f"Patient/{prior_id}"
        survivor_links = list(survivor.get("link") or [])
        if not any(
            (link.get("other") or {}).get("reference") == reference for link in survivor_links
        ):
            survivor_links.append({"other": {"reference": reference}, "type": "replaces"})
        survivor_update = {**survivor, "resourceType": "Patient", "link": survivor_links}
        survivor_update.pop("meta", None)
        self._write(work, Mapped(survivor_update), survivor_id, pid.at(3), stored=survivor)
        work.handled.written = list(dict.fromkeys(work.handled.written))
        work.handled.master_index_id = self.registry.merge_sources_in(
            work.conn,
            work.context.principal,
            SourceKey(work.institution, FHIR_PATIENT_SYSTEM, survivor_id),
            SourceKey(work.institution, FHIR_PATIENT_SYSTEM, prior_id),
            reason=f"HL7 v2 A40 from {work.institution}",
        )

    # --- orders -------------------------------------------------------------------------------

    def _find_order(
        self, work: _Work, placer: str | None, filler: str | None
    ) -> tuple[str, dict[str, Any]] | None:
        for system, value in (
            (placer_system(work.institution), placer),
            (filler_system(work.institution), filler),
        ):
            if value is None:
                continue
            rid = resource_id("ServiceRequest", work.institution, system, value)
            content = self._current(work, "ServiceRequest", rid)
            if content is not None:
                return rid, content
            found = self._by_identifier(work, "ServiceRequest", system, value)
            if found is not None:
                return found
        return None

    def _patient_groups(self, work: _Work) -> list[tuple[Segment, list[Segment]]]:
        """Each PID with the segments up to the next PID (ORU and ORM/OML may carry the
        results or orders of several patients)."""
        groups: list[tuple[Segment, list[Segment]]] = []
        for seg in work.message.segments:
            if seg.id == "PID":
                groups.append((seg, []))
            elif groups:
                groups[-1][1].append(seg)
        if not groups:
            work.message.require("PID")
        return groups

    def _subject(self, work: _Work, pid: Segment, rest: list[Segment]) -> tuple[str, str | None]:
        """The patient (looked up, or registered when unknown) and an existing visit."""
        patient_id = self._save_patient(work, pid, update=False)
        pv1 = next((s for s in rest if s.id == "PV1"), None)
        return patient_id, self._encounter_id(work, pv1)

    def _orders(self, work: _Work) -> None:
        found = False
        for pid, rest in self._patient_groups(work):
            patient_id, encounter_id = self._subject(work, pid, rest)
            groups: list[dict[str, Segment | None]] = []
            for seg in rest:
                if seg.id == "ORC":
                    groups.append({"ORC": seg, "OBR": None, "TQ1": None})
                elif seg.id in ("OBR", "TQ1") and groups and groups[-1][seg.id] is None:
                    groups[-1][seg.id] = seg
            for group in groups:
                orc, obr, tq1 = group["ORC"], group["OBR"], group["TQ1"]
                assert orc is not None
                self._order(work, orc, obr, tq1, patient_id, encounter_id)
                found = True
        if not found:
            work.message.require("ORC")

    def _order(
        self,
        work: _Work,
        orc: Segment,
        obr: Segment | None,
        tq1: Segment | None,
        patient_id: str,
        encounter_id: str | None,
    ) -> None:
        control = order_control(orc)
        placer, filler = order_numbers(orc, obr)
        if placer is None and filler is None:
            raise missing(orc.at(2), "placer or filler order number")
        existing = self._find_order(
            work, placer.id if placer else None, filler.id if filler else None
        )
        if existing is None and control.code not in CREATES:
            raise Hl7Problem(
                "ORC-2: no order with this number to change",
                location=orc.at(2),
                error_code=ErrorCode.UNKNOWN_KEY,
            )
        if obr is None:
            if existing is None:
                raise Hl7Problem(
                    "a new order needs its OBR segment",
                    location=Location("OBR", orc.sequence),
                    error_code=ErrorCode.SEGMENT_SEQUENCE,
                )
            rid, content = existing
            mapped = Mapped({**content, "resourceType": "ServiceRequest", "status": control.status})
            mapped.resource.pop("meta", None)
            mapped.paths["ServiceRequest.status"] = orc.at(1)
        else:
            mapped, _ = service_request(
                orc,
                obr,
                tq1,
                institution=work.institution,
                patient_id=patient_id,
                encounter_id=encounter_id,
                default_offset=self.offset,
            )
            if existing is not None:
                rid, content = existing
                keep = {
                    k: v for k, v in content.items() if k not in mapped.resource and k != "meta"
                }
                sent = {i["system"] for i in mapped.resource["identifier"]}
                kept_ids = [
                    i for i in content.get("identifier") or [] if i.get("system") not in sent
                ]
                mapped.resource = {
                    **keep,
                    **mapped.resource,
                    "identifier": [*mapped.resource["identifier"], *kept_ids],
                }
            else:
                key_system = (
                    placer_system(work.institution) if placer else filler_system(work.institution)
                )
                key = placer.id if placer else filler.id  # type: ignore[union-attr]
                rid = resource_id("ServiceRequest", work.institution, key_system, key)
        self._write(work, mapped, rid, orc.at(2), stored=existing[1] if existing else None)
        if self.order_alerts is not None and mapped.resource.get("status") == "active":
            request = {**mapped.resource, "id": rid}
            work.handled.notes.extend(self.order_alerts(work.conn, work.context, request))

    # --- results ------------------------------------------------------------------------------

    def _results(self, work: _Work) -> None:
        found = False
        for pid, rest in self._patient_groups(work):
            patient_id, encounter_id = self._subject(work, pid, rest)
            groups: list[tuple[Segment | None, Segment, list[tuple[Segment, list[str]]]]] = []
            orc: Segment | None = None
            for seg in rest:
                if seg.id == "ORC":
                    orc = seg
                elif seg.id == "OBR":
                    groups.append((orc, seg, []))
                    orc = None
                elif seg.id == "OBX":
                    if not groups:
                        raise Hl7Problem(
                            "an OBX must follow its OBR",
                            location=Location("OBX", seg.sequence),
                            error_code=ErrorCode.SEGMENT_SEQUENCE,
                        )
                    groups[-1][2].append((seg, []))
                elif seg.id == "NTE" and groups and groups[-1][2]:
                    lines = [seg.value(3, 1, rep=i) or "" for i in range(len(seg.reps(3)))]
                    text = "\n".join(lines).strip()
                    if text:
                        groups[-1][2][-1][1].append(text)
            for order, obr, observations in groups:
                self._report(work, order, obr, observations, patient_id, encounter_id)
                found = True
        if not found:
            work.message.require("OBR")

    def _report(
        self,
        work: _Work,
        orc: Segment | None,
        obr: Segment,
        observations: list[tuple[Segment, list[str]]],
        patient_id: str,
        encounter_id: str | None,
    ) -> None:
        placer, filler = order_numbers(orc, obr)
        if placer is None and filler is None:
            raise missing(obr.at(3), "filler or placer order number")
        report_key = f"F{filler.id}" if filler else f"P{placer.id}"  # type: ignore[union-attr]
        order = self._find_order(work, placer.id if placer else None, filler.id if filler else None)
        based_on = order[0] if order else None
        written: list[str] = []
        statuses: list[str] = []
        seen: dict[str, int] = {}
        items: list[tuple[Mapped, str, Location]] = []
        for obx, notes in observations:
            mapped = observation_from_obx(
                obx,
                obr,
                notes,
                institution=work.institution,
                patient_id=patient_id,
                encounter_id=encounter_id,
                default_offset=self.offset,
            )
            if based_on:
                mapped.resource["basedOn"] = [{"reference": f"ServiceRequest/{based_on}"}]
            code = obx.value(3) or ""
            key = f"{code}|{obx.value(4) or ''}"
            seen[key] = seen.get(key, 0) + 1
            rid = resource_id("Observation", work.institution, report_key, key, str(seen[key]))
            items.append((mapped, rid, obx.at(5)))
            written.append(rid)
            statuses.append(str(mapped.resource["status"]))
        mapped_report = report_from_obr(
            obr,
            statuses,
            institution=work.institution,
            patient_id=patient_id,
            encounter_id=encounter_id,
            identifiers=order_identifiers(placer, filler, work.institution),
            based_on=based_on,
            results=written,
            default_offset=self.offset,
        )
        rid = resource_id("DiagnosticReport", work.institution, report_key)
        items.append((mapped_report, rid, obr.at(4)))
        self._prefetch(
            work, {(str(m.resource["resourceType"]), item_id) for m, item_id, _ in items}
        )
        self._write_new(work, items)


def _problem(mapped: Mapped, error: InvalidInput | Unprocessable, default: Location) -> Hl7Problem:
    """A FHIR validation error as the HL7 field that produced the element."""
    location = mapped.location_of(error.expression, default)
    return Hl7Problem(
        f"{location}: {error.detail}", location=location, error_code=ErrorCode.DATA_TYPE_ERROR
    )


def _replaced_by(content: dict[str, Any]) -> str | None:
    for link in content.get("link") or []:
        reference = (link.get("other") or {}).get("reference") or ""
        if link.get("type") == "replaced-by" and reference.startswith("Patient/"):
            return str(reference.removeprefix("Patient/"))
    return None


def build_dispatcher(
    records: RecordService,
    registry: RegistryService,
    *,
    order_alerts: OrderAlerts | None = None,
    default_offset: str = "+08:00",
) -> MessageHandler:
    """The handler the transport calls for every message (see contract.MessageHandler).

    ``order_alerts(conn, context, service_request)`` is called for each new or changed
    active order (ORM^O01, OML^O21) and its notes are returned in ``Handled.notes``;
    ``default_offset`` is the zone of HL7 times that carry none (China Standard Time)."""
    return Dispatcher(records, registry, order_alerts=order_alerts, default_offset=default_offset)


def platform_dispatcher(
    records: RecordService, registry: RegistryService, recognition: RecognitionService
) -> MessageHandler:
    """The gateway's default handler: :func:`build_dispatcher` with the duplicate-test alerts
    of result recognition on every order (``healthroam gateway`` fills the parameters from the
    platform's services of the same names)."""
    return build_dispatcher(records, registry, order_alerts=recognition.order_alerts)


__all__ = [
    "Dispatcher",
    "HealthroamError",
    "OrderAlerts",
    "build_dispatcher",
    "patient_id_for",
    "platform_dispatcher",
    "resource_id",
]
