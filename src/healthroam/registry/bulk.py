"""The fast path for large feeds (the population base: millions of rows).

Rows are mapped and normalised in worker processes. A row whose valid national ID is new to the
registry (and to the rest of its chunk), from a source key not seen before, becomes a new
master person through set-based inserts (PostgreSQL COPY); every other row - no national ID,
an ID or key already known - goes through the real-time matcher, exactly as in
:mod:`healthroam.registry.loader`. Chunks commit with the load's progress, so a crash resumes
after the last committed chunk, and loading a file twice changes nothing.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pyarrow as pa
from sqlalchemy import Connection, Table, func, insert, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from healthroam.db.engine import Database
from healthroam.db.tables_registry import (
    master_persons,
    mpi_blocking_keys,
    mpi_event_recipients,
    mpi_events,
    mpi_name_counts,
    source_records,
)
from healthroam.errors import Conflict, HealthroamError
from healthroam.registry import initial_load
from healthroam.registry.blocking import blocking_keys
from healthroam.registry.codec import compact_json, from_json, to_json, to_json_jsonb_order
from healthroam.registry.event_feed import take_positions
from healthroam.registry.loader import (
    NUL_REASON,
    LoadSummary,
    Mapping,
    file_hash,
    finish_chunk,
    finish_load,
    loader_principal,
    nul_rows,
    open_reject_file,
    record_progress,
    shown_local_id,
    start_load,
    unread_batches,
)
from healthroam.registry.model import (
    Identifier,
    LinkType,
    MatchOutcome,
    SourceKey,
    SourceRecord,
    new_master_index_id,
    new_master_index_ids,
)
from healthroam.registry.normalize import batch_gc, normalize_record, tune_gc_for_batches
from healthroam.registry.repository import TOTAL
from healthroam.registry.service import (
    RegistryService,
    content_hash,
    golden_values,
    record_data,
)
from healthroam.registry.survivorship import LinkedRecord, golden_of_one, golden_record
from healthroam.security.model import Principal


class Prepared(NamedTuple):
    """A mapped and normalised row, or its rejection. Plain values only (strings, mostly):
    these cross from the worker processes, and unpickling dicts and dataclasses cost more than
    the database writes. The JSON documents travel as text and are parsed again only for the
    rows that go through the matcher (or, on SQLite, inserted as dicts)."""

    number: int
    local_id: str | None
    system: str = ""
    national_key: str = ""  # "id:<national id>" or ""
    name: str = ""  # the mpi_name_counts name ("" when the record has none)
    data_json: str = ""
    normalized_json: str = ""
    keys: tuple[str, ...] = ()
    content_hash: str = ""
    # PostgreSQL only: COPY text lines of a new person (master, source record, blocking keys,
    # event without its sequence number and feed position), UTF-8 encoded in the worker: the
    # main process passes them to COPY as they are, with no decoding (unpickling a str) and
    # encoding (writing a str to COPY) of every line on its one core.
    copy: tuple[bytes, bytes, bytes, bytes] | None = None
    reject: tuple[str, str] | None = None  # (column, reason)

    def with_documents(self) -> Prepared:
        """The row with its JSON texts (a rendered row carries them in its COPY line only)."""
        if self.data_json or self.copy is None:
            return self
        fields = self.copy[1][:-1].decode().split("\t")
        return self._replace(data_json=_unescape(fields[6]), normalized_json=_unescape(fields[7]))

    @property
    def data(self) -> dict[str, Any]:
        text = self.with_documents().data_json
        return dict(json.loads(text)) if text else {}

    @property
    def normalized(self) -> dict[str, Any]:
        text = self.with_documents().normalized_json
        return dict(json.loads(text)) if text else {}

    def record(self, source: str) -> SourceRecord:
        """The source record again (for the rows that go through the matcher)."""
        data = self.data
        for name in ("birth_date", "death_date"):
            if data.get(name):
                data[name] = date.fromisoformat(data[name])
        data["identifiers"] = tuple(
            Identifier(*str(i).split("|", 1)) for i in data.get("identifiers") or ()
        )
        data["phones"] = tuple(data.get("phones") or ())
        return SourceRecord(key=SourceKey(source, self.system, str(self.local_id)), **data)


class Seen:
    """What an initial load has written: national IDs and source keys, as hashes (a false hit
    only sends a row to the matcher, which decides correctly anyway).

    The hashes are the keys of dicts, not members of sets: CPython's garbage collector never
    looks into a dict that holds only numbers, but walks every member of a set on each full
    collection. With 20 million hashes that walk took about a second, several times per
    chunk, and grew with the load (decision 0041)."""

    def __init__(self) -> None:
        self.ids: dict[int, None] = {}
        self.sources: dict[int, None] = {}

    @classmethod
    def from_registry(cls, conn: Connection, source: str) -> Seen:
        """For a resumed load: what its committed chunks wrote."""
        seen = cls()
        ids, keys = initial_load.written_keys(conn, source)
        seen.ids.update(dict.fromkeys(hash(k) for k in ids))
        seen.sources.update(dict.fromkeys(hash(k) for k in keys))
        return seen

    def split(self, good: Sequence[Prepared]) -> tuple[list[Prepared], list[Prepared]]:
        """New persons, and the rows that must wait for the matcher."""
        fast: list[Prepared] = []
        slow: list[Prepared] = []
        for p in good:
            national = hash(p.national_key) if p.national_key else None
            key = hash((p.system, str(p.local_id)))
            if national is None or national in self.ids or key in self.sources:
                slow.append(p)
            else:
                self.ids[national] = None
                self.sources[key] = None
                fast.append(p)
        return fast, slow


class Actor(NamedTuple):
    """Who the bulk-created events name (the loader's principal)."""

    institution: str
    user: str | None
    client: str


_json: Callable[[Any], str] = compact_json
_SPECIAL = re.compile(r"[\\\t\n\r]")  # what _field must escape


def _field(value: str | None) -> str:
    """A value for a COPY text line."""
    if value is None:
        return "\\N"
    if _SPECIAL.search(value) is None:  # the usual case: nothing to escape
        return value
    # str.replace is many times faster than str.translate on non-ASCII text.
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    return value.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _json_field(document: str) -> str:
    """A compact JSON text for a COPY text line: JSON escapes tabs, newlines and carriage
    returns itself, so only its backslashes need doubling."""
    return document.replace("\\", "\\\\") if "\\" in document else document


_ESCAPED = re.compile(r"\\(.)")
_UNESCAPE = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}


