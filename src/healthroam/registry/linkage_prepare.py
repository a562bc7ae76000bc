"""Batch preparation for record linkage: source files -> one normalised table.

Every row of every source file (population base, insurer, hospitals; Parquet or CSV, the
columns of ``docs/synth.md``) becomes a :class:`~healthroam.registry.model.SourceRecord` and
goes through the very :func:`~healthroam.registry.normalize.normalize_record` that the
real-time path uses, so batch and real time compare the same values. The output has one
column per :class:`~healthroam.registry.model.NormalizedRecord` field used by the comparisons
(sets as sorted lists) plus ``unique_id`` (the source's ``record_key``), ``source`` and
``name_key`` (the value the exact-name level's term frequency is counted on).

Rows the normaliser refuses are rejects, counted by reason (a reason never holds a value).
A row whose ID number fails its checks is, by default, normalised again without the ID (the
other fields still identify the person) and counted under ``id_dropped``.

Speed (10 million rows must fit a 15-minute budget on 2 cores): DuckDB reads and unions the
files; only the *distinct* input tuples go through Python (the same person's clean records
in the population base and the insurer are identical, so about half the rows are repeats);
the name and address steps of ``normalize_record`` are memoised (names and addresses repeat
far more often still); and batches are spread over worker processes. If a worker process dies
(killed, out of memory) :func:`prepare` raises :class:`~healthroam.errors.Unavailable` instead
of waiting for the lost batch for ever; it writes nothing but DuckDB tables of its own
connection, so running the command again starts over.
"""

# SQL here is built from our own table and column names and file paths, never from values.
# ruff: noqa: S608

from __future__ import annotations

import atexit
import contextlib
import functools
import multiprocessing
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from healthroam.errors import InvalidInput, Unavailable
from healthroam.registry import normalize
from healthroam.registry.model import Identifier, NormalizedRecord, SourceKey, SourceRecord

ID_TYPE_RESIDENT = "01"  # WS 364 identity document code: resident ID card
SOURCE_SYSTEM = "urn:healthroam:source-record"

# The raw columns that decide a row's normalised form (the record's key and source do not).
INPUT_COLUMNS = ("name", "sex", "birth_date", "id_type", "id_number", "phone", "address", "region")

NORMALISED_SCHEMA = pa.schema(
    [
        ("input_id", pa.int64()),
        ("name", pa.string()),
        ("latin_name", pa.string()),
        ("name_key", pa.string()),
        ("pinyin", pa.string()),
        ("pinyin_keys", pa.list_(pa.string())),
        ("birth_date", pa.string()),
        ("sex", pa.string()),
        ("national_id", pa.string()),
        ("region", pa.string()),
        ("address", pa.string()),
        ("address_tokens", pa.list_(pa.string())),
        ("phone", pa.string()),
        ("identifiers", pa.list_(pa.string())),
        ("reject_reason", pa.string()),
        ("id_dropped_reason", pa.string()),
    ]
)
RECORD_COLUMNS = ("unique_id", "source", *NORMALISED_SCHEMA.names[1:-2])

# Functions ``normalize_record`` looks up in its module at call time; all pure, all with
# hashable arguments. Memoised per process while a batch runs.
_MEMOISED = {
    "normalize_name": 1 << 18,
    "split_chinese_name": 1 << 18,
    "primary_pinyin_key": 1 << 18,
    "name_pinyin_keys": 1 << 18,
    "normalize_address": 1 << 17,
}


@contextlib.contextmanager
def memoised_normalisation() -> Iterator[None]:
    """Memoise the name and address steps of ``normalize_record`` (results unchanged)."""
    originals = {name: getattr(normalize, name) for name in _MEMOISED if hasattr(normalize, name)}
    try:
        for name, original in originals.items():
            setattr(normalize, name, functools.lru_cache(maxsize=_MEMOISED[name])(original))
        yield
    finally:
        for name, original in originals.items():
            setattr(normalize, name, original)


