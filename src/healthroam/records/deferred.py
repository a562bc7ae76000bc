"""Deferred version and index rows: the writes of many resources in one transaction, sent
together (PostgreSQL only; the HL7 v2 gateway's group commit, decision 0037).

While a :class:`DeferredRows` is installed on a connection (:func:`deferring`), the resource
repository writes each resource's current row at once (its primary key still decides a race,
and every read by key sees it), and keeps the history row and the search index rows in memory:
they are written by :meth:`DeferredRows.flush`, one statement per table (``COPY`` for large
sets), at the end of the block or before the first statement on the connection that names one
of those tables (a search, recognition's result look-up: every read sees every write). The
identifier look-ups of the HL7 handlers ask :meth:`DeferredRows.identified` instead, so that
they need no flush. An error inside the block drops what is deferred: the caller's transaction
is rolled back anyway (savepoints are not supported inside the block).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Table, event

from healthroam.db.schema import fhir_resource_versions
from healthroam.db.tables_records import INDEX_TABLES, fhir_idx_reference, fhir_idx_token

if TYPE_CHECKING:
    from healthroam.records.repository import ResourceRepository

DEFERRED = "healthroam.records.deferred"  # Connection.info key of the installed DeferredRows
Key = tuple[str, str]
# Table names as they appear in SQL text: a statement naming one reads (or writes) what may
# still be deferred. "fhir_resources" is not among them (nor contains one of them).
_NAMES = ("fhir_resource_versions", *(t.name for t in INDEX_TABLES))


def _unindex_many_sql(where: str) -> str:
    """One statement deleting from every index table (one plan and one executor run instead
    of nine statements; the same rows deleted)."""
    # Table names come from our metadata, never from input.
    parts = [f'd{n} AS (DELETE FROM "{t.name}" {where})' for n, t in enumerate(INDEX_TABLES)]  # noqa: S608
    return "WITH " + ", ".join(parts) + " SELECT 1"


# The stored index rows of the stale keys, from every index table, in one statement.
_UNINDEX_MANY = _unindex_many_sql(
    'WHERE ("resource_type", "resource_id") IN '
    "(SELECT * FROM unnest(%(types)s::text[], %(ids)s::text[]))"
)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What an identifier look-up returns of a resource written in the block."""

    deleted: bool
    institution_code: str | None
    content: dict[str, Any] | None
    last_updated: datetime


