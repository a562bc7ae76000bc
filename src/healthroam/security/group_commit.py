"""Group commit of audit entries: concurrent reads share one commit for their entries.

A read's entry must be committed before the answer is sent. Committed in each read's own
transaction, every read paid an insert statement and a durable commit (a WAL flush on
PostgreSQL). Here a read joins the group commit inside its transaction, before it commits:

- if no group is being committed, it **leads**: it takes every entry waiting (its own and
  those of reads that arrived meanwhile), writes them in one insert into its own transaction,
  and its commit commits them all; then it tells the others;
- if a group is being committed, it **follows**: its entry waits, its own transaction ends
  (read-only, unless the record gate wrote), and it waits, outside any transaction, until a
  leader has committed its entry. If the group being committed did not hold it and nobody
  else took it, it leads a group of its own in a new transaction.

A lone read thus commits exactly as before (one transaction with its entry); under load one
insert and one durable commit serve a group. No timer and no thread of its own (like the HL7
gateway's group commit, decision 0012). A follower never waits inside its transaction: a
leader may wait for a follower's row locks (two reads recording the same care relationship),
never the reverse, so the two cannot deadlock.

Each read returns only after the transaction holding its entry committed; if that commit
failed, every read of the group gets :class:`AuditNotRecorded` (and must not answer with the
data).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import Connection

from healthroam.db.engine import Database
from healthroam.db.raw import statements_alone
from healthroam.errors import HealthroamError
from healthroam.security.audit import AuditRecord

log = logging.getLogger("healthroam.audit")


class AuditNotRecorded(HealthroamError):
    """The audit entries could not be committed: the request fails without showing data."""

    status, code, title = 503, "transient", "Audit unavailable"


class _Ticket:
    __slots__ = ("done", "error", "records")

    def __init__(self, records: Sequence[AuditRecord]) -> None:
        self.records = records
        self.done = False
        self.error: BaseException | None = None


class Joined:
    """A read's place in the group commit, from :meth:`AuditGroupCommit.join` (inside its
    transaction) to :meth:`committed` or :meth:`failed` (once that transaction ended)."""

    __slots__ = ("_group", "_owner", "_ticket")

    def __init__(
        self, owner: AuditGroupCommit, ticket: _Ticket, group: list[_Ticket] | None
    ) -> None:
        self._owner, self._ticket, self._group = owner, ticket, group

    @property
    def leads(self) -> bool:
        return self._group is not None

    def committed(self) -> None:
        """The read's transaction committed: as leader, the group's entries are in; as
        follower, wait for them (leading a group of its own if nobody took its entry).
        Raises :class:`AuditNotRecorded` if the entry's commit failed."""
        if self._group is not None:
            self._owner._finish(self._group, None)
        else:
            self._owner._await(self._ticket)

    def failed(self, error: BaseException) -> BaseException:
        """The read's transaction failed (its commit or anything before it): the error to
        raise. A leader's failure is the group's: :class:`AuditNotRecorded` for all."""
        if self._group is None:
            self._owner._withdraw(self._ticket)
            return error
        self._owner._finish(self._group, error)
        if isinstance(error, Exception) and not isinstance(error, AuditNotRecorded):
            return not_recorded()
        return error


class Share:
    """One transaction's part in the group commit (:meth:`AuditGroupCommit.sharing`)."""

    __slots__ = ("_owner", "joined")

    def __init__(self, owner: AuditGroupCommit) -> None:
        self._owner = owner
        self.joined: Joined | None = None

    def join(self, conn: Connection, records: Sequence[AuditRecord]) -> None:
        """Inside the transaction, last thing before its commit; once per transaction."""
        if self.joined is not None:
            raise RuntimeError("a transaction joins the group commit once")
        if records:  # nothing to wait for otherwise
            self.joined = self._owner.join(conn, records)


