"""SQL storage of FHIR resources: the current row, an append-only version table and typed
search-index tables (HAPI FHIR's layout), plus search compiled to SQL over those indexes.

Search never loads candidate resources into Python: each clause becomes an ``EXISTS`` over one
index table correlated with the resource row (chains and ``_has`` nest them), and only the
page's rows are read.
"""

from __future__ import annotations

import contextlib
import functools
import json
import uuid
import weakref
from collections.abc import Callable, Hashable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import (
    ARRAY,
    JSON,
    Boolean,
    ColumnElement,
    Connection,
    Row,
    Select,
    String,
    Table,
    and_,
    any_,
    bindparam,
    delete,
    false,
    func,
    insert,
    literal,
    literal_column,
    not_,
    or_,
    select,
    text,
    true,
    tuple_,
    union_all,
    update,
)
from sqlalchemy import column as sql_column
from sqlalchemy import table as sql_table
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import KeyedColumnElement
from sqlalchemy.sql.sqltypes import NullType
from sqlalchemy.sql.visitors import InternalTraversal

from healthroam.db.raw import (
    RawSelect,
    dbapi,
    insert_statement,
    sqlalchemy_errors,
    statements_alone,
)
from healthroam.db.schema import fhir_resource_versions, fhir_resources
from healthroam.db.tables_records import (
    FTS5_TABLE,
    INDEX_TABLES,
    fhir_idx_composite,
    fhir_idx_date,
    fhir_idx_number,
    fhir_idx_quantity,
    fhir_idx_reference,
    fhir_idx_string,
    fhir_idx_text,
    fhir_idx_token,
    fhir_idx_uri,
    fhir_search_results,
    fhir_search_totals,
)
from healthroam.errors import InvalidInput
from healthroam.records import fulltext, hierarchy
from healthroam.records.deferred import Snapshot, deferred_on
from healthroam.records.model import StoredResource, stored_body
from healthroam.records.search import (
    Chain,
    Clause,
    Has,
    Include,
    Match,
    Missing,
    SearchRequest,
    SortKey,
    parse_date,
    parse_number,
    split_prefix,
    text_words,
)
from healthroam.records.search_params import (
    UCUM,
    CompositeIndex,
    DateIndex,
    IndexValue,
    NumberIndex,
    QuantityIndex,
    ReferenceIndex,
    StringIndex,
    TextIndex,
    TokenIndex,
    UriIndex,
    extract_index_values,
    normalize,
    parameters,
    ucum_canonical,
)

FAR_PAST = datetime(1, 1, 1, tzinfo=UTC)
FAR_FUTURE = datetime(9999, 12, 31, tzinfo=UTC)
_SKIPPED_PARAMS = frozenset({"_id", "_lastUpdated"})  # read from fhir_resources itself
SNAPSHOT_LIMIT = 10_000  # sorted searches remember at most this many results for paging
SNAPSHOT_TTL = timedelta(hours=1)
# Date index rows spanning at most this long are "short": they also satisfy
# ``low >= start - SHORT_SPAN`` whenever ``high >= start``, which bounds a date range's index
# scan from below (migration 0006_datespan). Longer and open-ended rows carry ``long_span``.
SHORT_SPAN = timedelta(days=32)
# The index tables whose rows carry their resource's ``last_updated`` (its lastUpdated, written
# by the writer with the rows: decisions 0039 and 0059), so that a page in the default order is
# read from them: every writer of index rows stamps these (``_index_batches``, bulk import).
STAMPED = (fhir_idx_token, fhir_idx_date)
Key = tuple[str, str]
# The record gate's condition: (resource type, id, institution_code, deleted) columns of a
# resource row -> true when the caller may see it (built in exchange/care/repository.py).
VisibleCondition = Callable[[Any, Any, Any, Any], ColumnElement[bool]]
COPY_THRESHOLD = 50  # rows from which PostgreSQL inserts use COPY


# The old index rows of one resource, from every index table, in one statement (one plan and
# one executor run instead of nine statements; the same rows deleted).
def _pg_unindex_sql(where: str) -> str:
    # Table names come from our metadata, never from input.
    parts = [f'd{n} AS (DELETE FROM "{t.name}" {where})' for n, t in enumerate(INDEX_TABLES)]  # noqa: S608
    return "WITH " + ", ".join(parts) + " SELECT 1"


_PG_UNINDEX = _pg_unindex_sql('WHERE "resource_type" = %(rtype)s AND "resource_id" = %(rid)s')
_UPDATE_CURRENT = (
    'UPDATE "fhir_resources" SET "version" = %s, "last_updated" = %s, "deleted" = %s, '
    '"content" = %s WHERE "resource_type" = %s AND "id" = %s'
)


def _cut(value: str | None, length: int) -> str | None:
    return value[:length] if value is not None and len(value) > length else value


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def index_rows(
    resource_type: str, resource_id: str, resource: dict[str, Any]
) -> dict[Table, list[dict[str, Any]]]:
    """The index table rows of one resource, by table; the ``last_updated`` of the token and
    date rows (the resource's: :data:`STAMPED`) is for the writer to add."""
    out: dict[Table, list[dict[str, Any]]] = {}
    owner = {"resource_type": resource_type, "resource_id": resource_id}
    for value in extract_index_values(resource):
        if value.param in _SKIPPED_PARAMS:
            continue
        row = _row(value)
        if row is not None:
            table, fields = row
            out.setdefault(table, []).append({**owner, "param": value.param, **fields})
    return out


def _row(value: IndexValue) -> tuple[Table, dict[str, Any]] | None:
    if isinstance(value, TokenIndex):
        return fhir_idx_token, {
            "system": _cut(value.system, 255),
            "code": _cut(value.code, 255),
            "text": _cut(value.text, 255),
            "type_system": _cut(value.type_system, 255),
            "type_code": _cut(value.type_code, 100),
        }
    if isinstance(value, StringIndex):
        return fhir_idx_string, {
            "value": _cut(value.value, 500),
            "normalized": _cut(value.normalized, 255),
        }
    if isinstance(value, DateIndex):
        low, high = value.low or FAR_PAST, value.high or FAR_FUTURE
        return fhir_idx_date, {"low": low, "high": high, "long_span": high - low > SHORT_SPAN}
    if isinstance(value, ReferenceIndex):
        return fhir_idx_reference, {
            "target_type": _cut(value.target_type, 64),
            "target_id": _cut(value.target_id, 64),
            "url": _cut(value.url, 500),
            "version": _cut(value.version, 64),
            "identifier_system": _cut(value.identifier_system, 255),
            "identifier_value": _cut(value.identifier_value, 255),
        }
    if isinstance(value, QuantityIndex):
        return fhir_idx_quantity, {
            "low": _float(value.low),
            "high": _float(value.high),
            "system": _cut(value.system, 255),
            "code": _cut(value.code, 100),
            "unit": _cut(value.unit, 100),
            "canonical_low": _float(value.canonical_low),
            "canonical_high": _float(value.canonical_high),
            "canonical_code": value.canonical_code,
        }
    if isinstance(value, UriIndex):
        return fhir_idx_uri, {"uri": _cut(value.uri, 500)}
    if isinstance(value, NumberIndex):
        return fhir_idx_number, {"value": float(value.value)}
    if isinstance(value, CompositeIndex):
        return fhir_idx_composite, _composite_row(value.components)
    if isinstance(value, TextIndex):
        return fhir_idx_text, {"body": value.body}
    return None  # PositionIndex (Location.near) is not indexed


def _composite_row(components: tuple[IndexValue, ...]) -> dict[str, Any]:
    row: dict[str, Any] = {
        k: None
        for k in (
            "c1_system",
            "c1_code",
            "c2_system",
            "c2_code",
            "c2_low",
            "c2_high",
            "c2_date_low",
            "c2_date_high",
            "c2_string",
            "c3_low",
            "c3_high",
        )
    }
    first = components[0]
    if isinstance(first, TokenIndex):
        row["c1_system"], row["c1_code"] = _cut(first.system, 255), _cut(first.code, 255)
    elif isinstance(first, ReferenceIndex):
        row["c1_system"], row["c1_code"] = first.target_type, first.target_id
    if len(components) > 1:
        second = components[1]
        if isinstance(second, TokenIndex):
            row["c2_system"], row["c2_code"] = _cut(second.system, 255), _cut(second.code, 255)
        elif isinstance(second, QuantityIndex):
            row["c2_system"], row["c2_code"] = second.system, second.code or second.unit
            row["c2_low"], row["c2_high"] = _float(second.low), _float(second.high)
        elif isinstance(second, NumberIndex):
            row["c2_low"] = row["c2_high"] = float(second.value)
        elif isinstance(second, DateIndex):
            row["c2_date_low"] = second.low or FAR_PAST
            row["c2_date_high"] = second.high or FAR_FUTURE
        elif isinstance(second, StringIndex):
            row["c2_string"] = _cut(second.normalized, 255)
    if len(components) > 2 and isinstance(components[2], NumberIndex):
        row["c3_low"] = row["c3_high"] = float(components[2].value)
    return row


@functools.cache  # built once per dialect: every search page and load selects them
def _raw_columns(postgres: bool) -> tuple[Any, ...]:
    """The current row with its document as JSON text (no decoding): ``body_tail``, the text
    the database stored with the row (without ``meta`` and its opening brace: decision
    0055), ``meta`` apart (merged with the served meta) and the two references that say
    whose data it is."""
    c = fhir_resources.c
    if postgres:
        parts = [
            "(fhir_resources.content -> 'meta')::text",
            "fhir_resources.content -> 'subject' ->> 'reference'",
            "fhir_resources.content -> 'patient' ->> 'reference'",
        ]
    else:
        parts = [
            "json_extract(fhir_resources.content, '$.meta')",
            "json_extract(fhir_resources.content, '$.subject.reference')",
            "json_extract(fhir_resources.content, '$.patient.reference')",
        ]
    names = ("meta", "subject_ref", "patient_ref")
    return (
        c.resource_type,
        c.id,
        c.version,
        c.last_updated,
        c.deleted,
        c.institution_code,
        c.body_tail,
        # Fixed SQL over our own column, no input in it.
        *(
            literal_column(sql, String()).label(name)
            for sql, name in zip(parts, names, strict=True)
        ),
    )


