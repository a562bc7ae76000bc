"""Use cases of the HL7 v2 gateway: bind senders; turn one received message into its ACK.

A message goes through two steps. :meth:`GatewayService.prepare` (no database) decodes it,
checks the header and parses it; a message refused there becomes a :class:`Refusal` that
already holds its NAK. :meth:`GatewayService.apply` runs inside a transaction the caller owns
(the group committer's), in a savepoint of its own: it answers a repeated control id with the
stored ACK, checks the sender, calls the message handler and records the message with its ACK.
The caller commits and only then sends the ACKs.
"""

from __future__ import annotations

import hashlib
import logging
import traceback
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from healthroam.db.engine import Database
from healthroam.errors import (
    Conflict,
    Forbidden,
    Gone,
    HealthroamError,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    Unprocessable,
)
from healthroam.exchange.hl7.codec import (
    AckContent,
    Decoded,
    Er7Message,
    Header,
    build_ack,
    check_header,
    decode,
    encode,
    lenient_header,
    parse,
)
from healthroam.exchange.hl7.contract import (
    NO_SAVEPOINTS,
    AckCode,
    ErrorCode,
    Hl7Problem,
    Location,
    MessageContext,
    MessageHandler,
)
from healthroam.exchange.hl7.repository import (
    MessageLogRepository,
    SenderRepository,
    StoredAck,
)
from healthroam.exchange.hl7.senders import SenderBinding, check_namespace_id, principal_for
from healthroam.records.deferred import deferring
from healthroam.security.service import Clock, deferred_audit, utcnow

log = logging.getLogger("healthroam.exchange.hl7")


# --- sender administration -----------------------------------------------------------------


class SenderService:
    """The table of HL7 senders (MSH-3, MSH-4) and the institutions they write for."""

    def __init__(self, db: Database, clock: Clock = utcnow) -> None:
        self.db, self.clock = db, clock

    def add(
        self,
        *,
        application: str,
        facility: str,
        institution_code: str,
        description: str | None = None,
        active: bool = True,
    ) -> SenderBinding:
        from healthroam.security.repository import InstitutionRepository

        binding = SenderBinding(
            application=check_namespace_id(application, "application"),
            facility=check_namespace_id(facility, "facility"),
            institution_code=institution_code,
            active=active,
            created_at=self.clock(),
            description=description,
        )
        with self.db.transaction() as conn:
            if InstitutionRepository(conn).get(institution_code) is None:
                raise NotFound(
                    f"no institution with code {institution_code}", expression="institution"
                )
            if not SenderRepository(conn).add(binding):
                raise Conflict(
                    f"sender {binding.application}@{binding.facility} is already bound",
                    expression="application",
                )
        return binding

    def list(self, institution_code: str | None = None) -> list[SenderBinding]:
        with self.db.transaction(readonly=True) as conn:
            return SenderRepository(conn).list(institution_code)

    def set_active(self, application: str, facility: str, active: bool) -> None:
        with self.db.transaction() as conn:
            if not SenderRepository(conn).set_active(application, facility, active):
                raise NotFound(f"no sender {application}@{facility}", expression="application")

    def remove(self, application: str, facility: str) -> None:
        with self.db.transaction() as conn:
            if not SenderRepository(conn).remove(application, facility):
                raise NotFound(f"no sender {application}@{facility}", expression="application")


def purge_rejections(db: Database, days: int, clock: Clock = utcnow) -> int:
    """Delete the refusals (``hl7_rejections``) received more than ``days`` days ago; return
    how many. Accepted messages are kept: their stored ACKs answer repeated control ids."""
    if days < 1:
        raise InvalidInput("the retention must be at least one day", expression="days")
    with db.transaction() as conn:
        return MessageLogRepository(conn).purge_rejections(clock() - timedelta(days=days))


# --- messages ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Inbound:
    """A decoded, parsed message whose header the transport accepts."""

    raw: bytes
    decoded: Decoded
    message: Er7Message
    received_at: datetime
    peer: str | None


@dataclass(frozen=True, slots=True)
class Refusal:
    """A message refused before the database; its NAK is ready and it is only logged."""

    ack: bytes
    code: AckCode
    problem: Hl7Problem
    header: Header | None
    received_at: datetime
    peer: str | None


Prepared = Inbound | Refusal


@dataclass(frozen=True, slots=True)
class Outcome:
    """The ACK to send (encoded, unframed) and what it says."""

    ack: bytes
    code: AckCode
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Race:
    """Another transaction committed the same control id first: answer with its ACK."""

    application: str
    facility: str
    control_id: str