def source_kind(columns: Iterable[str]) -> str:
    """Which source a file is, from its columns: population, insurer or hospital."""
    names = set(columns)
    if "insurance_number" in names:
        return "insurer"
    if "hospital_code" in names:
        return "hospital"
    if "ethnicity_code" in names or "death_date" in names:
        return "population"
    raise InvalidInput(
        "source file has neither population, insurer nor hospital columns", expression="file"
    )


def source_files(paths: Iterable[Path | str]) -> list[Path]:
    """Source files under the given paths: files as given; a directory's ``sources/`` (or the
    directory itself) for ``*.parquet`` and ``*.csv``. ``truth/`` is never read."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            folder = path / "sources" if (path / "sources").is_dir() else path
            found.extend(sorted(p for p in folder.iterdir() if p.suffix in (".parquet", ".csv")))
        elif path.is_file():
            found.append(path)
        else:
            raise InvalidInput("source path does not exist", expression="sources")
    return found


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def reader_sql(path: Path) -> str:
    """A DuckDB table expression reading one source file, every CSV column as text."""
    if path.suffix == ".csv":
        return f"read_csv({_quote(path)}, header = true, all_varchar = true)"
    return f"read_parquet({_quote(path)})"


def source_select_sql(con: duckdb.DuckDBPyConnection, path: Path) -> str:
    """SELECT mapping one source file's columns onto the common raw columns."""
    reader = reader_sql(path)
    columns = [d[0] for d in con.execute(f"select * from {reader} limit 0").description]
    kind = source_kind(columns)
    source = "'hospital-' || hospital_code" if kind == "hospital" else f"'{kind}'"
    id_type = f"'{ID_TYPE_RESIDENT}'" if kind == "population" else "nullif(id_type, '')"
    region = "null" if kind == "hospital" else "region_code"
    return f"""
        select cast(record_key as varchar) as unique_id, {source} as source,
            cast(name as varchar) as name, cast(sex as varchar) as sex,
            cast(birth_date as date) as birth_date, cast({id_type} as varchar) as id_type,
            cast(id_number as varchar) as id_number, cast(phone as varchar) as phone,
            cast(address as varchar) as address, cast({region} as varchar) as region
        from {reader}"""


_UNKEYED = SourceKey("batch", SOURCE_SYSTEM, "?")  # the key of every row normalise_batch reads


def source_record(row: dict[str, Any], key: str = "?") -> SourceRecord:
    """One raw row (the :data:`INPUT_COLUMNS`) as a :class:`SourceRecord`, values as recorded.

    Resident ID numbers (18 or legacy 15 digits) become ``national_id``; other documents
    (passports, ``id_type`` 03) become identifiers ``ws364-<code>|<number>``. Local record
    numbers (MRN, insurance number) are the record's key, not identifiers: no other source
    holds them.
    """
    number = row["id_number"] or None
    id_type = row["id_type"] or ID_TYPE_RESIDENT
    resident = number if number and id_type == ID_TYPE_RESIDENT else None
    others = (Identifier(f"ws364-{id_type}", number),) if number and not resident else ()
    phone = row["phone"]
    return SourceRecord(
        key=_UNKEYED if key == "?" else SourceKey("batch", SOURCE_SYSTEM, key),
        name=row["name"],
        sex=row["sex"],
        birth_date=row["birth_date"],
        national_id=resident,
        identifiers=others,
        phones=(phone,) if phone else (),
        address=row["address"],
        region=row["region"],
    )


def normalise_batch(
    batch: pa.RecordBatch, today: date, drop_invalid_ids: bool = True
) -> pa.RecordBatch:
    """Normalise one batch of distinct raw rows (``input_id`` + :data:`INPUT_COLUMNS`)."""
    normalize_record = normalize.normalize_record
    columns = batch.to_pydict()
    ids = columns.pop("input_id")
    rows = (
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    )
    # One tuple per row in the schema's column order, turned into columns at the end.
    results: list[tuple[Any, ...]] = []
    for input_id, row in zip(ids, rows, strict=True):
        record = source_record(row)
        reject: str | None = None
        dropped: str | None = None
        try:
            n = normalize_record(record, today=today)
        except InvalidInput as error:
            n = None
            if drop_invalid_ids and record.national_id and error.expression == "identifier":
                dropped = error.detail
                try:
                    n = normalize_record(replace(record, national_id=None), today=today)
                except InvalidInput as again:
                    reject = again.detail
            else:
                reject = error.detail
        values = _record_values(n) if n else _NO_VALUES
        results.append((input_id, *values, reject, dropped))
    names = NORMALISED_SCHEMA.names
    columns_out = zip(*results, strict=True) if results else ([] for _ in names)
    out = {name: list(column) for name, column in zip(names, columns_out, strict=True)}
    return pa.RecordBatch.from_pydict(out, schema=NORMALISED_SCHEMA)