# A resource's reads by primary key (every update, the record's reads): built once.
_BY_KEY = (
    fhir_resources.c.resource_type == bindparam("rtype"),
    fhir_resources.c.id == bindparam("rid"),
)
# (Every column but body_tail, which SQLite would compute for nothing.)
_CURRENT = select(*(column for column in fhir_resources.c if column.name != "body_tail")).where(
    *_BY_KEY
)
# The same on PostgreSQL, sent over psycopg (ResourceRepository.current).
_PG_CURRENT = (
    "SELECT resource_type, id, version, last_updated, deleted, institution_code, content"
    " FROM fhir_resources WHERE resource_type = %s AND id = %s"
)
_PG_CURRENT_LOCKED = _PG_CURRENT + " FOR UPDATE"


class _CurrentRow(NamedTuple):
    """A row of fhir_resources as ``_CURRENT`` gives it (columns in the table's order)."""

    resource_type: str
    id: str
    version: int
    last_updated: datetime
    deleted: bool
    institution_code: str | None
    content: dict[str, Any] | None


_READ_POSTGRES = select(*_raw_columns(True)).where(*_BY_KEY)
_READ_SQLITE = select(*_raw_columns(False)).where(*_BY_KEY)
# The read statement sent on the driver's cursor, compiled once (db/raw.py): without
# SQLAlchemy's per-statement work (cache key, context, result wrapping), which was about a
# tenth of a FHIR read's server CPU (decision 0042).
_READ_POSTGRES_RAW = RawSelect(_READ_POSTGRES)


def _raw_stored(row: Any) -> StoredResource:
    """A resource served from its stored JSON text (see :class:`StoredResource`)."""
    patient: str | None = None
    if row.resource_type == "Patient":
        patient = f"Patient/{row.id}"
    else:
        for ref in (row.subject_ref, row.patient_ref):
            if isinstance(ref, str) and ref.startswith("Patient/"):
                patient = ref
                break
    return StoredResource(
        row.resource_type,
        row.id,
        row.version,
        row.last_updated,
        None,
        row.institution_code,
        raw="{" + row.body_tail,
        meta=json.loads(row.meta) if row.meta else None,
        patient=patient,
    )


# How each database matches _text/_content, found once per connection pool (one per database;
# an engine with execution options shares its pool): "postgresql" (tsvector), "fts5" (SQLite
# with the FTS5 table that migration 0006_searchgaps makes when the SQLite build has FTS5) or
# "like" (SQLite without it: LIKE over the bodies, a scan; decision 0029).
TEXT_ENGINES: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def text_engine(conn: Connection) -> str:
    found = TEXT_ENGINES.get(conn.engine.pool)
    if found is None:
        if conn.dialect.name == "postgresql":
            found = "postgresql"
        else:
            fts5 = conn.execute(
                text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :name"),
                {"name": FTS5_TABLE},
            ).first()
            found = "like" if fts5 is None else "fts5"
        TEXT_ENGINES[conn.engine.pool] = found
    return found


def _as_is(values: tuple[Any, ...]) -> tuple[Any, ...]:
    return values


class _ShapeStatement(NamedTuple):
    """A search shape's page statement: its SQL text (values as ``%(sv<n>)s``), the
    parameters the statement binds itself (resource type, parameter codes, LIMIT, a record
    gate's institution) and those it computes when it runs (a record gate's clock)."""

    sql: str
    defaults: dict[str, Any]
    computed: tuple[tuple[str, Callable[[], Any]], ...] = ()


# Search shapes' page statements (ResourceRepository.find_shaped), per process, oldest first.
_SHAPES: dict[Any, _ShapeStatement] = {}
SHAPES_KEPT = 512
_SHAPE_NAMES = tuple(f"sv{n}" for n in range(1000))
# A page's rows as _raw_columns(True) names them (what _raw_stored reads).
_PageRow: Any = NamedTuple(  # type: ignore[misc]
    "_PageRow",
    [
        (name, Any)
        for name in (
            "resource_type",
            "id",
            "version",
            "last_updated",
            "deleted",
            "institution_code",
            "body_tail",
            "meta",
            "subject_ref",
            "patient_ref",
        )
    ],
)


# The token rows a one-code page walks (ResourceRepository._token_page): one alias, built once.
_PAGE_TOKEN = fhir_idx_token.alias("page_token")
# The date rows a short window's page reads (ResourceRepository._window_page).
_PAGE_DATE = fhir_idx_date.alias("page_date")


class ResourceRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.postgres = conn.dialect.name == "postgresql"
        # The last search condition made, and the same without its one code clause, for a
        # page read from the token rows (:meth:`_token_page`).
        self._without_code: tuple[ColumnElement[bool], ColumnElement[bool]] | None = None
        # Likewise without its one short date window, for a page read from the date rows
        # (:meth:`_window_page`).
        self._without_window: tuple[ColumnElement[bool], ColumnElement[bool]] | None = None
        # How the page statement binds the request's values: the last condition's compiler's
        # (named parameters for a search shape's statement).
        self._bind: Callable[[tuple[Any, ...]], tuple[Any, ...]] = _as_is

    # --- writes -------------------------------------------------------------------------------

    def create(
        self,
        resource_type: str,
        resource_id: str,
        content: dict[str, Any],
        now: datetime,
        institution_code: str | None,
        method: str = "POST",
    ) -> StoredResource:
        """Insert a resource that has never existed (version 1) with its index rows."""
        resources = [(resource_type, resource_id, content)]
        return self.create_many(resources, now, institution_code, method)[0]

    def create_many(
        self,
        resources: Sequence[tuple[str, str, dict[str, Any]]],
        now: datetime,
        institution_code: str | None,
        method: str = "POST",
    ) -> list[StoredResource]:
        """Insert many never-existing resources (version 1) with their index rows: one
        multi-row insert per table (bulk import, HL7 v2 messages). Returns them as stored."""
        if not resources:
            return []
        now = _millis(now)
        current_rows: list[dict[str, Any]] = []
        version_rows: list[dict[str, Any]] = []
        for resource_type, resource_id, content in resources:
            body = stored_body(content)
            current_rows.append(
                {
                    "resource_type": resource_type,
                    "id": resource_id,
                    "version": 1,
                    "last_updated": now,
                    "deleted": False,
                    "institution_code": institution_code,
                    "content": body,
                }
            )
            version_rows.append(
                {
                    "resource_type": resource_type,
                    "id": resource_id,
                    "version": 1,
                    "last_updated": now,
                    "deleted": False,
                    "method": method,
                    "content": body,
                }
            )
        deferred = deferred_on(self.conn) if self.postgres else None
        if deferred is not None:  # the current rows now; history and index rows later
            self._write([(fhir_resources, current_rows)])
            for (rtype, rid, content), version_row in zip(resources, version_rows, strict=True):
                deferred.created(
                    (rtype, rid),
                    version_row,
                    self._index_batches([(rtype, rid, content)], now),
                    Snapshot(False, institution_code, version_row["content"], now),
                )
        else:
            self._write(
                [
                    (fhir_resources, current_rows),
                    (fhir_resource_versions, version_rows),
                    *self._index_batches(resources, now),
                ]
            )
        return [
            StoredResource(
                row["resource_type"], row["id"], 1, now, row["content"], institution_code
            )
            for row in current_rows
        ]

    def replace(
        self,
        current: Any,
        content: dict[str, Any] | None,
        now: datetime,
        method: str,
    ) -> StoredResource:
        """A new version of an existing row (``content`` None: a deletion)."""
        rtype, rid = current.resource_type, current.id
        version = current.version + 1
        body = None if content is None else stored_body(content)
        # Served with millisecond precision, so stored so too (and each version is later).
        now = max(_millis(now), _aware(current.last_updated) + timedelta(milliseconds=1))
        deferred = deferred_on(self.conn) if self.postgres else None
        if deferred is not None:  # the current row now; history and index rows later
            self._write(
                [],
                before=[
                    (
                        _UPDATE_CURRENT,
                        [
                            version,
                            now,
                            content is None,
                            None if body is None else Jsonb(body),
                            rtype,
                            rid,
                        ],
                    )
                ],
            )
            deferred.replaced(
                (rtype, rid),
                {
                    "resource_type": rtype,
                    "id": rid,
                    "version": version,
                    "last_updated": now,
                    "deleted": content is None,
                    "method": method,
                    "content": body,
                },
                self._index_batches([(rtype, rid, content)], now) if content is not None else [],
                Snapshot(content is None, current.institution_code, body, now),
            )
            return StoredResource(rtype, rid, version, now, body or {})
        if self.postgres:
            # The row, its version, the old index rows' deletion and the new ones in one
            # pipeline (one round trip, where each statement waited for the server).
            document = None if body is None else Jsonb(body)
            key = [rtype, rid]
            before: list[tuple[str, Any]] = [
                (_UPDATE_CURRENT, [version, now, content is None, document, *key]),
                (
                    'INSERT INTO "fhir_resource_versions" ("resource_type", "id", "version", '
                    '"last_updated", "deleted", "method", "content") '
                    "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    [*key, version, now, content is None, method, document],
                ),
                (_PG_UNINDEX, {"rtype": rtype, "rid": rid}),
            ]
            batches = (
                self._index_batches([(rtype, rid, content)], now) if content is not None else []
            )
            self._write(batches, before=before)
            return StoredResource(rtype, rid, version, now, body or {})
        self.conn.execute(
            update(fhir_resources)
            .where(fhir_resources.c.resource_type == rtype, fhir_resources.c.id == rid)
            .values(version=version, last_updated=now, deleted=content is None, content=body)
        )
        self._version(rtype, rid, version, now, content is None, method, body)
        self.unindex(rtype, rid)
        if content is not None:
            self.index_many([(rtype, rid, content)], now)
        return StoredResource(rtype, rid, version, now, body or {})

    def _version(
        self,
        resource_type: str,
        resource_id: str,
        version: int,
        now: datetime,
        deleted: bool,
        method: str,
        body: dict[str, Any] | None,
    ) -> None:
        self.conn.execute(
            insert(fhir_resource_versions).values(
                resource_type=resource_type,
                id=resource_id,
                version=version,
                last_updated=now,
                deleted=deleted,
                method=method,
                content=body,
            )
        )

    def index_many(
        self, resources: Iterable[tuple[str, str, dict[str, Any]]], now: datetime
    ) -> None:
        """Write the index rows of several resources, one multi-row insert per table;
        ``now``: their ``lastUpdated``."""
        deferred = deferred_on(self.conn) if self.postgres else None
        if deferred:  # rows deferred for the same keys go first (records/deferred.py)
            deferred.flush(self)
        self._write(self._index_batches(resources, now))

    @staticmethod
    def _index_batches(
        resources: Iterable[tuple[str, str, dict[str, Any]]],
        now: datetime,
    ) -> list[tuple[Table, list[dict[str, Any]]]]:
        """The index rows by table, token and date rows stamped with the resources'
        ``lastUpdated`` (:data:`STAMPED`)."""
        by_table: dict[Table, list[dict[str, Any]]] = {}
        for rtype, rid, resource in resources:
            full = {**resource, "resourceType": rtype, "id": rid}
            for table, rows in index_rows(rtype, rid, full).items():
                if table in STAMPED:
                    for row in rows:
                        row["last_updated"] = now
                by_table.setdefault(table, []).extend(rows)
        return list(by_table.items())

    def write_now(
        self,
        batches: Sequence[tuple[Table, list[dict[str, Any]]]],
        *,
        before: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """:meth:`_write`, for the deferred rows' flush (records/deferred.py)."""
        self._write(batches, before=before)

    def _write(
        self,
        batches: Sequence[tuple[Table, list[dict[str, Any]]]],
        *,
        before: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """Insert rows into several tables (each table's rows have the same keys).

        On PostgreSQL, large sets go through ``COPY`` and the small ones are sent together in
        one pipeline (one round trip for a resource, its version and all its index rows,
        where an executemany per table waited for the server each time), after the
        statements ``before`` (PostgreSQL only: SQL text and parameters), in that pipeline.
        The rows written are the same either way; all of it runs in the caller's
        transaction."""
        batches = [(table, rows) for table, rows in batches if rows]
        if not self.postgres:
            for table, rows in batches:
                self.conn.execute(insert(table), rows)
            return
        try:
            self._write_postgres(batches, before)
        except psycopg.IntegrityError as error:
            # Raw psycopg bypasses SQLAlchemy's wrapping; callers (conditional creates, the
            # HL7 handlers' concurrent first writes) catch SQLAlchemy's IntegrityError.
            raise IntegrityError("INSERT (pipelined)", None, error) from error
        except psycopg.Error as error:  # a database failure, as SQLAlchemy would raise it
            raise DBAPIError("(pipelined)", None, error) from error

    def _write_postgres(
        self,
        batches: Sequence[tuple[Table, list[dict[str, Any]]]],
        before: Sequence[tuple[str, Any]] = (),
    ) -> None:
        raw = self.conn.connection.dbapi_connection
        assert raw is not None
        small = [(t, rows) for t, rows in batches if len(rows) < COPY_THRESHOLD]
        large = [(t, rows) for t, rows in batches if len(rows) >= COPY_THRESHOLD]
        if large and before:  # the statements before, then COPY, then the rest
            with raw.pipeline():
                cursor = raw.cursor()
                for statement, params in before:
                    cursor.execute(statement, params)
            before = ()
        for table, rows in large:
            self._copy(raw, table, rows)
        if not small and not before:
            return
        with raw.pipeline():
            cursor = raw.cursor()
            for statement, params in before:
                cursor.execute(statement, params)
            for table, rows in small:
                many = insert_statement(table, rows) if len(rows) > 1 else None
                if many is not None:  # one statement to plan and run, not one per row
                    cursor.execute(*many)
                    continue
                columns = list(rows[0])
                names = ", ".join(f'"{c}"' for c in columns)
                marks = ", ".join(["%s"] * len(columns))
                documents = {c for c in columns if isinstance(table.c[c].type, (JSON, JSONB))}
                cursor.executemany(
                    # Table and column names come from our metadata, never from input.
                    f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})',  # noqa: S608
                    [
                        [
                            Jsonb(row[c]) if c in documents and row[c] is not None else row[c]
                            for c in columns
                        ]
                        for row in rows
                    ],
                )

    @staticmethod
    def _copy(raw: Any, table: Table, rows: list[dict[str, Any]]) -> None:
        columns = list(rows[0])
        documents = [i for i, c in enumerate(columns) if isinstance(table.c[c].type, (JSON, JSONB))]
        names = ", ".join(f'"{c}"' for c in columns)
        with raw.cursor().copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
            for row in rows:
                values = [row[c] for c in columns]
                for i in documents:
                    if values[i] is not None:
                        values[i] = json.dumps(values[i], ensure_ascii=False, separators=(",", ":"))
                copy.write_row(values)

    def unindex(self, resource_type: str, resource_id: str) -> None:
        for table in INDEX_TABLES:
            self.conn.execute(
                delete(table).where(
                    table.c.resource_type == resource_type, table.c.resource_id == resource_id
                )
            )

    # --- reads --------------------------------------------------------------------------------

    def current(self, resource_type: str, resource_id: str, *, lock: bool = False) -> Any:
        """The current row (deleted or not), locked for update on PostgreSQL when asked.

        On PostgreSQL through psycopg (db/raw.py): every new version of a resource reads it
        (an HL7 A08, A01 or A03 does), and SQLAlchemy's work per execution was most of the
        statement's client CPU. The current rows are never deferred (records/deferred.py)."""
        if not self.postgres:
            return self.conn.execute(_CURRENT, {"rtype": resource_type, "rid": resource_id}).first()
        with sqlalchemy_errors("SELECT the current row"):
            cursor = dbapi(self.conn).cursor()
            cursor.execute(
                _PG_CURRENT_LOCKED if lock else _PG_CURRENT, (resource_type, resource_id)
            )
            row = cursor.fetchone()
        return None if row is None else _CurrentRow._make(row)

    def read(
        self, resource_type: str, resource_id: str, *, first: bool = False
    ) -> tuple[StoredResource | None, bool]:
        """The current version, and whether the resource exists but is deleted. ``first``:
        the transaction's first statement, sent outside it when nothing was sent yet
        (PostgreSQL, :func:`statements_alone`: the same rows, no ``BEGIN`` round trip)."""
        keys = {"rtype": resource_type, "rid": resource_id}
        row: Any
        if self.postgres and deferred_on(self.conn) is None:
            if first:
                with statements_alone(self.conn):
                    row = _READ_POSTGRES_RAW.first(self.conn, keys)
            else:
                row = _READ_POSTGRES_RAW.first(self.conn, keys)
        else:
            query = _READ_POSTGRES if self.postgres else _READ_SQLITE
            row = self.conn.execute(query, keys).first()
        if row is None:
            return None, False
        if row.deleted:
            return None, True
        return _raw_stored(row), False

    def vread(self, resource_type: str, resource_id: str, version: int) -> Any:
        v = fhir_resource_versions.c
        return self.conn.execute(
            select(fhir_resource_versions).where(
                v.resource_type == resource_type, v.id == resource_id, v.version == version
            )
        ).first()

    def load(self, keys: Sequence[Key]) -> list[StoredResource]:
        """Current, not deleted resources by key, in the order asked."""
        if not keys:
            return []
        found: dict[Key, StoredResource] = {}
        c = fhir_resources.c
        columns = _raw_columns(self.postgres)
        for condition in key_conditions(self.postgres, c.resource_type, c.id, keys):
            rows = self.conn.execute(select(*columns).where(condition, c.deleted == false()))
            for row in rows.all():  # one fetchall, not a fetchone per row
                found[(row.resource_type, row.id)] = _raw_stored(row)
        return [found[k] for k in keys if k in found]

    def history(
        self,
        resource_type: str | None,
        resource_id: str | None,
        *,
        since: datetime | None,
        at: datetime | None,
        before: tuple[datetime, str, str, int] | None,
        count: int,
        visible: VisibleCondition | None = None,
    ) -> list[Row[Any]]:
        """Versions newest first; ``at``: the version current at that instant per resource;
        ``visible``: only versions of resources the caller may see (the record gate)."""
        v = fhir_resource_versions.c
        query = select(fhir_resource_versions)
        if visible is not None:
            query = query.where(_visible_exists(visible, v.resource_type, v.id))
        if resource_type is not None:
            query = query.where(v.resource_type == resource_type)
        if resource_id is not None:
            query = query.where(v.id == resource_id)
        if since is not None:
            query = query.where(v.last_updated >= since)
        if at is not None:
            newer = fhir_resource_versions.alias("newer")
            query = query.where(
                v.last_updated <= at,
                ~select(literal(1))
                .where(
                    newer.c.resource_type == v.resource_type,
                    newer.c.id == v.id,
                    newer.c.version > v.version,
                    newer.c.last_updated <= at,
                )
                .exists(),
            )
        if before is not None:
            moment, rtype, rid, version = before
            query = query.where(
                tuple_(v.last_updated, v.resource_type, v.id, v.version)
                < tuple_(literal(moment), literal(rtype), literal(rid), literal(version))
            )
        query = query.order_by(
            v.last_updated.desc(), v.resource_type.desc(), v.id.desc(), v.version.desc()
        ).limit(count)
        return list(self.conn.execute(query))

    # --- search -------------------------------------------------------------------------------

    def search_condition(
        self,
        request: SearchRequest,
        base_url: str,
        visible: VisibleCondition | None = None,
        *,
        compiler: _Compiler | None = None,
    ) -> ColumnElement[bool]:
        """``visible``: the record gate's condition, on the matches and inside chains and
        ``_has`` (a hidden resource must not decide what matches either). ``compiler``: a
        named one for a search shape's statement (:meth:`find_shaped`)."""
        r = fhir_resources.c
        conditions: list[ColumnElement[bool]] = [
            r.resource_type == request.resource_type,
            r.deleted == false(),
        ]
        if visible is not None:
            conditions.append(visible(r.resource_type, r.id, r.institution_code, r.deleted))
        if compiler is None:
            compiler = _Compiler(base_url, visible, self.postgres, text_engine(self.conn))
        self._bind = compiler.bind
        clauses, bounds = _date_bounds(request.clauses)
        for clause in clauses:
            conditions.append(compiler.clause(request.resource_type, r.id, clause, top=True))
        for code, matches in bounds.items():
            conditions.append(compiler.date_range(request.resource_type, r.id, code, matches))
        condition = and_(*conditions)
        if _page_token(request.clauses) is not None:
            # The clause is then the join to the token rows itself: a second copy as EXISTS
            # would let PostgreSQL (whose estimate for one code is often one row) drive from
            # it and sort every match again.
            self._without_code = (condition, and_(*conditions[:-1]))
        if _page_window(request.clauses) is not None:
            # Likewise the window's EXISTS: the page is read from the date rows themselves.
            self._without_window = (condition, and_(*conditions[:-1]))
        return condition

    def count(self, condition: ColumnElement[bool]) -> int:
        return int(
            self.conn.execute(
                select(func.count()).select_from(fhir_resources).where(condition)
            ).scalar_one()
        )

    def find(self, request: SearchRequest, condition: ColumnElement[bool], limit: int) -> list[Key]:
        """Keys of matches in the request's order (default: lastUpdated, id ascending)."""
        r = fhir_resources.c
        query = self._ordered(select(r.resource_type, r.id), request, condition, limit)
        return [(row[0], row[1]) for row in self.conn.execute(query)]

    def find_loaded(
        self, request: SearchRequest, condition: ColumnElement[bool], limit: int
    ) -> list[StoredResource]:
        """:meth:`find` then :meth:`load` in one statement (one round trip) for the default
        order (lastUpdated, id): the page's keys in an ``IN`` subquery, so PostgreSQL cuts
        the stored texts of the page's rows only, not of every match it sorts (a subquery
        joined in cost the server more to build: its columns are proxied)."""
        if request.sort:
            raise ValueError("find_loaded serves the default order only")
        query = self._page_query(request, condition, limit)
        return [_raw_stored(row) for row in self.conn.execute(query).all()]

    def _page_query(
        self, request: SearchRequest, condition: ColumnElement[bool], limit: int
    ) -> Select[Any]:
        r = fhir_resources.c
        # Uncorrelated: its fhir_resources is its own, the search's EXISTS refer to it.
        page = self._ordered(select(r.resource_type, r.id), request, condition, limit)
        return (
            select(*_raw_columns(self.postgres))
            .where(tuple_(r.resource_type, r.id).in_(page.correlate(None)))
            .order_by(r.last_updated, r.id)
        )

    def find_shaped(
        self,
        request: SearchRequest,
        base_url: str,
        visible: VisibleCondition | None,
        limit: int,
    ) -> list[StoredResource] | None:
        """:meth:`find_loaded` by the statement of the request's search shape (PostgreSQL):
        the SQL text made once per process for requests that differ only in their values
        (:func:`search_shape`), their values bound to it and sent over psycopg, without
        building, keying and compiling the statement again (decision 0054). A record gate's
        condition takes part when it names its own part of the key (``shape_key``, decision
        0065: a care provider's view across residents). None when the request has no shape
        here (the caller takes the general path): SQLite, any other record gate condition,
        deferred rows pending on the connection, sorted or snapshot pages, or a clause or
        value form :func:`search_shape` does not know."""
        gate_key = None if visible is None else getattr(visible, "shape_key", None)
        if visible is not None and gate_key is None:
            return None
        if not self.postgres or deferred_on(self.conn) is not None:
            return None
        shape = search_shape(request, base_url, limit)
        if shape is None:
            return None
        key, values = shape
        if len(values) > len(_SHAPE_NAMES):
            return None  # hundreds of ORed values: the general path
        if gate_key is not None:
            key = (key, gate_key)
        statement = _SHAPES.get(key)
        if statement is None:
            statement = self._shape_statement(request, base_url, limit, values, visible)
            if statement is None:
                return None
            if len(_SHAPES) >= SHAPES_KEPT:
                # The oldest (another thread may change the dict meanwhile: then none).
                with contextlib.suppress(RuntimeError, KeyError, StopIteration):
                    del _SHAPES[next(iter(_SHAPES))]
            _SHAPES[key] = statement
        params = dict(statement.defaults)
        params.update(zip(_SHAPE_NAMES[: len(values)], values, strict=True))
        for name, compute in statement.computed:
            params[name] = compute()
        with sqlalchemy_errors("SELECT a search page"):
            cursor = dbapi(self.conn).cursor()
            cursor.execute(statement.sql, params)
            rows = cursor.fetchall()
        return [_raw_stored(_PageRow._make(row)) for row in rows]

    def _shape_statement(
        self,
        request: SearchRequest,
        base_url: str,
        limit: int,
        values: list[Any],
        visible: VisibleCondition | None = None,
    ) -> _ShapeStatement | None:
        """The page statement of the request's shape, built by the general code with every
        value as a named parameter and compiled for this connection's dialect. None (not kept)
        when its parameters are not exactly the shape's values in order, or it needs a
        parameter expanded at execution. A parameter computed when a statement runs (the
        record gate's clock, a ``bindparam`` with ``callable_``) is computed again for each
        request, never kept from the first."""
        compiler = _Compiler(base_url, visible, True, "postgresql", named=True)
        condition = self.search_condition(request, base_url, visible, compiler=compiler)
        query = self._page_query(request, condition, limit)
        self._bind = _as_is
        if compiler.bound != values:  # pragma: no cover - search_shape out of step
            return None
        compiled = query.compile(dialect=self.conn.dialect)
        if compiled.positiontup or compiled.literal_execute_params or compiled.post_compile_params:
            return None  # pragma: no cover - not made by the clauses search_shape takes
        names = set(_SHAPE_NAMES[: len(values)])
        computed = tuple(
            (name, bind.callable)
            for name, bind in compiled.binds.items()
            if bind.callable is not None and name not in names
        )
        names.update(name for name, _ in computed)
        defaults = {k: v for k, v in compiled.params.items() if k not in names}
        return _ShapeStatement(str(compiled), defaults, computed)

    def _ordered(
        self,
        query: Select[Any],
        request: SearchRequest,
        condition: ColumnElement[bool],
        limit: int,
    ) -> Select[Any]:
        r = fhir_resources.c
        driving = None if request.sort else _page_token(request.clauses)
        if driving is not None and self._without_code and self._without_code[0] is condition:
            return self._token_page(request, self._without_code[1], limit, *driving)
        window = None if request.sort else _page_window(request.clauses)
        if window is not None and self._without_window and self._without_window[0] is condition:
            return self._window_page(request, self._without_window[1], limit, *window)
        query = query.where(condition)
        if request.cursor is not None:
            after, at, rid = self._bind(_cursor_values(request.cursor))
            query = query.where(or_(r.last_updated > after, and_(r.last_updated == at, r.id > rid)))
        if not request.sort and _short_window(request.clauses):
            # Every match first, then the page: the matches of a short date window are few
            # (they began in a bounded stretch of the date index), so PostgreSQL must not walk
            # the store in last_updated order on a guess of how soon the page fills (its
            # estimate of the window's rows is far too high; decision 0039). A materialised
            # CTE is planned for all its rows, the page then sorted from them. (SQLite, whose
            # planner does not make that walk, gets the plain CTE: MATERIALIZED needs 3.35.)
            columns = [*query.selected_columns, r.last_updated]
            found = query.with_only_columns(*columns).cte("window_matches")
            if self.postgres:
                found = found.prefix_with("MATERIALIZED")
            return (
                select(found.c.resource_type, found.c.id)
                .order_by(found.c.last_updated, found.c.id)
                .limit(limit)
            )
        order: list[Any] = []
        for key in request.sort:
            order.append(_sort_expression(request.resource_type, key))
        order += [r.last_updated, r.id]
        return query.order_by(*order).limit(limit)

    def _token_page(
        self,
        request: SearchRequest,
        rest: ColumnElement[bool],
        limit: int,
        param: str,
        value: str,
    ) -> Select[Any]:
        """The page's keys, in the default order, of a search on one system|code: read from
        the code's token rows in ``ix_fhir_idx_token_system_code_updated`` order (lastUpdated,
        resource id: the resource's, written with the row), each resource checked against the
        rest of the condition (type, not deleted, the record gate), so the walk stops once the
        page is full instead of sorting every match (decision 0039). ``DISTINCT``: a resource
        may carry the code twice."""
        r = fhir_resources.c
        t = _PAGE_TOKEN
        form, values = _token_parts(value)
        conds = [
            t.c.resource_type == request.resource_type,
            t.c.param == param,
            _token_sql(t.c.system, t.c.code, form, self._bind(values)),
            rest,
        ]
        if request.cursor is not None:
            at, after, rid = self._bind(_cursor_values(request.cursor))
            conds += [
                t.c.last_updated >= at,
                or_(t.c.last_updated > after, t.c.resource_id > rid),
            ]
        joined = t.join(
            fhir_resources, and_(r.resource_type == t.c.resource_type, r.id == t.c.resource_id)
        )
        page = (
            select(t.c.resource_type, t.c.resource_id.label("id"), t.c.last_updated)
            .distinct()
            .select_from(joined)
            .where(*conds)
            .order_by(t.c.last_updated, t.c.resource_id)
            .limit(limit)
            .subquery("token_page")
        )
        return select(page.c.resource_type, page.c.id).order_by(page.c.last_updated, page.c.id)

    def _window_page(
        self,
        request: SearchRequest,
        rest: ColumnElement[bool],
        limit: int,
        param: str,
        matches: Sequence[Match],
    ) -> Select[Any]:
        """The page's keys, in the default order, of a search on one short date window alone
        (``date=ge..&date=lt..``, at most SHORT_SPAN): the window's date rows with their
        resources' lastUpdated (written with the rows), read from
        ``ix_fhir_idx_date_span_updated`` alone - the short rows from ``low >= start -
        SHORT_SPAN``, the long ones apart (decision 0031), each an index-only range scan -
        sorted by (lastUpdated, resource id), and only the page's resources then checked
        against the rest of the condition (type, not deleted, the record gate) by primary key,
        instead of every match's resource row read to sort them (decision 0059): the join
        walks the sorted entries and stops once the page is full, so a resource the gate
        hides never shortens a page. ``DISTINCT``: a resource may have two rows. (SQLite
        runs the same statement but probes every match before its sort.)"""
        r = fhir_resources.c
        d = _PAGE_DATE

        def rows(long_span: bool) -> Select[Any]:
            conds = [
                d.c.resource_type == request.resource_type,
                d.c.param == param,
                d.c.long_span == (true() if long_span else false()),
            ]
            for m in matches:  # the same values as the condition's (_date_parts)
                prefix, values = _date_parts(m.values[0], m.code)
                bound = self._bind(values)
                conds.append(_interval_sql(prefix, bound, d.c.low, d.c.high))
                if prefix in _FLOORED and not long_span:
                    conds.append(d.c.low >= bound[-1])
            return select(d.c.resource_id, d.c.last_updated).where(*conds)

        found = union_all(rows(False), rows(True)).subquery("window_rows")
        ordered = select(found.c.resource_id, found.c.last_updated).distinct()
        if request.cursor is not None:
            after, at, rid = self._bind(_cursor_values(request.cursor))
            ordered = ordered.where(
                or_(
                    found.c.last_updated > after,
                    and_(found.c.last_updated == at, found.c.resource_id > rid),
                )
            )
        # In page order: a subquery's order is known to the query around it (a CTE's is
        # not), so the join below walks it and stops once the page is full.
        window = ordered.order_by(found.c.last_updated, found.c.resource_id).subquery("window")
        page = (
            select(r.resource_type, window.c.resource_id.label("id"), window.c.last_updated)
            .select_from(window.join(fhir_resources, r.id == window.c.resource_id))
            .where(rest)
            .order_by(window.c.last_updated, window.c.resource_id)
            .limit(limit)
            .subquery("window_page")
        )
        return select(page.c.resource_type, page.c.id).order_by(page.c.last_updated, page.c.id)

    def cursor_of(self, key: Key) -> tuple[datetime, str] | None:
        row = self.current(*key)
        return None if row is None else (_aware(row.last_updated), row.id)

    def save_snapshot(self, keys: Sequence[Key], total: int, now: datetime) -> str:
        """Store a sorted search's result list; later pages read from it."""
        search_id = str(uuid.uuid4())
        self.conn.execute(
            delete(fhir_search_results).where(fhir_search_results.c.created_at < now - SNAPSHOT_TTL)
        )
        self.conn.execute(
            delete(fhir_search_totals).where(fhir_search_totals.c.created_at < now - SNAPSHOT_TTL)
        )
        self.conn.execute(
            insert(fhir_search_results),
            [
                {
                    "search_id": search_id,
                    "position": i,
                    "resource_type": k[0],
                    "resource_id": k[1],
                    "created_at": now,
                }
                for i, k in enumerate(keys)
            ],
        )
        self.conn.execute(
            insert(fhir_search_totals).values(search_id=search_id, total=total, created_at=now)
        )
        return search_id

    def snapshot_page(self, search_id: str, offset: int, count: int) -> tuple[list[Key], int]:
        s = fhir_search_results.c
        total = self.conn.execute(
            select(fhir_search_totals.c.total).where(fhir_search_totals.c.search_id == search_id)
        ).scalar()
        if total is None:
            raise InvalidInput(
                "this search's result list has expired; run the search again",
                expression="_snapshot",
            )
        rows = self.conn.execute(
            select(s.resource_type, s.resource_id)
            .where(s.search_id == search_id, s.position >= offset)
            .order_by(s.position)
            .limit(count)
        )
        return [(row[0], row[1]) for row in rows], int(total)

    def included(self, keys: Sequence[Key], includes: Sequence[Include]) -> list[Key]:
        """Targets of the references named by ``_include`` from the given resources."""
        if not keys or not includes:
            return []
        ref = fhir_idx_reference.c
        out: list[Key] = []
        for inc in includes:
            query = select(ref.target_type, ref.target_id).where(
                tuple_(ref.resource_type, ref.resource_id).in_(list(keys)),
                ref.target_id.is_not(None),
                ref.target_type.is_not(None),
            )
            if inc.source_type != "*":
                query = query.where(ref.resource_type == inc.source_type)
            if inc.code != "*":
                query = query.where(ref.param == inc.code)
            if inc.target_type is not None:
                query = query.where(ref.target_type == inc.target_type)
            out.extend((row[0], row[1]) for row in self.conn.execute(query.distinct()))
        return out

    def revincluded(self, keys: Sequence[Key], includes: Sequence[Include]) -> list[Key]:
        """Resources whose named reference parameter points at one of the given resources."""
        if not keys or not includes:
            return []
        ref = fhir_idx_reference.c
        out: list[Key] = []
        for inc in includes:
            query = select(ref.resource_type, ref.resource_id).where(
                tuple_(ref.target_type, ref.target_id).in_(list(keys))
            )
            if inc.source_type != "*":
                query = query.where(ref.resource_type == inc.source_type)
            if inc.code != "*":
                query = query.where(ref.param == inc.code)
            out.extend((row[0], row[1]) for row in self.conn.execute(query.distinct()))
        return out

    def visible_keys(self, keys: Sequence[Key], visible: VisibleCondition) -> list[Key]:
        """The keys, in order, of those resources the caller may see."""
        c = fhir_resources.c
        found: set[Key] = set()
        for condition in key_conditions(self.postgres, c.resource_type, c.id, keys):
            rows = self.conn.execute(
                select(c.resource_type, c.id).where(
                    condition, visible(c.resource_type, c.id, c.institution_code, c.deleted)
                )
            )
            found.update((row[0], row[1]) for row in rows)
        return [k for k in keys if k in found]

    def pointing_at(self, targets: Sequence[Key]) -> list[Key]:
        """Every resource with any reference to one of ``targets`` (compartments)."""
        if not targets:
            return []
        ref = fhir_idx_reference.c
        query = (
            select(ref.resource_type, ref.resource_id)
            .where(tuple_(ref.target_type, ref.target_id).in_(list(targets)))
            .distinct()
        )
        return [(row[0], row[1]) for row in self.conn.execute(query)]