def _unescape(value: str) -> str:
    """A COPY text field back to its value (the inverse of ``_field`` for non-null values)."""
    return _ESCAPED.sub(lambda m: _UNESCAPE[m.group(1)], value) if "\\" in value else value


class Ids(NamedTuple):
    """Primary keys reserved for one row (PostgreSQL: taken from the tables' sequences before
    the row goes to a worker, so the worker renders finished COPY lines). The event's sequence
    number is not among them: it is taken in the chunk's own transaction, as the matcher
    takes it, so that the event log's order stays close to commit order for consumers who
    read it by sequence number."""

    master: int
    source: int


def _copy_lines(
    source: str,
    system: str,
    local_id: str,
    data_json: str,
    normalized_json: str,
    hashed: str,
    keys: tuple[str, ...],
    golden: dict[str, Any],
    actor: Actor,
    ids: Ids,
    master_index_id: str,
    stamp: str,
) -> tuple[bytes, bytes, bytes, bytes]:
    """COPY text lines of a new person, UTF-8: master, source record, blocking keys, and the
    event without its leading sequence number and feed position. Column orders: see
    ``_COPY_COLUMNS``."""
    name = golden.get("name") or golden.get("latin_name")
    master_id, source_id = str(ids.master), str(ids.source)
    # One f-string per line (a tuple joined costs more); the fields as _field renders them.
    master = (
        f"{master_id}\t{master_index_id}\tactive\t\\N\t{_json_field(_json(golden))}\t"
        f"{_field(name)}\t{_field(golden.get('birth_date'))}\t{_field(golden.get('sex'))}\t1\t"
        f"{stamp}\t{stamp}\n"
    )
    record = (
        f"{source_id}\t{_field(source)}\t{_field(system)}\t{_field(local_id)}\t{master_id}\t"
        f"{LinkType.AUTO.value}\t{_json_field(data_json)}\t{_json_field(normalized_json)}\t"
        f"{hashed}\t\\N\t{stamp}\t{stamp}\n"
    )
    tail = "\t" + source_id + "\n"
    if _SPECIAL.search("".join(keys)) is None:  # the usual case: no key needs escaping
        key_lines = "".join([k[:255] + tail for k in keys])
    else:
        key_lines = "".join([_field(k[:255]) + tail for k in keys])
    event = f"\t{stamp}\tcreate\t{master_id}\t\\N\t{source_id}\t" + _event_tail(source, actor)
    return master.encode(), record.encode(), key_lines.encode(), event.encode()


