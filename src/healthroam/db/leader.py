"""One server process of several runs the jobs that must run once: elected by a PostgreSQL
advisory lock (decision 0048).

``healthroam serve --workers N`` starts N processes that each build their own services. Most
background work is safe in every process (the export worker claims jobs with row locks, each
process's group commit writes its own entries). The audit sealer is correct in several
processes too (sealing holds the chain head's row lock, so sealers take turns), but N sealers
polling every 200 ms contend on that lock for nothing; it runs where the leader is.

The leader is the process whose **dedicated connection** holds the session-level advisory lock
:data:`LEADER_LOCK`. Every process tries to take it every ``poll_seconds``; the holder checks
its connection as often. When the holder dies its PostgreSQL session ends and the lock with
it (at once when the process dies and the kernel closes its socket; after the session's TCP
keepalive - about 25 s - when its host or network is gone), and the next process to try takes
over. A holder that finds its connection broken stops its jobs at once; until it finds out
(after a network failure its check may hang until its own TCP timeout) an old and a new leader
may overlap, which the jobs tolerate (they stay correct in several processes; the lock only
keeps them from running everywhere).

SQLite has no advisory locks and serves from one process (decision 0048): the one process
leads.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from healthroam.db.engine import Database

log = logging.getLogger("healthroam.leader")

# The advisory lock key of the leader ("hroamLDR" as a big-endian 64-bit integer). Advisory
# locks are per database, so servers of different databases on one cluster each elect theirs.
LEADER_LOCK = int.from_bytes(b"hroamLDR", "big", signed=True)
# The name of the dedicated connection in pg_stat_activity: `<prefix><process id>`.
APPLICATION_NAME_PREFIX = "healthroam-leader-"


class Job(Protocol):
    """A background job the leader runs: started when leadership is gained, stopped when it
    is lost or at shutdown. ``start`` after ``stop`` must start it again."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class LeaderElection:
    """Runs ``jobs`` in whichever process holds :data:`LEADER_LOCK` (every process runs one of
    these; on SQLite the process simply leads)."""

    def __init__(
        self,
        db: Database,
        jobs: Sequence[Job],
        *,
        poll_seconds: float = 1.0,
        key: int = LEADER_LOCK,
    ) -> None:
        self.db, self.jobs, self.poll, self.key = db, tuple(jobs), poll_seconds, key
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None  # the dedicated DBAPI connection (PostgreSQL)
        self._leading = False
        self._lock = threading.Lock()  # start/stop of the jobs

    @property
    def leading(self) -> bool:
        return self._leading

    def start(self) -> None:
        if self.db.dialect != "postgresql":
            self._lead()
            return
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the jobs (if leading) and give the lock up for another process."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self._follow()
        self._close()

    # --- the election loop (PostgreSQL) ----------------------------------------------------

    def _run(self) -> None:
        wait = 0.0
        while not self._stop.wait(wait):
            wait = self.poll
            try:
                if self._conn is None:
                    self._conn = self._connect()
                with self._conn.cursor() as cursor:
                    if self._leading:
                        cursor.execute("SELECT 1")  # the session, hence the lock, still there
                        continue
                    cursor.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
                    row = cursor.fetchone()
                if row is not None and row[0] is True:
                    log.info("leader: this process (%d) runs the background jobs", os.getpid())
                    self._lead()
            except Exception as error:  # the connection broke: whatever we held is gone
                if self._leading:
                    log.warning(
                        "leader: lost the database session (%s); background jobs stopped",
                        type(error).__name__,
                    )
                else:
                    log.warning("leader election failed: %s", type(error).__name__)
                self._follow()
                self._close()

    def _connect(self) -> Any:
        """A connection of its own, outside the pool (the lock lives as long as it does), in
        autocommit (it never sits idle in a transaction), with TCP keepalives so that
        PostgreSQL notices a vanished host in about 25 s and frees the lock."""
        raw = self.db.engine.raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        raw.detach()  # never returned to the pool; closed by _close
        driver.autocommit = True
        with driver.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('application_name', %s, false), "
                "set_config('tcp_keepalives_idle', '10', false), "
                "set_config('tcp_keepalives_interval', '5', false), "
                "set_config('tcp_keepalives_count', '3', false)",
                (f"{APPLICATION_NAME_PREFIX}{os.getpid()}",),
            )
        return raw

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()  # ends the session: the lock (if held) is released
            except Exception as error:
                log.warning("leader: closing the connection failed: %s", type(error).__name__)

    # --- the jobs --------------------------------------------------------------------------

    def _lead(self) -> None:
        with self._lock:
            if self._leading:
                return
            self._leading = True
            for job in self.jobs:
                job.start()

    def _follow(self) -> None:
        with self._lock:
            if not self._leading:
                return
            self._leading = False
            for job in reversed(self.jobs):
                try:
                    job.stop()
                except Exception as error:
                    log.warning("leader: stopping a job failed: %s", type(error).__name__)