# ORed conditions beyond this many are nested in a balanced tree of parenthesised halves:
# SQLite parses ``a OR b OR c ...`` into a tree as deep as the list and refuses a statement
# deeper than 1,000 ("Expression tree is too large"), which about 600 values of one search
# parameter reached (a 500). PostgreSQL flattens the groups again when planning.
_FLAT_OR = 64


class _Parenthesised(ColumnElement[bool]):
    """A condition in parentheses that ``or_`` keeps as one operand (it flattens an ORed
    ``Grouping``, whose attributes are its element's)."""

    inherit_cache = True
    type = Boolean()
    _traverse_internals = [("element", InternalTraversal.dp_clauseelement)]  # noqa: RUF012

    def __init__(self, element: ColumnElement[bool]) -> None:
        self.element = element


@compiles(_Parenthesised)
def _compile_parenthesised(element: _Parenthesised, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.element, **kw)})"


def any_of(conditions: Sequence[ColumnElement[bool]]) -> ColumnElement[bool]:
    """``or_(*conditions)``, nested in balanced halves when the list is long."""
    if len(conditions) <= _FLAT_OR:
        return or_(*conditions)
    half = len(conditions) // 2
    return or_(_Parenthesised(any_of(conditions[:half])), _Parenthesised(any_of(conditions[half:])))