@dataclass
class PrepareSummary:
    """What :func:`prepare` did: rows kept per source, rejects and dropped IDs by reason."""

    rows: Counter[str] = field(default_factory=Counter)
    rejects: Counter[str] = field(default_factory=Counter)
    id_dropped: Counter[str] = field(default_factory=Counter)
    distinct_inputs: int = 0
    seconds: float = 0.0

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def total_rejects(self) -> int:
        return sum(self.rejects.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.total_rows,
            "rows_by_source": dict(sorted(self.rows.items())),
            "rejects": self.total_rejects,
            "rejects_by_reason": dict(self.rejects),
            "id_dropped_by_reason": dict(self.id_dropped),
            "distinct_inputs": self.distinct_inputs,
            "seconds": round(self.seconds, 2),
        }


_Task = tuple[pa.RecordBatch, date, bool]


def _work(task: _Task) -> pa.RecordBatch:
    return normalise_batch(*task)


_worker_stack = contextlib.ExitStack()

WORKER_LOST = (
    "a normalisation worker process died (killed, or out of memory?); nothing was written: "
    "run the command again"
)


def _init_worker() -> None:
    normalize.tune_gc_for_batches()
    _worker_stack.enter_context(memoised_normalisation())
    # A Pool's workers were killed at the end (terminate); an executor's exit normally, and
    # the interpreter's teardown then freed the memoised names and addresses one by one:
    # about 1.5 s of CPU per worker for a 100,000-row batch. multiprocessing has flushed and
    # finalised everything before atexit runs, so the worker leaves at once instead.
    atexit.register(os._exit, 0)


