"""The card-use log (用卡监控) with group commit.

Each verification writes one ``card_uses`` row and one audit record. With a flush window,
uses arriving within it are written in one transaction by a background thread, and every
caller waits until its batch has committed: nothing is answered before it is logged, but the
audit chain's head lock is taken once per batch instead of once per use.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from healthroam.cards.repository import CardRepository
from healthroam.db.engine import Database
from healthroam.security.audit import AuditRecord
from healthroam.security.service import AuditTrail


class _Batch:
    __slots__ = ("audits", "done", "error", "rows")

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.audits: list[AuditRecord] = []
        self.done = threading.Event()
        self.error: BaseException | None = None


class UseLog:
    def __init__(self, db: Database, audit: AuditTrail, flush_ms: int) -> None:
        self.db, self.audit = db, audit
        self.flush_seconds = flush_ms / 1000
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._batch = _Batch()
        self._thread: threading.Thread | None = None
        self._closed = False

    def _write(self, rows: Sequence[dict[str, Any]], audits: Sequence[AuditRecord]) -> None:
        with self.db.transaction() as conn:
            CardRepository(conn).add_uses(rows)
            self.audit.append(conn, audits)

    def write(self, row: dict[str, Any], audits: Sequence[AuditRecord]) -> None:
        """Log one use; returns once it is committed."""
        if self.flush_seconds <= 0 or self._closed:
            self._write([row], audits)
            return
        with self._lock:
            batch = self._batch
            batch.rows.append(row)
            batch.audits.extend(audits)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="card-use-log", daemon=True)
                self._thread.start()
        self._wake.set()
        batch.done.wait()
        if batch.error is not None:
            raise batch.error

    def _run(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(self.flush_seconds)
            with self._lock:
                self._wake.clear()
                batch, self._batch = self._batch, _Batch()
            if batch.rows:
                try:
                    self._write(batch.rows, batch.audits)
                except BaseException as exc:  # handed to every waiting caller
                    batch.error = exc
                batch.done.set()
            if self._closed:
                with self._lock:
                    if not self._batch.rows:
                        self._thread = None
                        return

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