def key_conditions(
    postgres: bool,
    type_column: KeyedColumnElement[Any],
    id_column: KeyedColumnElement[Any],
    keys: Sequence[Key],
) -> list[ColumnElement[bool]]:
    """WHERE conditions (one query each) selecting rows by (type, id) keys. PostgreSQL gets
    one condition with an id array per type (``id = ANY(%s)``: one parameter, planned as an
    index lookup), where a row-value IN list of hundreds of pairs was slow to convert, to plan
    and to run; SQLite gets row-value IN lists of 500 keys."""
    if not keys:
        return []
    if postgres:
        by_type: dict[str, list[str]] = {}
        for resource_type, resource_id in keys:
            by_type.setdefault(resource_type, []).append(resource_id)
        return [
            or_(
                *(
                    and_(
                        type_column == resource_type,
                        id_column == any_(literal(ids, ARRAY(String()))),
                    )
                    for resource_type, ids in by_type.items()
                )
            )
        ]
    return [
        tuple_(type_column, id_column).in_(list(keys[start : start + 500]))
        for start in range(0, len(keys), 500)
    ]


def millis(moment: datetime) -> datetime:
    """An instant cut to whole milliseconds (the precision the store serves)."""
    return _millis(moment)


def _millis(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


_SORT_COLUMNS = {
    "string": (fhir_idx_string, "normalized", "normalized"),
    "date": (fhir_idx_date, "low", "high"),
    "token": (fhir_idx_token, "code", "code"),
    "number": (fhir_idx_number, "value", "value"),
    "quantity": (fhir_idx_quantity, "low", "high"),
    "reference": (fhir_idx_reference, "target_id", "target_id"),
    "uri": (fhir_idx_uri, "uri", "uri"),
}


def _sort_expression(resource_type: str, key: SortKey) -> Any:
    r = fhir_resources.c
    if key.kind == "_id":
        return r.id.desc() if key.descending else r.id
    if key.kind == "_lastUpdated":
        return r.last_updated.desc() if key.descending else r.last_updated
    table, low, high = _SORT_COLUMNS[key.kind]
    idx = table.alias()
    column = idx.c[high] if key.descending else idx.c[low]
    value = (
        select(func.max(column) if key.descending else func.min(column))
        .where(
            idx.c.resource_type == resource_type,
            idx.c.resource_id == r.id,
            idx.c.param == key.code,
        )
        .scalar_subquery()
    )
    return value.desc().nulls_last() if key.descending else value.asc().nulls_last()


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _visible_exists(visible: VisibleCondition, rtype: Any, rid: Any) -> ColumnElement[bool]:
    """The resource (type, id) exists and the caller may see it."""
    x = fhir_resources.alias("seen")
    return (
        select(literal(1))
        .where(
            x.c.resource_type == rtype,
            x.c.id == rid,
            visible(x.c.resource_type, x.c.id, x.c.institution_code, x.c.deleted),
        )
        .exists()
    )


_FTS5_ROWS = sql_table(FTS5_TABLE, sql_column("rowid"), sql_column(FTS5_TABLE))

# _Compiler.alias: anonymous aliases by table name, the n-th at index n (up to _ALIAS_POOL).
# Appended under the GIL (a race only builds an extra alias: each is complete when listed).
_ALIASES: dict[str, list[Any]] = {}
_ALIAS_POOL = 16


def _escape_glob(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


class _Compiler:
    """Clauses -> correlated SQL conditions on (a literal resource type, an id column).

    ``text_engine``: how ``_text``/``_content`` are matched (:func:`text_engine`)."""

    def __init__(
        self,
        base_url: str,
        visible: VisibleCondition | None = None,
        postgres: bool = False,
        text_engine: str = "like",
        *,
        named: bool = False,
    ) -> None:
        self.base = base_url.rstrip("/") + "/"
        self.visible = visible
        self.postgres = postgres
        self.text_engine = text_engine
        self._used: dict[str, int] = {}  # aliases taken so far, by table
        # Named mode (a search shape's statement, :func:`search_shape`): every value of the
        # request is bound as ``sv0``, ``sv1`` ... in the order taken, and listed here.
        self.named = named
        self.bound: list[Any] = []

    def bind(self, values: tuple[Any, ...]) -> tuple[Any, ...]:
        """The request's values as the SQL takes them: as they are (SQLAlchemy binds each
        anonymously), or in named mode as the next ``sv<n>`` parameters, typed by the column
        they are compared with (an untyped parameter takes the other side's type)."""
        if not self.named:
            return values
        out = []
        for value in values:
            out.append(bindparam(f"sv{len(self.bound)}", value, type_=NullType()))
            self.bound.append(value)
        return tuple(out)

    def alias(self, table: Table) -> Any:
        """An anonymous alias of ``table``, distinct from every other this compiler gave (one
        condition): the n-th one of each table is built once per process and reused by later
        searches, as building one's columns was about a fifth of building a search's
        condition. Two uses in one statement never share an alias object (a shared one would
        correlate a nested ``EXISTS`` with its outer one)."""
        n = self._used.get(table.name, 0)
        self._used[table.name] = n + 1
        pool = _ALIASES.setdefault(table.name, [])
        if n < len(pool):
            return pool[n]
        made = table.alias()
        if n < _ALIAS_POOL:
            made.c  # noqa: B018 - its columns built before another thread can take it
            pool.append(made)
        return made

    def starts_with(self, col: Any, prefix: str) -> ColumnElement[bool]:
        """Case-sensitive prefix test (SQLite's LIKE ignores ASCII case; its GLOB does not,
        and with the column's binary collation is an index range)."""
        if self.postgres:
            return col.like(_like_prefix(prefix) + "%", escape="\\")  # type: ignore[no-any-return]
        return col.op("GLOB")(_escape_glob(prefix) + "*")  # type: ignore[no-any-return]

    def clause(
        self, rtype: str, rid: KeyedColumnElement[Any] | Any, clause: Clause, *, top: bool = False
    ) -> ColumnElement[bool]:
        if isinstance(clause, Missing):
            if clause.kind in ("_id", "_lastUpdated"):
                return false() if clause.missing else true()
            idx = self.alias(self._table(clause.kind))
            exists = self._owned(idx, rtype, rid, clause.code).exists()
            return not_(exists) if clause.missing else exists
        if isinstance(clause, Chain):
            ref = self.alias(fhir_idx_reference)
            branches = [
                and_(
                    ref.c.target_type == target,
                    self.clause(target, ref.c.target_id, inner),
                    *self._seen(target, ref.c.target_id),
                )
                for target, inner in clause.targets
            ]
            return self._owned(ref, rtype, rid, clause.code).where(or_(*branches)).exists()
        if isinstance(clause, Has):
            ref = self.alias(fhir_idx_reference)
            return (
                select(literal(1))
                .where(
                    ref.c.resource_type == clause.source_type,
                    ref.c.param == clause.code,
                    ref.c.target_type == rtype,
                    ref.c.target_id == rid,
                    self.clause(clause.source_type, ref.c.resource_id, clause.clause),
                    *self._seen(clause.source_type, ref.c.resource_id),
                )
                .exists()
            )
        return self.match(rtype, rid, clause, top)

    def _seen(self, rtype: str, rid: Any) -> list[ColumnElement[bool]]:
        return [] if self.visible is None else [_visible_exists(self.visible, rtype, rid)]

    def _table(self, kind: str) -> Table:
        return {
            "token": fhir_idx_token,
            "string": fhir_idx_string,
            "date": fhir_idx_date,
            "reference": fhir_idx_reference,
            "quantity": fhir_idx_quantity,
            "uri": fhir_idx_uri,
            "number": fhir_idx_number,
            "composite": fhir_idx_composite,
            "fulltext": fhir_idx_text,
        }[kind]

    def _owned(self, idx: Any, rtype: str, rid: Any, code: str) -> Select[Any]:
        return select(literal(1)).where(
            idx.c.resource_type == rtype, idx.c.resource_id == rid, idx.c.param == code
        )

    def match(self, rtype: str, rid: Any, m: Match, top: bool) -> ColumnElement[bool]:
        if m.kind in ("_id", "_lastUpdated"):
            res = fhir_resources if top else self.alias(fhir_resources)
            if m.kind == "_id":
                cond: ColumnElement[bool] = res.c.id.in_(m.values)
                if m.modifier == "not":
                    cond = not_(cond)
            else:
                cond = any_of(
                    [
                        _interval_sql(
                            prefix,
                            self.bind(_interval_values(prefix, low, high)),
                            res.c.last_updated,
                            res.c.last_updated,
                        )
                        for prefix, low, high in (parse_date(v, m.code) for v in m.values)
                    ]
                )
            if top:
                return cond
            return (
                select(literal(1))
                .where(
                    res.c.resource_type == rtype, res.c.id == rid, res.c.deleted == false(), cond
                )
                .exists()
            )
        if m.kind == "fulltext":
            return self.fulltext(rtype, rid, m)
        idx = self.alias(self._table(m.kind))
        negate = m.kind == "token" and m.modifier == "not"
        conds = [self.value(idx, m, v) for v in m.values]
        exists = self._owned(idx, rtype, rid, m.code).where(any_of(conds)).exists()
        return not_(exists) if negate else exists

    def fulltext(self, rtype: str, rid: Any, m: Match) -> ColumnElement[bool]:
        """``_text`` / ``_content``: the resource is among those the backend's full-text
        index finds (an ``IN`` so that the planner starts from the index's few rows)."""
        t = self.alias(fhir_idx_text)
        values = [fulltext.parse_query(v) for v in m.values]
        if self.text_engine == "postgresql":
            config: ColumnElement[Any] = literal_column("'simple'::regconfig")
            found: ColumnElement[bool] = func.to_tsvector(config, t.c.body).op("@@")(
                func.to_tsquery(config, fulltext.tsquery(values))
            )
        elif self.text_engine == "fts5":
            found = t.c.row_id.in_(
                select(_FTS5_ROWS.c.rowid).where(
                    _FTS5_ROWS.c[FTS5_TABLE].match(fulltext.fts5_query(values))
                )
            )
        else:
            spaced = literal(" ") + t.c.body + literal(" ")
            found = any_of(
                [
                    and_(*(spaced.like(pattern) for pattern in fulltext.like_patterns(phrases)))
                    for phrases in values
                ]
            )
        owner: list[ColumnElement[bool]] = [t.c.resource_type == rtype, t.c.param == m.code]
        if self.text_engine != "fts5":
            return rid.in_(select(t.c.resource_id).where(*owner, found))  # type: ignore[no-any-return]
        # SQLite plans without statistics. Unindexed on purpose (``|| ''``): the FTS5 matches'
        # rows are read by row_id, not the owner index over every row of the type; and
        # ``likelihood`` says few resources match, so the resources are looked up by key from
        # that list rather than all of the type read in page order (rare word in 20,000
        # Observations: 0.1 ms, was 17 ms).
        owner = [t.c.resource_type + "" == rtype, t.c.param + "" == m.code]
        # Untyped: a Boolean-typed function would be rendered ``likelihood(...) = 1``, which
        # SQLite's planner does not see through.
        return func.likelihood(
            rid.in_(select(t.c.resource_id).where(*owner, found)), literal_column("0.001")
        )

    def date_range(
        self, rtype: str, rid: Any, code: str, matches: Sequence[Match]
    ) -> ColumnElement[bool]:
        """ANDed bounds of one date parameter (``date=ge2024-01-01&date=lt2024-01-08``) on the
        same index row, in one ``EXISTS``: the index range scan then stops at both ends
        (two ``EXISTS`` each scanned every row on one side of its bound)."""
        idx = self.alias(fhir_idx_date)
        conds = [self.value(idx, m, m.values[0]) for m in matches]
        return self._owned(idx, rtype, rid, code).where(*conds).exists()

    def value(self, idx: Any, m: Match, value: str) -> ColumnElement[bool]:
        c = idx.c
        if m.kind == "token":
            if m.modifier == "below":
                system, below = hierarchy.token_below(value, m.code)
                return and_(
                    c.system == system,
                    or_(c.code == below.exact, self.starts_with(c.code, below.prefix)),
                )
            if m.modifier == "above":
                system, codes = hierarchy.token_above(value, m.code)
                return and_(c.system == system, c.code.in_(codes))
            if m.modifier == "text":
                return _words(c.text, value)
            if m.modifier == "of-type":
                return _token(c, m.modifier, value)
            form, values = _token_parts(value)
            return _token_sql(c.system, c.code, form, self.bind(values))
        if m.kind == "string":
            if m.modifier == "text":
                return _words(c.normalized, value)
            form, values = _string_parts(m.modifier, value)
            bound = self.bind(values)
            if form == "exact":
                return c.value == bound[0]  # type: ignore[no-any-return]
            return c.normalized.like(bound[0], escape="\\")  # type: ignore[no-any-return]
        if m.kind == "date":
            prefix, values = _date_parts(value, m.code)
            bound = self.bind(values)
            cond = _interval_sql(prefix, bound, c.low, c.high)
            if prefix not in _FLOORED or "long_span" not in c:
                return cond
            # A short row with high >= floor began at most SHORT_SPAN earlier: an indexable
            # lower bound on low (and an estimate the planner can trust); long rows apart.
            return and_(
                cond,
                or_(
                    and_(c.long_span == false(), c.low >= bound[-1]),
                    c.long_span == true(),
                ),
            )
        if m.kind == "reference":
            form, values = _reference_parts(self.base, m.modifier, value)
            return _reference_sql(c, form, self.bind(values))
        if m.kind == "quantity":
            return _quantity(c, value, m.code)
        if m.kind == "number":
            prefix, number, half = parse_number(value, m.code)
            return _numeric(prefix, number, half, c.value, c.value)
        if m.kind == "uri":
            if m.modifier == "below":
                equal, under = hierarchy.uri_below(value, m.code)
                return or_(c.uri.in_(equal), self.starts_with(c.uri, under))
            if m.modifier == "above":
                return c.uri.in_(hierarchy.uri_above(value, m.code))  # type: ignore[no-any-return]
            return c.uri == value  # type: ignore[no-any-return]
        if m.kind == "composite":
            return self._composite(c, m, value)
        raise InvalidInput(f"cannot search on {m.code}", expression=m.code)

    def _composite(self, c: Any, m: Match, value: str) -> ColumnElement[bool]:
        parts = value.split("$")
        first_kind = m.components[0]
        conds: list[ColumnElement[bool]] = []
        if first_kind == "reference":
            ref = parts[0].split("/")
            conds.append(c.c1_code == ref[-1])
            if len(ref) >= 2:
                conds.append(c.c1_system == ref[-2])
        else:
            conds.append(_token_columns(c.c1_system, c.c1_code, parts[0]))
        second = m.components[1]
        if second == "token":
            conds.append(_token_columns(c.c2_system, c.c2_code, parts[1]))
        elif second in ("quantity", "number"):
            number_text, *rest = parts[1].split("|")
            prefix, number, half = parse_number(number_text, m.code)
            conds.append(_numeric(prefix, number, half, c.c2_low, c.c2_high))
            if len(rest) == 2:
                if rest[0]:
                    conds.append(c.c2_system == rest[0])
                if rest[1]:
                    conds.append(c.c2_code == rest[1])
        elif second == "date":
            prefix, low, high = parse_date(parts[1], m.code)
            conds.append(_interval(prefix, low, high, c.c2_date_low, c.c2_date_high))
        elif second == "string":
            conds.append(c.c2_string.like(_like_prefix(normalize(parts[1])) + "%", escape="\\"))
        if len(parts) > 2:
            prefix, number, half = parse_number(parts[2], m.code)
            conds.append(_numeric(prefix, number, half, c.c3_low, c.c3_high))
        return and_(*conds)


_BOUND_PREFIXES = ("ge", "gt", "le", "lt")


def _date_bounds(clauses: Sequence[Clause]) -> tuple[list[Clause], dict[str, list[Match]]]:
    """Split off repeated single-value bound clauses (ge/gt/le/lt) of one date parameter,
    which are then matched on the same index row (HAPI FHIR does the same); a single bound
    stays an ordinary clause."""
    candidates: dict[str, list[Match]] = {}
    for clause in clauses:
        if (
            isinstance(clause, Match)
            and clause.kind == "date"
            and clause.modifier is None
            and len(clause.values) == 1
            and clause.values[0][:2] in _BOUND_PREFIXES
        ):
            candidates.setdefault(clause.code, []).append(clause)
    bounds = {code: found for code, found in candidates.items() if len(found) > 1}
    combined = {id(m) for found in bounds.values() for m in found}
    return [c for c in clauses if id(c) not in combined], bounds


def _page_token(clauses: Sequence[Clause]) -> tuple[str, str] | None:
    """(param, value) when the search is on one code of one system alone
    (``code=system|code``, no modifier, one value): its page can be read in order from the
    token rows (:meth:`ResourceRepository._token_page`). A code without its system (any
    system) is not in one stretch of that index."""
    if len(clauses) != 1:
        return None
    m = clauses[0]
    if not isinstance(m, Match) or m.kind != "token" or m.modifier is not None:
        return None
    if len(m.values) != 1:
        return None
    system, bar, code = m.values[0].partition("|")
    if not (system and bar and code):
        return None
    return m.code, m.values[0]


def _page_window(clauses: Sequence[Clause]) -> tuple[str, list[Match]] | None:
    """(param, its bounds) when the search is one short date window alone
    (``date=ge..&date=lt..``, :func:`_short_window`, no other clause): its page can be read
    from the date rows (:meth:`ResourceRepository._window_page`)."""
    rest, bounds = _date_bounds(clauses)
    if rest or len(bounds) != 1 or not _short_window(clauses):
        return None
    return next(iter(bounds.items()))


def _short_window(clauses: Sequence[Clause]) -> bool:
    """Whether a date parameter is bounded on both sides (``ge``/``gt`` and ``lt``/``le``) to a
    window no longer than ``SHORT_SPAN``: its matches are then sought from the date index
    alone (:meth:`ResourceRepository._ordered`)."""
    for matches in _date_bounds(clauses)[1].values():
        floors: list[datetime] = []
        ceilings: list[datetime] = []
        for m in matches:
            prefix, low, high = parse_date(m.values[0], m.code)
            floor = _high_floor(prefix, low, high)
            if floor is not None:
                floors.append(floor)
            elif prefix in ("lt", "le"):
                ceilings.append(low if prefix == "lt" else high)
        if floors and ceilings and min(ceilings) - max(floors) <= SHORT_SPAN:
            return True
    return False


def _cursor_values(cursor: tuple[datetime, str]) -> tuple[Any, ...]:
    """What a page after ``_cursor`` binds: its instant twice, then its id."""
    moment, rid = cursor
    return (moment, moment, rid)


def _value_parts(base: str, m: Match, value: str) -> tuple[str, tuple[Any, ...]] | None:
    """(form, values) of one value of a clause as :meth:`_Compiler.value` (or ``match`` for
    ``_lastUpdated``) binds it, from the same functions; None for a kind or modifier whose
    SQL is not made from such parts (``:text``, ``:above``, ``:of-type``, quantities ...)."""
    if m.kind == "token" and m.modifier in (None, "not"):
        return _token_parts(value)
    if m.kind == "string" and m.modifier in (None, "exact", "contains"):
        return _string_parts(m.modifier, value)
    if m.kind in ("date", "_lastUpdated") and split_prefix(value)[0] == "ap":
        return None  # its bounds move with the clock: no two builds bind the same values
    if m.kind == "date" and m.modifier is None:
        return _date_parts(value, m.code)
    if m.kind == "_lastUpdated":
        prefix, low, high = parse_date(value, m.code)
        return prefix, _interval_values(prefix, low, high)
    if m.kind == "reference" and m.modifier != "missing":
        return _reference_parts(base, m.modifier, value)
    return None


def search_shape(
    request: SearchRequest, base_url: str, limit: int
) -> tuple[Hashable, list[Any]] | None:
    """(key, values) of a default-order search page: requests with equal keys get the same
    page statement from :meth:`ResourceRepository.search_condition` and ``_page_query`` but
    for the values they bind, which are ``values`` in the order that code binds them
    (:meth:`_Compiler.bind`). The key holds everything else the statement is made from: the
    type, each clause's parameter, kind, modifier and the form of each of its values (a
    token with or without its system, a date's prefix, a reference's form ...), how repeated
    date bounds are paired, the short-window and one-code plans, a cursor, and the LIMIT.
    None when the request is not one the shaped path serves (sorted, a snapshot page, chains,
    ``_has``, ``_id``, text search, quantities, numbers, URIs, composites, hierarchies, dates
    with ``ap``)."""
    if request.sort or request.snapshot is not None:
        return None
    base = base_url.rstrip("/") + "/"
    parts: list[Hashable] = []
    values: list[Any] = []
    clauses, bounds = _date_bounds(request.clauses)
    for clause in clauses:
        if isinstance(clause, Missing):
            parts.append(("missing", clause.code, clause.kind, clause.missing))
            continue
        if not isinstance(clause, Match):
            return None
        forms = []
        for value in clause.values:
            found = _value_parts(base, clause, value)
            if found is None:
                return None
            forms.append(found[0])
            values.extend(found[1])
        parts.append((clause.code, clause.kind, clause.modifier, tuple(forms)))
    for code, matches in bounds.items():
        prefixes = []
        for m in matches:
            prefix, found = _date_parts(m.values[0], m.code)
            prefixes.append(prefix)
            values.extend(found)
        parts.append(("bounds", code, tuple(prefixes)))
    token = _page_token(request.clauses)
    if token is not None:  # the one-code page binds its code again, on the token rows
        values.extend(_token_parts(token[1])[1])
    window = _page_window(request.clauses)
    if window is not None:  # the window's page binds its bounds again, for each of its scans
        for _long_span in (False, True):
            for m in window[1]:
                values.extend(_date_parts(m.values[0], m.code)[1])
    if request.cursor is not None:
        values.extend(_cursor_values(request.cursor))
    key = (
        request.resource_type,
        tuple(parts),
        token is not None,
        _short_window(request.clauses),
        window is not None,
        request.cursor is not None,
        limit,
        len(values),
    )
    return key, values


def _string_parts(modifier: str | None, value: str) -> tuple[str, tuple[Any, ...]]:
    """(form, values) of a string search without ``:text``: the value itself (``:exact``)
    or the ``LIKE`` pattern of its folded form (a prefix, or anywhere with ``:contains``)."""
    if modifier == "exact":
        return "exact", (value,)
    pattern = _like_prefix(normalize(value)[:255])
    if modifier == "contains":
        return "like", ("%" + pattern + "%",)
    return "like", (pattern + "%",)


# The date prefixes whose condition sets a least ``high`` (:func:`_high_floor`).
_FLOORED = ("ge", "gt")


def _date_parts(value: str, name: str) -> tuple[str, tuple[Any, ...]]:
    """(prefix, values) of a date search value: :func:`_interval_values`, then for ``ge`` and
    ``gt`` the least ``low`` of a short index row that can match (the floor - SHORT_SPAN)."""
    prefix, low, high = parse_date(value, name)
    values = _interval_values(prefix, low, high)
    floor = _high_floor(prefix, low, high)
    if floor is not None:
        values += (floor - SHORT_SPAN,)
    return prefix, values


def _reference_parts(base: str, modifier: str | None, value: str) -> tuple[str, tuple[Any, ...]]:
    """(form, values) of a reference search value (``base``: this server's FHIR base with a
    trailing slash, cut from absolute references to it)."""
    if modifier == "identifier":
        system, bar, code = value.partition("|")
        if not bar:
            return "identifier", (value,)
        if not system:
            return "identifier-nosystem", (code,)
        return "identifier-system", (code, system)
    if value.startswith(base):
        value = value[len(base) :]
    if "|" in value or value.startswith(("http://", "https://", "urn:")):
        url, _, version = value.partition("|")
        return ("url-version", (url, version)) if version else ("url", (url,))
    parts = value.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) == 2:
        return "typed", (parts[0], parts[1])
    if modifier is not None:
        return "typed", (modifier, value)
    return "id", (value,)


def _reference_sql(c: Any, form: str, v: Sequence[Any]) -> ColumnElement[bool]:
    if form == "identifier":
        return c.identifier_value == v[0]  # type: ignore[no-any-return]
    if form == "identifier-nosystem":
        return and_(c.identifier_value == v[0], c.identifier_system.is_(None))
    if form == "identifier-system":
        return and_(c.identifier_value == v[0], c.identifier_system == v[1])
    if form == "url":
        return c.url == v[0]  # type: ignore[no-any-return]
    if form == "url-version":
        return and_(c.url == v[0], c.version == v[1])
    if form == "typed":
        return and_(c.target_type == v[0], c.target_id == v[1])
    return c.target_id == v[0]  # type: ignore[no-any-return]


def _token_parts(value: str) -> tuple[str, tuple[Any, ...]]:
    """(form, values) of a ``[system]|code`` token: the form decides the SQL
    (:func:`_token_sql`), the values are what it binds (a search shape's key and values)."""
    system, bar, code = value.partition("|")
    if not bar:
        return "code", (value,)
    if not system:
        return "nosystem", (code,)
    if not code:
        return "system", (system,)
    return "both", (system, code)


def _token_sql(system_col: Any, code_col: Any, form: str, v: Sequence[Any]) -> ColumnElement[bool]:
    if form == "code":
        return code_col == v[0]  # type: ignore[no-any-return]
    if form == "nosystem":
        return and_(system_col.is_(None), code_col == v[0])
    if form == "system":
        return system_col == v[0]  # type: ignore[no-any-return]
    return and_(system_col == v[0], code_col == v[1])


def _token_columns(system_col: Any, code_col: Any, value: str) -> ColumnElement[bool]:
    return _token_sql(system_col, code_col, *_token_parts(value))


def _words(col: Any, value: str) -> ColumnElement[bool]:
    """``:text``: every word of the value starts a word of the folded text (words as separated
    by spaces), or for Chinese and Japanese, which have no spaces, appears anywhere in it."""
    conds = []
    for word in text_words(value):
        w = _like_prefix(word[:255])
        if fulltext.has_cjk(word):
            conds.append(col.like(f"%{w}%", escape="\\"))
        else:
            conds.append(or_(col.like(f"{w}%", escape="\\"), col.like(f"% {w}%", escape="\\")))
    return and_(*conds)


def _token(c: Any, modifier: str | None, value: str) -> ColumnElement[bool]:
    if modifier == "of-type":
        parts = value.split("|")
        if len(parts) != 3 or not all(parts):
            raise InvalidInput(":of-type takes system|code|value", expression="identifier:of-type")
        return and_(c.type_system == parts[0], c.type_code == parts[1], c.code == parts[2])
    return _token_columns(c.system, c.code, value)


def _high_floor(prefix: str, low: datetime, high: datetime) -> datetime | None:
    """The least ``high`` an index row can have to match :func:`_interval`'s condition, when
    the condition sets one (``ge``, ``gt``; ``eq`` and ``sa`` bound ``low`` already, ``ap``'s
    bound moves with the clock)."""
    if prefix == "ge":
        return low
    if prefix == "gt":
        return high
    return None


def _interval_values(prefix: str, low: datetime, high: datetime) -> tuple[datetime, ...]:
    """The instants :func:`_interval_sql` binds for a prefix and a search value's [low, high]."""
    if prefix in ("eq", "ne"):
        return (low, high)
    if prefix in ("gt", "le", "sa"):
        return (high,)
    if prefix in ("lt", "ge", "eb"):
        return (low,)
    # ap: within 10% of the distance from now (at least a day) on either side
    now = datetime.now(UTC)
    margin = max(abs(now - low) / 10, timedelta(days=1))
    return (high + margin, low - margin)


def _interval_sql(
    prefix: str, v: Sequence[Any], col_low: Any, col_high: Any
) -> ColumnElement[bool]:
    """Date search on intervals: the resource's [col_low, col_high] against the values of
    :func:`_interval_values`."""
    if prefix == "eq":
        return and_(col_low >= v[0], col_high <= v[1])
    if prefix == "ne":
        return not_(and_(col_low >= v[0], col_high <= v[1]))
    if prefix == "gt":
        return col_high > v[0]  # type: ignore[no-any-return]
    if prefix == "lt":
        return col_low < v[0]  # type: ignore[no-any-return]
    if prefix == "ge":
        return col_high >= v[0]  # type: ignore[no-any-return]
    if prefix == "le":
        return col_low <= v[0]  # type: ignore[no-any-return]
    if prefix == "sa":
        return col_low > v[0]  # type: ignore[no-any-return]
    if prefix == "eb":
        return col_high < v[0]  # type: ignore[no-any-return]
    return and_(col_low <= v[0], col_high >= v[1])  # ap


def _interval(
    prefix: str, low: datetime, high: datetime, col_low: Any, col_high: Any
) -> ColumnElement[bool]:
    """Date search on intervals: the resource's [col_low, col_high] against [low, high]."""
    return _interval_sql(prefix, _interval_values(prefix, low, high), col_low, col_high)


def _numeric(
    prefix: str, number: Decimal, half: Decimal, col_low: Any, col_high: Any
) -> ColumnElement[bool]:
    """Number/quantity search; ``eq`` honours the value's implied precision."""
    value = float(number)
    lo, hi = float(number - half), float(number + half)
    if prefix == "eq":
        return and_(col_low >= lo, col_high < hi)
    if prefix == "ne":
        return not_(and_(col_low >= lo, col_high < hi))
    if prefix in ("gt", "sa"):
        return (col_low if prefix == "sa" else col_high) > value  # type: ignore[no-any-return]
    if prefix in ("lt", "eb"):
        return (col_high if prefix == "eb" else col_low) < value  # type: ignore[no-any-return]
    if prefix == "ge":
        return col_high >= value  # type: ignore[no-any-return]
    if prefix == "le":
        return col_low <= value  # type: ignore[no-any-return]
    margin = abs(value) / 10
    return and_(col_low <= value + margin, col_high >= value - margin)


def _quantity(c: Any, value: str, name: str) -> ColumnElement[bool]:
    number_text, *rest = value.split("|")
    prefix, number, half = parse_number(number_text, name)
    system = rest[0] if len(rest) >= 1 and rest[0] else None
    code = rest[1] if len(rest) >= 2 and rest[1] else None
    if code is not None and system in (None, UCUM):
        canonical = ucum_canonical(code)
        if canonical is not None:
            factor, unit = canonical
            return and_(
                c.canonical_code == unit,
                _numeric(prefix, number * factor, half * factor, c.canonical_low, c.canonical_high),
            )
    conds = [_numeric(prefix, number, half, c.low, c.high)]
    if system is not None:
        conds.append(c.system == system)
    if code is not None:
        conds.append(or_(c.code == code, c.unit == code))
    return and_(*conds)


__all__ = ["ResourceRepository", "index_rows", "parameters", "search_shape", "split_prefix"]