class _AlreadyRecorded(Exception):
    pass


class NeedsSavepoints(Exception):
    """A message failed after writing in a batch applied without savepoints: roll the batch
    back and apply it again with one savepoint per message."""


@dataclass(slots=True)
class BatchView:
    """What one transaction already knows: ACKs stored for the batch's control ids (and those
    accepted earlier in this batch) and the batch's senders, each read with one query."""

    acks: dict[tuple[str, str, str], StoredAck]
    senders: dict[tuple[str, str], tuple[SenderBinding, bool]]
    refusals: list[tuple[Any, ...]] = field(default_factory=list)  # log lines, after commit

    def log_refusals(self) -> None:
        for args in self.refusals:
            log.info(
                "hl7 message refused: sender=%s@%s control_id=%s ack=%s error=%s location=%s",
                *args,
            )

    @classmethod
    def load(cls, conn: Connection, jobs: Sequence[Prepared]) -> BatchView:
        headers = [j.decoded.header for j in jobs if isinstance(j, Inbound)]
        keys = {(h.sending_application, h.sending_facility, h.control_id) for h in headers}
        senders = {(h.sending_application, h.sending_facility) for h in headers}
        return cls(
            MessageLogRepository(conn).find_acks(keys),
            SenderRepository(conn).find_active_many(senders),
        )


def problem_from(exc: HealthroamError) -> Hl7Problem:
    """A platform error raised by a handler, as the AE/AR it becomes."""
    if isinstance(exc, Hl7Problem):
        return exc
    detail = f"{exc.detail} ({exc.expression})" if exc.expression else exc.detail
    if isinstance(exc, NotFound | Gone):
        return Hl7Problem(detail, error_code=ErrorCode.UNKNOWN_KEY)
    if isinstance(exc, Conflict | PreconditionFailed):
        return Hl7Problem(detail, error_code=ErrorCode.DUPLICATE_KEY)
    if isinstance(exc, InvalidInput | Unprocessable):
        return Hl7Problem(detail, error_code=ErrorCode.DATA_TYPE_ERROR)
    if isinstance(exc, Forbidden):
        return Hl7Problem(detail, error_code=ErrorCode.INTERNAL_ERROR, ack=AckCode.REJECT)
    return Hl7Problem(detail, error_code=ErrorCode.INTERNAL_ERROR)