@dataclass(slots=True)
class DeferredRows:
    versions: list[dict[str, Any]] = field(default_factory=list)
    # The current index rows of each resource written in the block, by table
    index: dict[Key, list[tuple[Table, list[dict[str, Any]]]]] = field(default_factory=dict)
    stale: set[Key] = field(default_factory=set)  # stored index rows to delete first
    snapshots: dict[Key, Snapshot] = field(default_factory=dict)
    flushes: int = 0
    _bypass: bool = False
    # What the look-ups ask, kept as the rows come (a look-up costs no pass over the rows):
    # identifier (type, system, value) -> keys; reference target (type, id) -> key -> params
    _identifiers: dict[tuple[str, str, str], dict[Key, None]] = field(default_factory=dict)
    _targets: dict[tuple[str, str], dict[Key, set[str]]] = field(default_factory=dict)
    _summary: dict[Key, tuple[list[tuple[str, str, str]], list[tuple[str, str]]]] = field(
        default_factory=dict
    )

    def __bool__(self) -> bool:
        return bool(self.versions or self.index or self.stale)

    def created(
        self,
        key: Key,
        version: dict[str, Any],
        index: list[tuple[Table, list[dict[str, Any]]]],
        snapshot: Snapshot,
    ) -> None:
        self.versions.append(version)
        self._set(key, index, snapshot)

    def replaced(
        self,
        key: Key,
        version: dict[str, Any],
        index: list[tuple[Table, list[dict[str, Any]]]],
        snapshot: Snapshot,
    ) -> None:
        """A new version: the index rows stored for ``key`` are deleted at the flush, and
        those deferred for it are replaced by ``index``."""
        self.versions.append(version)
        self.stale.add(key)
        self._set(key, index, snapshot)

    def _set(
        self, key: Key, index: list[tuple[Table, list[dict[str, Any]]]], snapshot: Snapshot
    ) -> None:
        old_identifiers, old_targets = self._summary.pop(key, ([], []))
        for wanted in old_identifiers:
            self._identifiers.get(wanted, {}).pop(key, None)
        for target in old_targets:
            self._targets.get(target, {}).pop(key, None)
        identifiers: list[tuple[str, str, str]] = []
        targets: list[tuple[str, str]] = []
        for table, rows in index:
            if table is fhir_idx_token:
                for row in rows:
                    if row["param"] == "identifier":
                        wanted = (row["resource_type"], row["system"], row["code"])
                        self._identifiers.setdefault(wanted, {})[key] = None
                        identifiers.append(wanted)
            elif table is fhir_idx_reference:
                for row in rows:
                    target = (row["target_type"], row["target_id"])
                    self._targets.setdefault(target, {}).setdefault(key, set()).add(row["param"])
                    targets.append(target)
        self._summary[key] = (identifiers, targets)
        self.index[key] = index
        self.snapshots[key] = snapshot

    def identified(
        self, wanted: set[tuple[str, str, str]]
    ) -> tuple[Collection[Key], dict[tuple[str, str, str], list[tuple[Key, Snapshot]]]]:
        """For identifier look-ups ``(resource_type, system, value)``: the keys whose stored
        index rows are not to be trusted (written in the block), and the deferred matches."""
        hits = {
            one: [(key, self.snapshots[key]) for key in self._identifiers[one]]
            for one in wanted
            if self._identifiers.get(one)
        }
        return self.index.keys(), hits

    def concerns(
        self, types: Collection[str], param: str, target_type: str, targets: Collection[str]
    ) -> bool:
        """Whether a read of the ``types`` resources whose reference ``param`` points at
        ``target_type``/one of ``targets`` may differ before and after a flush: a resource of
        those types was given a new version in the block (its stored index rows are stale),
        or one written in the block has such a reference."""
        if any(key[0] in types for key in self.stale):
            return True
        return any(
            key[0] in types and param in params
            for target in targets
            for key, params in self._targets.get((target_type, target), {}).items()
        )

    def referring(self, targets: Collection[tuple[str, str]]) -> tuple[Collection[Key], list[Key]]:
        """For a read of the resources that refer to one of ``targets`` (type, id) by any
        reference: the keys whose stored index rows are not to be trusted (written in the
        block), and the live deferred resources that do refer to one."""
        found: dict[Key, None] = {}
        for target in targets:
            for key in self._targets.get(tuple(target), {}):  # type: ignore[arg-type]
                if not self.snapshots[key].deleted:
                    found[key] = None
        return self.index.keys(), list(found)

    @contextmanager
    def bypass(self) -> Iterator[None]:
        """Statements inside do not flush (their caller accounts for what is deferred)."""
        self._bypass = True
        try:
            yield
        finally:
            self._bypass = False

    def flush(self, repo: ResourceRepository) -> None:
        """Write what is deferred: the stale index rows' deletion, then the rows."""
        if not self:
            return
        before: list[tuple[str, Any]] = []
        if self.stale:
            types = [k[0] for k in sorted(self.stale)]
            ids = [k[1] for k in sorted(self.stale)]
            before = [(_UNINDEX_MANY, {"types": types, "ids": ids})]
        by_table: dict[Table, list[dict[str, Any]]] = {fhir_resource_versions: self.versions}
        for batches in self.index.values():
            for table, rows in batches:
                by_table.setdefault(table, []).extend(rows)
        self.versions, self.index, self.stale, self.snapshots = [], {}, set(), {}
        self._identifiers, self._targets, self._summary = {}, {}, {}
        self.flushes += 1
        repo.write_now(list(by_table.items()), before=before)

    def _before_statement(
        self, conn: Connection, _cursor: Any, statement: str, *_args: Any
    ) -> None:
        if self._bypass or not self:
            return
        if any(name in statement for name in _NAMES):
            from healthroam.records.repository import ResourceRepository

            self.flush(ResourceRepository(conn))


def deferred_on(conn: Connection) -> DeferredRows | None:
    found: DeferredRows | None = conn.info.get(DEFERRED)
    return found


@contextmanager
def deferring(conn: Connection) -> Iterator[DeferredRows]:
    """Defer version and index rows on ``conn`` (PostgreSQL) for the block; flushed at its end
    when it ends without an error. On SQLite nothing is deferred (the block is a no-op)."""
    rows = DeferredRows()
    if conn.dialect.name != "postgresql":
        yield rows
        return
    if conn.info.get(DEFERRED) is not None:
        raise RuntimeError("rows are already deferred on this connection")
    conn.info[DEFERRED] = rows
    event.listen(conn, "before_cursor_execute", rows._before_statement)
    try:
        yield rows
        from healthroam.records.repository import ResourceRepository

        rows.flush(ResourceRepository(conn))
    finally:
        event.remove(conn, "before_cursor_execute", rows._before_statement)
        del conn.info[DEFERRED]
