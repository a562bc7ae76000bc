"""Group commit of audit entries: concurrent requests share one transaction for their entries.

A read's entry must be committed before the answer is sent. Committed one transaction per read,
every read paid an insert statement and a commit (a WAL flush on PostgreSQL) of its own. Here
the first caller that finds no commit running takes every entry waiting (its own included),
writes them in one insert and commits; callers that arrive meanwhile wait, and when that commit
ends one of them takes the next group. No timer and no thread of its own: a lone caller commits
at once, and groups grow with the load (as the HL7 gateway's group commit, decision 0012).

Each caller returns only after the transaction holding its entries committed; if that commit
failed, every caller of the group gets :class:`AuditNotRecorded` (the caller must then not
answer with the data).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from sqlalchemy import Connection

from healthroam.db.engine import Database
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


class AuditGroupCommit:
    """Commits the entries of concurrent callers together (see the module's docstring).

    ``write`` puts a group's entries into the open transaction (the audit inbox); at most
    ``max_group`` callers share one transaction."""

    def __init__(
        self,
        db: Database,
        write: Callable[[Connection, list[AuditRecord]], None],
        max_group: int = 256,
    ) -> None:
        self.db, self.write, self.max_group = db, write, max_group
        self._lock = threading.Lock()
        self._turn = threading.Condition(self._lock)
        self._waiting: list[_Ticket] = []
        self._busy = False
        # Counters (tests and benchmarks): transactions committed and callers served.
        self.groups = 0
        self.callers = 0

    def commit(self, records: Sequence[AuditRecord]) -> None:
        """Return once ``records`` are committed; raise :class:`AuditNotRecorded` if not."""
        ticket = _Ticket(records)
        with self._turn:
            self._waiting.append(ticket)
            while not ticket.done and self._busy:
                self._turn.wait()
            if ticket.done:
                self._check(ticket)
                return
            # No commit running and ours not done: lead the next group (ours and the oldest
            # others waiting).
            self._busy = True
            self._waiting.remove(ticket)
            group = [*self._waiting[: self.max_group - 1], ticket]
            del self._waiting[: self.max_group - 1]
        error: BaseException | None = None
        try:
            with self.db.transaction() as conn:
                self.write(conn, [r for t in group for r in t.records])
        except BaseException as exc:  # every caller of the group is told; none shows data
            error = exc
            log.warning("audit group commit failed: %s", type(exc).__name__)
        finally:
            with self._turn:
                for waiting in group:
                    waiting.done, waiting.error = True, error
                self.groups += 1
                self.callers += len(group)
                self._busy = False
                self._turn.notify_all()
        if error is not None and not isinstance(error, Exception):
            raise error  # KeyboardInterrupt, SystemExit: not an audit failure
        self._check(ticket)

    @staticmethod
    def _check(ticket: _Ticket) -> None:
        if ticket.error is not None:
            raise AuditNotRecorded(
                "the access could not be recorded in the audit trail, so nothing is shown; "
                "try again"
            ) from ticket.error