def _in_workers(tasks: Iterator[_Task], workers: int) -> Iterator[pa.RecordBatch]:
    """``map(_work, tasks)`` in ``workers`` processes, in order, with at most two batches per
    worker in flight (the tasks are read as results are taken, not all up front).

    Not multiprocessing.Pool: a Pool whose worker dies waits for the lost batch for ever; the
    executor breaks, and every pending result raises BrokenProcessPool."""
    pool = ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
    )
    try:
        pending: deque[Future[pa.RecordBatch]] = deque()
        for task in tasks:
            pending.append(pool.submit(_work, task))
            if len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool:
        raise Unavailable(WORKER_LOST, expression="workers") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def prepare(
    con: duckdb.DuckDBPyConnection,
    paths: Iterable[Path | str],
    table: str = "records",
    *,
    workers: int = 2,
    today: date | None = None,
    batch_size: int = 20_000,
    drop_invalid_ids: bool = True,
    progress: Callable[[int], None] | None = None,
    keep_raw: str | None = None,
) -> PrepareSummary:
    """Read and normalise every row of the source files under ``paths`` into the DuckDB
    table ``table`` (columns :data:`RECORD_COLUMNS`; rejects left out, counted).

    ``workers`` > 1 spreads batches over that many processes; 1 runs in this process.
    ``keep_raw`` names a table to keep the raw rows in (for Splink's default model).
    """
    started = time.perf_counter()
    files = source_files(paths)
    if not files:
        raise InvalidInput("no source files found", expression="sources")
    today = today or date.today()
    union = "\nunion all\n".join(source_select_sql(con, path) for path in files)
    con.execute(f"create or replace temp table _raw as {union}")
    cols = ", ".join(INPUT_COLUMNS)
    con.execute(
        f"""create or replace temp table _inputs as
        select row_number() over () as input_id, * from (select distinct {cols} from _raw)"""
    )
    same = " and ".join(f"r.{c} is not distinct from i.{c}" for c in INPUT_COLUMNS)
    con.execute(
        f"""create or replace temp table _raw_ids as
        select r.unique_id, r.source, i.input_id from _raw r join _inputs i on {same}"""
    )
    if keep_raw:
        con.execute(f"create or replace table {keep_raw} as select * from _raw")
    con.execute("drop table _raw")
    summary = PrepareSummary()
    summary.distinct_inputs = con.execute("select count(*) from _inputs").fetchall()[0][0]
    reader = con.sql(f"select input_id, {cols} from _inputs").to_arrow_reader(batch_size)
    tasks: Iterator[_Task] = ((batch, today, drop_invalid_ids) for batch in reader)
    parts: list[pa.RecordBatch] = []
    done = 0

    def consume(results: Iterable[pa.RecordBatch]) -> None:
        nonlocal done
        for result in results:
            parts.append(result)
            done += result.num_rows
            if progress is not None:
                progress(done)

    try:
        if workers <= 1:
            with memoised_normalisation(), normalize.batch_gc():
                consume(map(_work, tasks))
        else:
            consume(_in_workers(tasks, workers))
    finally:
        reader.close()  # a failed run leaves the connection usable
    normalised = pa.Table.from_batches(parts, schema=NORMALISED_SCHEMA)
    parts.clear()
    con.register("_normalised", normalised)
    selected = ", ".join(f"n.{c}" for c in RECORD_COLUMNS[2:])
    con.execute(
        f"""create or replace table {table} as
        select r.unique_id, r.source, {selected}
        from _raw_ids r join _normalised n using (input_id)
        where n.reject_reason is null"""
    )
    for source, count in con.execute(
        f"select source, count(*) from {table} group by source"
    ).fetchall():
        summary.rows[source] = count
    for column, counter in (
        ("reject_reason", summary.rejects),
        ("id_dropped_reason", summary.id_dropped),
    ):
        for reason, count in con.execute(
            f"""select n.{column}, count(*) from _raw_ids r join _normalised n using (input_id)
            where n.{column} is not null group by 1"""
        ).fetchall():
            counter[reason] = count
    con.unregister("_normalised")
    con.execute("drop table _raw_ids; drop table _inputs")
    summary.seconds = time.perf_counter() - started
    return summary


def normalized_from_row(row: dict[str, Any]) -> NormalizedRecord:
    """A prepared row (columns :data:`RECORD_COLUMNS`) back as a :class:`NormalizedRecord`,
    for scoring a batch pair with the real-time Python code."""
    return NormalizedRecord(
        name=row["name"],
        latin_name=row["latin_name"],
        pinyin=row["pinyin"],
        pinyin_keys=frozenset(row["pinyin_keys"] or ()),
        birth_date=row["birth_date"],
        sex=row["sex"],
        national_id=row["national_id"],
        region=row["region"],
        address=row["address"],
        address_tokens=frozenset(row["address_tokens"] or ()),
        phone=row["phone"],
        identifiers=frozenset(row["identifiers"] or ()),
    )


def row_from_normalized(unique_id: str, source: str, n: NormalizedRecord) -> dict[str, Any]:
    """One prepared row (columns :data:`RECORD_COLUMNS`) from a :class:`NormalizedRecord`."""
    return dict(zip(RECORD_COLUMNS, (unique_id, source, *_record_values(n)), strict=True))


def _record_values(n: NormalizedRecord) -> tuple[Any, ...]:
    """The values of :data:`RECORD_COLUMNS` after ``unique_id`` and ``source``, in order."""
    return (
        n.name,
        n.latin_name,
        n.name if n.name is not None else n.latin_name,  # name_key
        n.pinyin,
        sorted(n.pinyin_keys),
        n.birth_date,
        n.sex,
        n.national_id,
        n.region,
        n.address,
        sorted(n.address_tokens),
        n.phone,
        sorted(n.identifiers),
    )


_NO_VALUES = (None,) * (len(RECORD_COLUMNS) - 2)  # the values of a rejected row
