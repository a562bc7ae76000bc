"""Planner statistics: refreshed when a table has grown or shrunk by a tenth since the last
``ANALYZE``, or was never analyzed.

Why it matters: the search index tables carry two kinds of index, one by value (``resource_type,
param, code``) and one by owner (``resource_type, resource_id``). Without statistics SQLite
takes the index with more equality columns to check one resource's condition, i.e. it reads
every row with that code once per candidate resource: ``Observation?code=X&value-quantity=gt1``
over 20,000 Observations of one code took 482 s, and 0.19 s after ``ANALYZE``. PostgreSQL
keeps statistics itself through autovacuum, but only later (and not at all where it is off),
so a large bulk load refreshes them at once as well.

SQLite analyses with ``PRAGMA analysis_limit`` (a sample of each index), so a refresh of a
large file takes milliseconds, not a pass over it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from sqlalchemy import Connection, Table, func, select, text

from healthroam.db.engine import Database

log = logging.getLogger("healthroam.db")

# Rows SQLite reads per index while analysing (its documented range for a usable sample).
SQLITE_ANALYSIS_LIMIT = 1000
# A table is re-analysed once its row count moved by this fraction since the last ANALYZE.
GROWTH = 0.1


def refresh_statistics(db: Database, tables: Sequence[Table], *, force: bool = False) -> bool:
    """ANALYZE ``tables`` (the first is the one whose growth decides) when it was never
    analysed or its row count moved by :data:`GROWTH` since; True when it ran."""
    if not tables:
        return False
    with db.transaction() as conn:
        if not force and not _stale(conn, db.dialect, tables[0]):
            return False
        if db.dialect == "sqlite":
            conn.exec_driver_sql(f"PRAGMA analysis_limit={SQLITE_ANALYSIS_LIMIT}")
            for table in tables:
                conn.exec_driver_sql(f'ANALYZE "{table.name}"')
        else:
            conn.exec_driver_sql("ANALYZE " + ", ".join(f'"{t.name}"' for t in tables))
    return True


def _stale(conn: Connection, dialect: str, table: Table) -> bool:
    analysed = _analysed_rows(conn, dialect, table)
    if analysed is None:
        return True
    rows = conn.execute(select(func.count()).select_from(table)).scalar_one()
    return abs(rows - analysed) > GROWTH * max(analysed, 1)


def _analysed_rows(conn: Connection, dialect: str, table: Table) -> float | None:
    """The row count the planner's statistics hold for ``table`` (None: never analysed)."""
    if dialect == "sqlite":
        has_stats = conn.execute(
            text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'")
        ).first()
        if has_stats is None:
            return None
        stat = conn.execute(
            text("SELECT stat FROM sqlite_stat1 WHERE tbl = :t LIMIT 1"), {"t": table.name}
        ).scalar()
        return float(str(stat).split()[0]) if stat else None
    estimated = conn.execute(
        text("SELECT reltuples FROM pg_class WHERE relname = :name"), {"name": table.name}
    ).scalar()
    # -1 (PostgreSQL 14+) or 0: never analysed or vacuumed.
    return float(estimated) if estimated is not None and estimated > 0 else None


class StatisticsRefresher:
    """A daemon thread that calls :func:`refresh_statistics` at start and then every
    ``interval_seconds`` (0: never starts). For SQLite, where nothing else keeps statistics."""

    def __init__(self, db: Database, tables: Sequence[Table], interval_seconds: float) -> None:
        self.db, self.tables, self.interval = db, tuple(tables), interval_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval <= 0 or self._thread is not None:
            return
        self._stop.clear()  # started again after a stop (leadership regained)
        self._thread = threading.Thread(target=self._run, name="db-statistics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                refresh_statistics(self.db, self.tables)
            except Exception as exc:  # the next round tries again; searches still work
                log.warning("refreshing planner statistics failed: %s", type(exc).__name__)
            if self._stop.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