@functools.lru_cache(maxsize=64)
def _event_tail(source: str, actor: Actor) -> str:
    """The end of a create event's COPY line: the same for every new person of a load."""
    return (
        "\t".join(_field(v) for v in (actor.institution, actor.user, actor.client))
        + "\tbulk load\t"
        + _field(_json([source]))
        + "\t"
        + _field(_json({"outcome": MatchOutcome.NEW.value}))
        + "\n"
    )


_COPY_COLUMNS = {
    "master_persons": "id, master_index_id, status, merged_into, golden, name, birth_date, sex, "
    "version, created_at, updated_at",
    "source_records": "id, institution_code, id_system, local_id, master_id, link_type, data, "
    "normalized, content_hash, fhir_patient_id, created_at, updated_at",
    "mpi_blocking_keys": "key, source_id",
    "mpi_events": "seq, position, occurred_at, event_type, master_id, other_master_id, source_id, "
    "actor_institution, actor_user, actor_client, reason, institutions, detail",
    "mpi_event_recipients": "institution_code, seq",
    "registry_load_names": "name, count",
}


class Piece(NamedTuple):
    """A slice of a chunk for one worker: its rows, the number of rows before it in the file,
    and (PostgreSQL) the ids reserved for its rows and the chunk's timestamp."""

    rows: pa.Table  # (Arrow, so that handing it to a worker is a buffer copy)
    first: int
    source: str
    mapping: Mapping
    actor: Actor
    trust: int
    ids: list[Ids] | None
    stamp: datetime


def _prepare(piece: Piece) -> list[Prepared]:
    """Map, normalise and (for PostgreSQL) render the rows of one piece of a chunk."""
    source, mapping, stamp = piece.source, piece.mapping, piece.stamp
    stamp_text = stamp.isoformat()
    render = piece.ids is not None
    index_ids = new_master_index_ids(piece.rows.num_rows) if render else []
    today = date.today()  # once per piece, not per row
    make = mapping.record_maker(source)
    result: list[Prepared] = []
    append = result.append
    number = piece.first
    nul = nul_rows(piece.rows)
    for offset, row in enumerate(piece.rows.to_pylist()):
        number += 1
        if nul and offset in nul:
            local_id = shown_local_id(row.get(mapping.columns["local_id"]))
            append(Prepared(number, local_id, reject=(nul[offset], NUL_REASON)))
            continue
        try:
            record = make(row)
            normalized = normalize_record(record, today=today)
        except HealthroamError as error:
            local_id = row.get(mapping.columns["local_id"])
            append(
                Prepared(
                    number, local_id, reject=(mapping.column_of(error.expression), error.detail)
                )
            )
            continue
        data = record_data(record)
        # For PostgreSQL in JSONB's key order (the same document; spares the server a sort).
        norm = to_json_jsonb_order(normalized) if render else to_json(normalized)
        keys = tuple(sorted(blocking_keys(normalized)))
        data_text = orjson.dumps(data)  # compact_json's text, hashed as the bytes it is
        data_json, normalized_json = data_text.decode(), _json(norm)
        digest = content_hash(data_text)
        name = (normalized.name or normalized.latin_name or "")[:200]
        key = record.key
        national_key = f"id:{normalized.national_id}" if normalized.national_id else ""
        if render:  # the documents travel once, inside the source record's line
            assert piece.ids is not None
            ids = piece.ids[offset]
            # One source record: golden_record([LinkedRecord(...)]) without the general loops.
            golden = golden_of_one(ids.source, golden_values(data, norm))
            copy = _copy_lines(
                source,
                key.system,
                key.local_id,
                data_json,
                normalized_json,
                digest,
                keys,
                golden,
                piece.actor,
                ids,
                index_ids[offset],
                stamp_text,
            )
            append(
                Prepared(
                    number,
                    key.local_id,
                    key.system,
                    national_key,
                    name,
                    content_hash=digest,
                    copy=copy,
                )
            )
            continue
        append(
            Prepared(
                number,
                key.local_id,
                key.system,
                national_key,
                name,
                data_json,
                normalized_json,
                keys,
                digest,
            )
        )
    return result