def _where(exc: BaseException) -> str:
    """file:line of the innermost frame: enough to find a bug, no data values."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno}"


class GatewayService:
    def __init__(
        self,
        db: Database,
        handler: MessageHandler,
        *,
        default_charset: str = "UNICODE UTF-8",
        clock: Clock = utcnow,
    ) -> None:
        self.db, self.handler, self.clock = db, handler, clock
        self.default_charset = default_charset

    def _ack_id(self) -> str:
        return uuid.uuid4().hex[:20].upper()

    def _nak(self, header: Header | None, problem: Hl7Problem, label: str, codec: str) -> bytes:
        text = build_ack(
            header,
            AckContent(problem.ack, problems=[problem]),
            control_id=self._ack_id(),
            now=self.clock(),
            charset=label,
        )
        return encode(text, codec)

    def prepare(self, raw: bytes, peer: str | None = None) -> Prepared:
        """Decode, check and parse (no database): an :class:`Inbound` or a ready NAK."""
        received_at = self.clock()
        try:
            decoded = decode(raw, self.default_charset)
            check_header(decoded.header)
            message = parse(decoded)
        except Hl7Problem as problem:
            header, label, codec = lenient_header(raw, self.default_charset)
            return Refusal(
                self._nak(header, problem, label, codec),
                problem.ack,
                problem,
                header,
                received_at,
                peer,
            )
        return Inbound(raw, decoded, message, received_at, peer)

    def refuse_oversized(self, head: bytes, limit: int) -> bytes | None:
        """The NAK of a message larger than ``limit``, when its MSH can be read."""
        header, label, codec = lenient_header(head, self.default_charset)
        if header is None:
            return None
        problem = Hl7Problem(
            f"the message is larger than {limit} bytes",
            location=Location("MSH"),
            error_code=ErrorCode.INTERNAL_ERROR,
            ack=AckCode.REJECT,
        )
        return self._nak(header, problem, label, codec)

    def apply_batch(
        self, conn: Connection, jobs: Sequence[Prepared], *, savepoints: bool = True
    ) -> tuple[list[Outcome | Race | None], BatchView]:
        """Several messages in the caller's transaction. With ``savepoints`` each runs in its
        own; without, a message failing after it started writing raises
        :class:`NeedsSavepoints` (the caller rolls back and applies the batch again with them).
        The view's refusal log lines are for the caller to emit once it committed.

        Without savepoints the group's message-log rows and audit entries are written once,
        at its end (two inserts for the group instead of two per message; nothing in the
        group reads them back: a repeated control id is answered from the view), and the
        handler creates resources without savepoints of its own (``NO_SAVEPOINTS``). A
        control id that a concurrent transaction committed meanwhile fails that insert: the
        group raises :class:`NeedsSavepoints` too, and applied again it answers that message
        with the stored ACK."""
        view = BatchView.load(conn, jobs)
        if savepoints:
            return [self.apply(conn, job, view) for job in jobs], view
        accepted: list[dict[str, Any]] = []
        results: list[Outcome | Race | None] = []
        conn.info[NO_SAVEPOINTS] = True
        try:
            with deferred_audit(conn) as audit, deferring(conn):
                for job in jobs:
                    mark = len(audit)
                    result = self.apply(conn, job, view, savepoint=False, accepted=accepted)
                    if not (
                        isinstance(result, Outcome)
                        and result.code is AckCode.ACCEPT
                        and not result.duplicate
                    ):
                        del audit[mark:]  # nothing of a refused message is kept
                    results.append(result)
                if accepted:
                    try:
                        MessageLogRepository(conn).record_accepted_many(accepted)
                    except IntegrityError:
                        raise NeedsSavepoints from None
        finally:
            del conn.info[NO_SAVEPOINTS]
        return results, view

    def apply(
        self,
        conn: Connection,
        job: Prepared,
        view: BatchView | None = None,
        *,
        savepoint: bool = True,
        accepted: list[dict[str, Any]] | None = None,
    ) -> Outcome | Race | None:
        """One message inside the caller's transaction (in its own savepoint). None: the
        database failed, nothing of this message is stored and no ACK may be sent. With
        ``accepted`` the message-log row is appended there for the caller to insert."""
        if view is None:
            view = BatchView.load(conn, [job])
        if isinstance(job, Refusal):
            self._log_refusal(conn, view, job.header, job.problem, job.received_at, job.peer, None)
            return Outcome(job.ack, job.code)
        header = job.decoded.header
        application, facility = header.sending_application, header.sending_facility
        institution: str | None = None
        writing = False
        scope: AbstractContextManager[Any] = conn.begin_nested() if savepoint else nullcontext()
        try:
            with scope:
                messages = MessageLogRepository(conn)
                digest = hashlib.sha256(job.raw).digest()
                key = (application, facility, header.control_id)
                stored = view.acks.get(key)
                if stored is not None:
                    if stored.digest != digest:
                        log.warning(
                            "hl7 control id %s from %s@%s repeated with different content; "
                            "answered with the stored ACK",
                            header.control_id,
                            application,
                            facility,
                        )
                    return Outcome(stored.ack, AckCode(stored.ack_code), duplicate=True)
                binding = self._sender(view.senders.get((application, facility)))
                institution = binding.institution_code
                context = MessageContext(
                    sender=binding.sender,
                    principal=principal_for(binding.sender, source_address=job.peer),
                    control_id=header.control_id,
                    message_type=header.message_type,
                    trigger_event=header.trigger_event,
                    version=header.version,
                    received_at=job.received_at,
                )
                writing = True
                handled = self.handler(conn, context, job.message)
                ack = encode(
                    build_ack(
                        header,
                        AckContent(AckCode.ACCEPT, notes=handled.notes),
                        control_id=self._ack_id(),
                        now=self.clock(),
                        charset=job.decoded.charset,
                    ),
                    job.decoded.codec,
                )
                row: dict[str, Any] = {
                    "application": application,
                    "facility": facility,
                    "control_id": header.control_id,
                    "received_at": job.received_at,
                    "institution_code": institution,
                    "message_type": header.message_type,
                    "trigger_event": header.trigger_event,
                    "version": header.version,
                    "charset": job.decoded.charset,
                    "size": len(job.raw),
                    "digest": digest,
                    "written": len(handled.written),
                    "ack_code": AckCode.ACCEPT.value,
                    "ack": ack,
                }
                if accepted is not None:
                    accepted.append(row)
                else:
                    try:
                        messages.record_accepted(**row)
                    except IntegrityError:
                        raise _AlreadyRecorded from None
            view.acks[key] = StoredAck(ack, AckCode.ACCEPT.value, digest)
            return Outcome(ack, AckCode.ACCEPT)
        except Exception:
            if writing and not savepoint:
                raise NeedsSavepoints from None
            outcome, problem = self._failure(header)
        if outcome is not None or problem is None:
            return outcome
        self._log_refusal(conn, view, header, problem, job.received_at, job.peer, institution)
        return Outcome(
            self._nak(header, problem, job.decoded.charset, job.decoded.codec), problem.ack
        )

    def _failure(self, header: Header) -> tuple[Outcome | Race | None, Hl7Problem | None]:
        """The outcome of the exception being handled: (result, None) to return as is, or
        (None, problem) to answer with a NAK."""
        application, facility = header.sending_application, header.sending_facility
        try:
            raise
        except _AlreadyRecorded:
            return Race(application, facility, header.control_id), None
        except HealthroamError as exc:
            return None, problem_from(exc)
        except SQLAlchemyError as exc:
            log.error(
                "hl7 control id %s from %s@%s not applied: database error %s",
                header.control_id,
                application,
                facility,
                type(exc).__name__,
            )
            return None, None
        except Exception as exc:
            log.error(
                "hl7 control id %s from %s@%s: handler failed with %s at %s",
                header.control_id,
                application,
                facility,
                type(exc).__name__,
                _where(exc),
            )
            return None, Hl7Problem(
                "the message could not be applied (internal error); it was logged",
                error_code=ErrorCode.INTERNAL_ERROR,
            )

    def _sender(self, found: tuple[SenderBinding, bool] | None) -> SenderBinding:
        if found is None:
            raise Hl7Problem(
                "unknown sender: MSH-3/MSH-4 are not registered with this platform",
                location=Location("MSH", field=4),
                error_code=ErrorCode.TABLE_VALUE_NOT_FOUND,
                ack=AckCode.REJECT,
            )
        binding, institution_active = found
        if not binding.active or not institution_active:
            raise Hl7Problem(
                "sender (MSH-3/MSH-4) or its institution is not active",
                location=Location("MSH", field=4),
                error_code=ErrorCode.TABLE_VALUE_NOT_FOUND,
                ack=AckCode.REJECT,
            )
        return binding

    def _log_refusal(
        self,
        conn: Connection,
        view: BatchView,
        header: Header | None,
        problem: Hl7Problem,
        received_at: datetime,
        peer: str | None,
        institution: str | None,
    ) -> None:
        view.refusals.append(
            (
                header.sending_application if header else "?",
                header.sending_facility if header else "?",
                header.control_id if header else "?",
                problem.ack.value,
                problem.error_code.value,
                problem.location or "-",
            )
        )
        try:
            with conn.begin_nested():
                MessageLogRepository(conn).record_rejected(
                    received_at=received_at,
                    application=header.sending_application[:180] if header else None,
                    facility=header.sending_facility[:180] if header else None,
                    control_id=header.control_id[:199] if header else None,
                    institution_code=institution,
                    message_type=header.message_type[:3] if header else None,
                    trigger_event=header.trigger_event[:3] if header else None,
                    version=header.version[:8] if header else None,
                    ack_code=problem.ack.value,
                    error_code=problem.error_code.value,
                    location=str(problem.location)[:64] if problem.location else None,
                    detail=problem.detail,
                    peer=peer[:64] if peer else None,
                )
        except SQLAlchemyError as exc:
            log.warning("hl7 refusal not logged: database error %s", type(exc).__name__)

    def resolve_race(self, race: Race) -> Outcome | None:
        """After the batch committed: the ACK stored by the transaction that won."""
        with self.db.transaction(readonly=True) as conn:
            stored = MessageLogRepository(conn).find_ack(
                race.application, race.facility, race.control_id
            )
        if stored is None:
            return None
        return Outcome(stored.ack, AckCode(stored.ack_code), duplicate=True)

    def process(self, raw: bytes, peer: str | None = None) -> Outcome | None:
        """One message in a transaction of its own (no group commit)."""
        job = self.prepare(raw, peer)
        with self.db.transaction() as conn:
            [result], view = self.apply_batch(conn, [job])
        view.log_refusals()
        return self.resolve_race(result) if isinstance(result, Race) else result


Deliver = Callable[[Outcome | None], None]