class AuditGroupCommit:
    """Commits the entries of concurrent reads together (see the module's docstring).

    ``write`` puts a group's entries into an open transaction (the audit inbox) in one
    statement (sent on its own, autocommit, when it is the transaction's only statement:
    :func:`statements_alone`); at most ``max_group`` reads share one commit."""

    def __init__(
        self,
        db: Database,
        write: Callable[[Connection, list[AuditRecord]], None],
        max_group: int = 256,
    ) -> None:
        self.db, self.write, self.max_group = db, write, max_group
        self._turn = threading.Condition(threading.Lock())
        self._waiting: list[_Ticket] = []
        self._busy = False
        # Counters (tests and benchmarks): commits that carried entries, and reads served.
        self.groups = 0
        self.callers = 0

    def join(self, conn: Connection, records: Sequence[AuditRecord]) -> Joined:
        """Inside the read's transaction, before it commits. The caller must end with the
        result's :meth:`Joined.committed` after its commit or :meth:`Joined.failed`."""
        ticket = _Ticket(records)
        with self._turn:
            if self._busy:
                self._waiting.append(ticket)
                return Joined(self, ticket, None)
            self._busy = True
            group = self._take(ticket)
        try:
            # If nothing else was sent in the transaction, the insert commits on its own:
            # the transaction's commit has nothing left to send (db/raw.py).
            with statements_alone(conn):
                self.write(conn, [r for t in group for r in t.records])
        except Exception as exc:
            self._finish(group, exc)
            raise not_recorded() from exc
        except BaseException as exc:
            self._finish(group, exc)
            raise
        return Joined(self, ticket, group)

    @contextmanager
    def sharing(self) -> Iterator[Share]:
        """Around a transaction: ``with group.sharing() as share, db.transaction() as conn:``
        and ``share.join(conn, records)`` inside; at the end of the block (after the
        commit) the records are committed, or the block raises (:class:`AuditNotRecorded`
        when the commit carrying them failed)."""
        share = Share(self)
        try:
            yield share
        except BaseException as error:
            if share.joined is None:
                raise
            failure = share.joined.failed(error)
            if failure is error:
                raise
            raise failure from error
        if share.joined is not None:
            share.joined.committed()

    def commit(self, records: Sequence[AuditRecord]) -> None:
        """Outside any transaction: return once ``records`` are committed (in a group, in a
        transaction of the group commit's own if this call leads)."""
        if not records:
            return
        ticket = _Ticket(records)
        with self._turn:
            self._waiting.append(ticket)
        self._await(ticket)

    def _take(self, ticket: _Ticket) -> list[_Ticket]:
        """Under the lock: ``ticket`` and the oldest others waiting, up to ``max_group``."""
        group = [*self._waiting[: self.max_group - 1], ticket]
        del self._waiting[: self.max_group - 1]
        return group

    def _await(self, ticket: _Ticket) -> None:
        """Wait (queued, outside any transaction) until ``ticket`` is committed; lead a group
        in a new transaction if no commit is running and it is still waiting."""
        group: list[_Ticket] | None = None
        with self._turn:
            while not ticket.done and self._busy:
                self._turn.wait()
            if not ticket.done:
                self._busy = True
                self._waiting.remove(ticket)
                group = self._take(ticket)
        if group is not None:
            try:
                with self.db.transaction() as conn, statements_alone(conn):
                    self.write(conn, [r for t in group for r in t.records])
            except Exception as exc:
                self._finish(group, exc)
            except BaseException as exc:  # KeyboardInterrupt, SystemExit: not an audit failure
                self._finish(group, exc)
                raise
            else:
                self._finish(group, None)
        self._check(ticket)

    def _finish(self, group: list[_Ticket], error: BaseException | None) -> None:
        if error is not None:
            log.warning("audit group commit failed: %s", type(error).__name__)
        with self._turn:
            for ticket in group:
                ticket.done, ticket.error = True, error
            self.groups += 1
            self.callers += len(group)
            self._busy = False
            self._turn.notify_all()

    def _withdraw(self, ticket: _Ticket) -> None:
        """A follower whose own transaction failed: its entry is not needed any more unless
        a leader already took it (then it is committed with the group: over-audited, never
        under-audited)."""
        with self._turn:
            if ticket in self._waiting:
                self._waiting.remove(ticket)

    @staticmethod
    def _check(ticket: _Ticket) -> None:
        if ticket.error is not None:
            raise not_recorded() from ticket.error


def not_recorded() -> AuditNotRecorded:
    return AuditNotRecorded(
        "the access could not be recorded in the audit trail, so nothing is shown; try again"
    )