# The tables a bulk load analyses when it ends.
_STATISTICS_TABLES = ("master_persons", "source_records", "mpi_blocking_keys", "mpi_name_counts")


class BulkLoader:
    def __init__(self, db: Database, registry: RegistryService, workers: int = 2) -> None:
        self.db, self.registry, self.workers = db, registry, workers

    def load(
        self,
        path: Path,
        *,
        source: str,
        mapping: Mapping,
        reject_file: Path,
        chunk_size: int = 20_000,
        operator: str | None = None,
        progress: Callable[[int], None] | None = None,
        stop_after_chunks: int | None = None,
        initial: bool = False,
    ) -> LoadSummary:
        """Load ``path`` as the records of institution ``source``.

        ``initial`` (PostgreSQL, an empty registry): build the registry's secondary indexes
        and foreign keys after the rows instead of row by row (:mod:`initial_load`); rows that
        need the matcher wait until then. On SQLite the flag changes nothing.
        ``stop_after_chunks`` ends the run early after that many committed chunks (to test
        resuming as a crash would leave it).
        """
        digest = file_hash(path)
        summary = start_load(self.db, digest, source)
        if summary.already_loaded:
            return summary
        loader = loader_principal("registry-bulk-loader", source, operator)
        skip = summary.resumed_from
        with self.db.transaction(readonly=True) as conn:
            trust = self.registry_kind(conn, source)
            render = conn.dialect.name == "postgresql"
        seen: Seen | None = None
        if render and (initial or summary.initial is not None):
            seen = self._start_initial(digest, source, summary)
        with open_reject_file(reject_file, resuming=skip > 0) as handle:
            rejects = csv.writer(handle)
            if summary.initial is None or summary.initial.get("phase") == "rows":
                actor = Actor(source, operator, loader.client_id)
                with (
                    ProcessPoolExecutor(
                        max_workers=self.workers, initializer=tune_gc_for_batches
                    ) as pool,
                    batch_gc(),
                ):
                    chunks = self._prepared(
                        pool, path, source, mapping, (actor, trust), chunk_size, skip, render
                    )
                    for count, (prepared, size) in enumerate(chunks, start=1):
                        self._commit_chunk(prepared, source, loader, summary, rejects, digest, seen)
                        handle.flush()
                        if progress:
                            progress(size)
                        if stop_after_chunks is not None and count >= stop_after_chunks:
                            return summary
            if summary.initial is not None:
                self._finish_initial(digest, source, loader, summary, rejects)
        finish_load(self.db, digest, source, summary)
        if summary.initial is None:
            self.refresh_statistics()
        return summary

    def refresh_statistics(
        self, *, vacuum: bool = True, tables: Sequence[str] = _STATISTICS_TABLES
    ) -> None:
        """VACUUM and ANALYZE the registry's tables after a bulk load: without fresh statistics
        PostgreSQL may plan the real-time candidate lookup as a scan, and without the vacuum
        autovacuum's catch-up on millions of new rows competes with matching for minutes.
        An initial load only analyses (a sample): vacuuming tens of gigabytes of new rows is
        left to autovacuum, the registry works without it."""
        with self.db.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                auto = conn.execution_options(isolation_level="AUTOCOMMIT")
                command = "VACUUM (ANALYZE) " if vacuum else "ANALYZE "
                auto.exec_driver_sql(command + ", ".join(tables))
            else:
                conn.exec_driver_sql("ANALYZE")
                conn.commit()

    def _start_initial(self, digest: str, source: str, summary: LoadSummary) -> Seen:
        """Begin (or resume) an initial load: defer the indexes and foreign keys, and know
        which national IDs and source keys the load has already written."""
        with self.db.transaction() as conn:
            if summary.initial is None:
                existing = initial_load.registry_rows(conn)
                if existing:
                    raise Conflict(
                        f"an initial load needs an empty registry; it holds {existing} source "
                        "records: load without --initial",
                        expression="initial",
                    )
                summary.initial = {"phase": "rows", "ddl": initial_load.defer(conn)}
                initial_load.start_names(conn)
                record_progress(conn, digest, source, summary)
                return Seen()
            if summary.initial.get("phase") != "rows":
                return Seen()
            return Seen.from_registry(conn, source)

    def _finish_initial(
        self, digest: str, source: str, loader: Principal, summary: LoadSummary, rejects: Any
    ) -> None:
        """Build what the initial load deferred, then match the rows that waited for it."""
        assert summary.initial is not None
        if summary.initial.get("phase") == "rows":
            with self.db.transaction() as conn:
                initial_load.restore(conn, list(summary.initial["ddl"]))
                initial_load.merge_names(conn)
                summary.initial = {"phase": "deferred"}
                record_progress(conn, digest, source, summary)
            # The rebuild analysed the other tables (before its foreign keys).
            self.refresh_statistics(vacuum=False, tables=("mpi_name_counts",))
        while True:
            with self.db.transaction() as conn:
                waiting = initial_load.deferred_rows(conn, digest, source, limit=1000)
                if not waiting:
                    break
                slow = [
                    Prepared(number, local_id, system, "", "", data, normalized)
                    for number, local_id, system, data, normalized in waiting
                ]
                counts, rejected = self._match(conn, slow, source, loader)
                initial_load.forget_deferred(conn, digest, source, [p.number for p in slow])
                summary.new += counts[MatchOutcome.NEW]
                summary.linked += counts[MatchOutcome.LINKED]
                summary.review += counts[MatchOutcome.REVIEW]
                summary.unchanged += counts[MatchOutcome.UNCHANGED]
                summary.rejected += len(rejected)
                record_progress(conn, digest, source, summary)
            _write_rejects(rejects, rejected)

    def _prepared(
        self,
        pool: ProcessPoolExecutor,
        path: Path,
        source: str,
        mapping: Mapping,
        settings: tuple[Actor, int],
        chunk_size: int,
        skip: int,
        render: bool,
    ) -> Iterator[tuple[list[Prepared], int]]:
        """Prepared chunks in file order; workers run ahead by a few chunks."""
        part = max(1, chunk_size // (self.workers * 2))
        pending: list[tuple[Any, int]] = []
        for first, rows in unread_batches(path, mapping.needed_columns(), chunk_size, skip):
            stamp = datetime.now(UTC)
            ids = self._reserve(rows.num_rows) if render else None
            pieces = [
                Piece(
                    rows.slice(i, part),
                    first + i,
                    source,
                    mapping,
                    *settings,
                    ids[i : i + part] if ids is not None else None,
                    stamp,
                )
                for i in range(0, rows.num_rows, part)
            ]
            pending.append((pool.map(_prepare, pieces), rows.num_rows))
            if len(pending) > 2:
                futures, size = pending.pop(0)
                yield [p for piece in futures for p in piece], size
        for futures, size in pending:
            yield [p for piece in futures for p in piece], size

    def _reserve(self, count: int) -> list[Ids]:
        """PostgreSQL: ids for ``count`` new persons from the master and source tables'
        sequences (rows that turn out not to be new leave gaps, as rolled-back inserts do)."""
        with self.db.engine.connect() as conn:
            columns = [_allocate(conn, table, count) for table in _ID_TABLES]
            conn.commit()
        return [Ids(*ids) for ids in zip(*columns, strict=True)]

    def _commit_chunk(
        self,
        prepared: Sequence[Prepared],
        source: str,
        loader: Principal,
        summary: LoadSummary,
        rejects: Any,
        digest: str,
        seen: Seen | None,
    ) -> None:
        rejected = [p for p in prepared if p.reject is not None]
        good = [p for p in prepared if p.reject is None]
        with self.db.transaction() as conn:
            if seen is not None:
                initial_load.as_loader(conn)
                fast, slow = seen.split(good)
            else:
                fast, slow = self._split(conn, source, good)
            kind = self.registry_kind(conn, source)
            if fast and all(p.copy is not None for p in fast):
                self._copy_new(conn, fast, source, stage_names=seen is not None)
            else:
                self._insert_new(conn, fast, source, loader, kind, datetime.now(UTC))
            counts: Counter[MatchOutcome] = Counter({MatchOutcome.NEW: len(fast)})
            if seen is not None:  # the rows that need the matcher wait for the indexes
                initial_load.defer_rows(conn, digest, source, [p.with_documents() for p in slow])
            else:
                matched, failed = self._match(conn, slow, source, loader)
                counts.update(matched)
                rejected.extend(failed)
            finish_chunk(
                conn,
                self.registry,
                loader,
                summary,
                counts,
                rows=len(prepared),
                rejected=len(rejected),
                first_row=min(p.number for p in prepared),
                last_row=max(p.number for p in prepared),
                digest=digest,
                source=source,
            )
        _write_rejects(rejects, rejected)

    def _split(
        self, conn: Connection, source: str, good: list[Prepared]
    ) -> tuple[list[Prepared], list[Prepared]]:
        """New persons (a valid national ID new to the registry and to the chunk, from a
        source key not seen before) and the rows that go through the matcher."""
        known_ids = self._known_keys(conn, [p.national_key for p in good if p.national_key])
        known_sources = self._known_sources(conn, source, good)
        fast: list[Prepared] = []
        slow: list[Prepared] = []
        seen: set[str] = set()
        seen_sources: set[tuple[str, str | None]] = set()
        for p in good:
            key = p.national_key
            if (
                not key
                or key in known_ids
                or key in seen
                or (p.system, p.local_id) in known_sources
                or (p.system, p.local_id) in seen_sources
            ):
                slow.append(p)
            else:
                seen.add(key)
                seen_sources.add((p.system, p.local_id))
                fast.append(p)
        return fast, slow

    def _match(
        self, conn: Connection, rows: Sequence[Prepared], source: str, loader: Principal
    ) -> tuple[Counter[MatchOutcome], list[Prepared]]:
        """Rows through the real-time matcher, each in a savepoint; rejects returned."""
        counts: Counter[MatchOutcome] = Counter()
        rejected: list[Prepared] = []
        for p in rows:
            try:
                with conn.begin_nested():
                    result = self.registry.register_in(
                        conn, loader, p.record(source), from_json(p.normalized), audit=False
                    )
                counts[result.outcome] += 1
            except HealthroamError as error:
                rejected.append(
                    Prepared(p.number, p.local_id, reject=(error.expression or "", error.detail))
                )
        return counts, rejected

    @staticmethod
    def registry_kind(conn: Connection, source: str) -> int:
        from healthroam.registry.repository import RegistryRepository
        from healthroam.registry.survivorship import trust_of

        found = RegistryRepository(conn).institution(source)
        if found is None:
            from healthroam.errors import NotFound

            raise NotFound(f"no institution with code {source}", expression="source")
        return trust_of(*found)

    @staticmethod
    def _known_keys(conn: Connection, keys: list[str]) -> set[str]:
        found: set[str] = set()
        if conn.dialect.name == "postgresql":  # one round trip with an array parameter
            rows = conn.execute(
                text("SELECT key FROM mpi_blocking_keys WHERE key = ANY(:keys)"), {"keys": keys}
            )
            return set(rows.scalars())
        for i in range(0, len(keys), 5000):
            part = keys[i : i + 5000]
            found.update(
                conn.execute(
                    select(mpi_blocking_keys.c.key).where(mpi_blocking_keys.c.key.in_(part))
                ).scalars()
            )
        return found

    @staticmethod
    def _known_sources(
        conn: Connection, source: str, prepared: Sequence[Prepared]
    ) -> set[tuple[str, str]]:
        """Source keys of this chunk already in the registry (one index range per system)."""
        by_system: dict[str, list[str]] = {}
        for p in prepared:
            by_system.setdefault(p.system, []).append(str(p.local_id))
        found: set[tuple[str, str]] = set()
        for system, local_ids in by_system.items():
            if conn.dialect.name == "postgresql":  # one round trip with an array parameter
                rows = conn.execute(
                    text(
                        "SELECT local_id FROM source_records WHERE institution_code = :source"
                        " AND id_system = :system AND local_id = ANY(:ids)"
                    ),
                    {"source": source, "system": system, "ids": local_ids},
                )
                found.update((system, local_id) for local_id in rows.scalars())
                continue
            for i in range(0, len(local_ids), 5000):
                rows = conn.execute(
                    select(source_records.c.local_id).where(
                        source_records.c.institution_code == source,
                        source_records.c.id_system == system,
                        source_records.c.local_id.in_(local_ids[i : i + 5000]),
                    )
                )
                found.update((system, local_id) for local_id in rows.scalars())
        return found

    def _copy_new(
        self, conn: Connection, rows: Sequence[Prepared], source: str, *, stage_names: bool
    ) -> None:
        """PostgreSQL: the rows' finished COPY lines, one COPY per table. An initial load
        (``stage_names``) appends the chunk's name counts to ``registry_load_names``, added
        into ``mpi_name_counts`` once at its end (``initial_load.merge_names``)."""
        lines: tuple[list[bytes], ...] = ([], [], [], [])
        names: Counter[str] = Counter()
        seqs = [str(seq) for seq in _allocate(conn, mpi_events, len(rows))]
        first = take_positions(conn, len(rows))
        for position, (p, seq) in enumerate(zip(rows, seqs, strict=True), start=first):
            assert p.copy is not None
            lines[0].append(p.copy[0])
            lines[1].append(p.copy[1])
            lines[2].append(p.copy[2])
            lines[3].append(f"{seq}\t{position}".encode() + p.copy[3])
            if p.name:
                names[p.name] += 1
        tables = (master_persons, source_records, mpi_blocking_keys, mpi_events)
        for table, out in zip(tables, lines, strict=True):
            _copy(conn, table.name, b"".join(out))
        recipient = _field(source) + "\t"
        _copy(conn, "mpi_event_recipients", "".join([recipient + seq + "\n" for seq in seqs]))
        if stage_names:
            _copy(
                conn,
                "registry_load_names",
                "".join([f"{_field(name)}\t{count}\n" for name, count in _name_rows(names)]),
            )
        else:
            _add_name_counts(conn, names)

    def _insert_new(
        self,
        conn: Connection,
        rows: Sequence[Prepared],
        source: str,
        loader: Principal,
        trust: int,
        now: datetime,
    ) -> None:
        if not rows:
            return
        master_ids = _allocate(conn, master_persons, len(rows))
        source_ids = _allocate(conn, source_records, len(rows))
        event_ids = _allocate(conn, mpi_events, len(rows))
        first = take_positions(conn, len(rows))
        masters: list[dict[str, Any]] = []
        sources: list[dict[str, Any]] = []
        keys: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        recipients: list[dict[str, Any]] = []
        names: Counter[str] = Counter()
        for position, (p, master_id, source_id, seq) in enumerate(
            zip(rows, master_ids, source_ids, event_ids, strict=True), start=first
        ):
            data, normalized = p.data, p.normalized
            values = golden_values(data, normalized)
            golden = golden_record([LinkedRecord(source_id, source, trust, now, values)])
            masters.append(
                {
                    "id": master_id,
                    "master_index_id": new_master_index_id(),
                    "status": "active",
                    "merged_into": None,
                    "golden": golden,
                    "name": golden.get("name") or golden.get("latin_name"),
                    "birth_date": golden.get("birth_date"),
                    "sex": golden.get("sex"),
                    "version": 1,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            sources.append(
                {
                    "id": source_id,
                    "institution_code": source,
                    "id_system": p.system,
                    "local_id": p.local_id,
                    "master_id": master_id,
                    "link_type": LinkType.AUTO.value,
                    "data": data,
                    "normalized": normalized,
                    "content_hash": p.content_hash,
                    "fhir_patient_id": None,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            keys.extend({"key": k[:255], "source_id": source_id} for k in p.keys)
            events.append(
                {
                    "seq": seq,
                    "position": position,
                    "occurred_at": now,
                    "event_type": "create",
                    "master_id": master_id,
                    "other_master_id": None,
                    "source_id": source_id,
                    "actor_institution": loader.institution_code,
                    "actor_user": loader.end_user,
                    "actor_client": loader.client_id,
                    "reason": "bulk load",
                    "institutions": [source],
                    "detail": {"outcome": "new"},
                }
            )
            recipients.append({"institution_code": source, "seq": seq})
            if p.name:
                names[p.name] += 1
        for table, batch in (
            (master_persons, masters),
            (source_records, sources),
            (mpi_blocking_keys, keys),
            (mpi_events, events),
            (mpi_event_recipients, recipients),
        ):
            _bulk_insert(conn, table, batch)
        _add_name_counts(conn, names)


_ID_TABLES = (master_persons, source_records)


def _allocate(conn: Connection, table: Table, count: int) -> list[int]:
    """Reserve ``count`` primary keys: the table's sequence on PostgreSQL (one round trip);
    on SQLite, above the current maximum (the load holds SQLite's write lock)."""
    pk = next(iter(table.primary_key.columns))
    if conn.dialect.name == "postgresql":
        sequence = conn.execute(
            text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": pk.name}
        ).scalar_one()
        found = conn.execute(
            text("SELECT array_agg(nextval(:s)) FROM generate_series(1, :n)"),
            {"s": sequence, "n": count},
        ).scalar_one()
        return [int(v) for v in found or ()]
    start = int(conn.execute(select(func.coalesce(func.max(pk), 0))).scalar_one())
    return list(range(start + 1, start + 1 + count))


def _write_rejects(rejects: Any, rows: Sequence[Prepared]) -> None:
    for p in sorted(rows, key=lambda p: p.number):
        assert p.reject is not None
        rejects.writerow([p.number, p.local_id, *p.reject])


def _bulk_insert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(insert(table), rows)
        return
    columns = [c.name for c in table.columns if c.name in rows[0]]
    json_columns = {
        c.name
        for c in table.columns
        if c.type.__class__.__name__ in ("JSON",) or "JSON" in repr(c.type)
    }
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:
        writer.writerow([_copy_value(row[c], c in json_columns) for c in columns])
    raw = conn.connection.driver_connection
    assert raw is not None
    with (
        raw.cursor() as cursor,
        cursor.copy(
            f"COPY {table.name} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')"
        ) as copy,
    ):
        copy.write(buffer.getvalue())


def _copy_value(value: Any, is_json: bool) -> Any:
    if value is None:
        return "\\N"
    if is_json:
        return _json(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "t" if value else "f"
    return value


def _copy(conn: Connection, table: str, lines: str | bytes) -> None:
    if not lines:
        return
    raw = conn.connection.driver_connection
    assert raw is not None
    with (
        raw.cursor() as cursor,
        cursor.copy(f"COPY {table} ({_COPY_COLUMNS[table]}) FROM STDIN") as copy,
    ):
        copy.write(lines)


def _name_rows(names: Counter[str]) -> list[tuple[str, int]]:
    """A chunk's name counts as rows of ``mpi_name_counts`` to add: the total row first, then
    the names in order (none when the chunk has no names)."""
    if not names:
        return []
    total = sum(v for k, v in names.items() if k != TOTAL) + names.get(TOTAL, 0)
    return [(TOTAL, total), *sorted((k, v) for k, v in names.items() if k != TOTAL)]


def _add_name_counts(conn: Connection, names: Counter[str]) -> None:
    """Add a chunk's names to mpi_name_counts, the total row first (as the real-time path
    takes them, so concurrent writers queue instead of deadlocking)."""
    if not names:
        return
    ordered = _name_rows(names)
    if conn.dialect.name == "postgresql":  # one statement; names never hold a newline
        conn.execute(
            text(
                "INSERT INTO mpi_name_counts (name, count)"
                " SELECT * FROM unnest(string_to_array(:names, E'\\n'),"
                " CAST(string_to_array(:counts, ',') AS bigint[]))"
                " ON CONFLICT (name) DO UPDATE"
                " SET count = mpi_name_counts.count + excluded.count"
            ),
            {
                "names": "\n".join(k for k, _ in ordered),
                "counts": ",".join(str(v) for _, v in ordered),
            },
        )
        return
    rows = [{"name": name, "count": count} for name, count in ordered]
    lite = sqlite_insert(mpi_name_counts)
    conn.execute(
        lite.on_conflict_do_update(
            index_elements=["name"],
            set_={"count": mpi_name_counts.c.count + lite.excluded.count},
        ),
        rows,
    )
