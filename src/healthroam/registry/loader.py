"""`healthroam registry load`: stream a CSV or Parquet feed into the registry.

Each row becomes a source record of the feed's institution and goes through the same
normalisation and real-time matching as a FHIR registration. Rows are committed in chunks
together with the load's progress, so a crash resumes after the last committed chunk;
loading the same file again changes nothing (the file is recognised by its hash, and each
record by its content hash). Rejected rows go to a reject file with the reason.
"""

from __future__ import annotations

import csv
import hashlib
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from healthroam.db.engine import Database
from healthroam.db.tables_registry import registry_loads
from healthroam.errors import HealthroamError, InvalidInput, NotFound
from healthroam.registry.model import Identifier, MatchOutcome, SourceKey, SourceRecord
from healthroam.registry.normalize import normalize_record
from healthroam.registry.service import RegistryService
from healthroam.security.audit import Action
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet

FIELDS = (
    "local_id",
    "name",
    "family",
    "sex",
    "birth_date",
    "national_id",
    "phones",
    "address",
    "region",
    "ethnicity",
    "death_date",
)


@dataclass(frozen=True, slots=True)
class Mapping:
    """How a file's columns become a source record (docs/registry-loading.md)."""

    id_system: str
    columns: dict[str, Any]
    identifiers: dict[str, str] = field(default_factory=dict)
    id_type_column: str | None = None
    national_types: frozenset[str] = frozenset({"01"})
    id_type_systems: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | str) -> Mapping:
        text = _mapping_text(path)
        try:
            spec = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(
                f"mapping file is not valid TOML: {exc}", expression="mapping"
            ) from None
        columns = spec.get("columns") or {}
        unknown = sorted(set(columns) - set(FIELDS))
        if unknown:
            raise InvalidInput(
                f"mapping names unknown field {unknown[0]}; fields are " + ", ".join(FIELDS),
                expression="mapping",
            )
        if "local_id" not in columns or not spec.get("id_system"):
            raise InvalidInput(
                "mapping needs id_system and a local_id column", expression="mapping"
            )
        id_type = spec.get("id_type") or {}
        return cls(
            id_system=str(spec["id_system"]),
            columns=columns,
            identifiers={str(k): str(v) for k, v in (spec.get("identifiers") or {}).items()},
            id_type_column=id_type.get("column"),
            national_types=frozenset(id_type.get("national") or ["01"]),
            id_type_systems={str(k): str(v) for k, v in (id_type.get("systems") or {}).items()},
        )

    def column_of(self, expression: str | None) -> str:
        """The file column a normalisation error refers to (for the reject file)."""
        field_name = {"identifier": "national_id", "birthDate": "birth_date", "gender": "sex"}.get(
            expression or "", expression or ""
        )
        column = self.columns.get(field_name)
        if isinstance(column, list):
            return ",".join(column)
        return str(column) if column else (expression or "")

    def needed_columns(self) -> set[str]:
        needed: set[str] = set(self.identifiers.values())
        for value in self.columns.values():
            needed.update(value if isinstance(value, list) else [value])
        if self.id_type_column:
            needed.add(self.id_type_column)
        return needed

    def record_maker(self, institution: str) -> Callable[[dict[str, Any]], SourceRecord]:
        """``record`` for many rows of one institution: the column names looked up once, not
        per row and field (the bulk loader's workers map millions of rows). Same records, same
        errors in the same order as ``record``."""
        columns = self.columns

        def column(name: str) -> str | None:
            found = columns.get(name)
            return found if isinstance(found, str) else None

        c_local, c_name, c_family, c_sex, c_birth, c_national = map(
            column, ("local_id", "name", "family", "sex", "birth_date", "national_id")
        )
        c_address, c_region, c_ethnicity, c_death = map(
            column, ("address", "region", "ethnicity", "death_date")
        )
        local_expression = str(columns["local_id"])
        birth_expression, death_expression = columns.get("birth_date"), columns.get("death_date")
        identifier_columns = tuple(self.identifiers.items())
        phone_columns = tuple(columns.get("phones") or [])
        id_type_column, national_types = self.id_type_column, self.national_types
        id_type_systems, id_system = self.id_type_systems, self.id_system

        def text(value: Any) -> str | None:  # get() and _text() of record()
            if value is None or value == "":
                return None
            return value if type(value) is str else str(value)

        def make(row: dict[str, Any]) -> SourceRecord:
            get = row.get
            local_id = get(c_local)  # type: ignore[arg-type]
            if local_id is None or local_id == "":
                raise InvalidInput("local id is missing", expression=local_expression)
            national = get(c_national)  # type: ignore[arg-type]
            if national == "":
                national = None
            identifiers = [
                Identifier(system, str(row[c]))
                for system, c in identifier_columns
                if get(c) not in (None, "")
            ]
            if national is not None and id_type_column:
                kind = str(get(id_type_column) or "01")
                if kind not in national_types:
                    system = id_type_systems.get(kind, f"urn:healthroam:id-type:{kind}")
                    identifiers.append(Identifier(system, str(national)))
                    national = None
            phones = tuple(str(row[c]) for c in phone_columns if get(c) not in (None, ""))
            sex = get(c_sex)  # type: ignore[arg-type]
            birth = get(c_birth)  # type: ignore[arg-type]
            death = get(c_death)  # type: ignore[arg-type]
            return SourceRecord(
                key=SourceKey(institution, id_system, str(local_id)),
                name=text(get(c_name)),  # type: ignore[arg-type]
                family=text(get(c_family)),  # type: ignore[arg-type]
                sex=None if sex is None or sex == "" else str(sex),
                birth_date=_date(None if birth == "" else birth, birth_expression),
                national_id=text(national),
                identifiers=tuple(identifiers),
                phones=phones,
                address=text(get(c_address)),  # type: ignore[arg-type]
                region=text(get(c_region)),  # type: ignore[arg-type]
                ethnicity=text(get(c_ethnicity)),  # type: ignore[arg-type]
                death_date=_date(None if death == "" else death, death_expression),
            )

        return make

    def record(self, row: dict[str, Any], institution: str) -> SourceRecord:
        def get(name: str) -> Any:
            column = self.columns.get(name)
            value = row.get(column) if isinstance(column, str) else None
            return None if value in ("", None) else value

        local_id = get("local_id")
        if local_id is None:
            raise InvalidInput("local id is missing", expression=str(self.columns["local_id"]))
        national = get("national_id")
        identifiers = [
            Identifier(system, str(row[column]))
            for system, column in self.identifiers.items()
            if row.get(column) not in (None, "")
        ]
        if national is not None and self.id_type_column:
            kind = str(row.get(self.id_type_column) or "01")
            if kind not in self.national_types:
                system = self.id_type_systems.get(kind, f"urn:healthroam:id-type:{kind}")
                identifiers.append(Identifier(system, str(national)))
                national = None
        phone_columns = self.columns.get("phones") or []
        phones = tuple(str(row[c]) for c in phone_columns if row.get(c) not in (None, ""))
        sex = get("sex")
        return SourceRecord(
            key=SourceKey(institution, self.id_system, str(local_id)),
            name=_text(get("name")),
            family=_text(get("family")),
            sex=str(sex) if sex is not None else None,
            birth_date=_date(get("birth_date"), self.columns.get("birth_date")),
            national_id=_text(national),
            identifiers=tuple(identifiers),
            phones=phones,
            address=_text(get("address")),
            region=_text(get("region")),
            ethnicity=_text(get("ethnicity")),
            death_date=_date(get("death_date"), self.columns.get("death_date")),
        )


def _mapping_text(path: Path | str) -> str:
    candidate = Path(path)
    if candidate.exists():
        return candidate.read_text()
    packaged = resources.files("healthroam.registry").joinpath(f"data/mappings/{path}.toml")
    if packaged.is_file():
        return packaged.read_text()
    raise NotFound(
        f"no mapping file {path} (a path, or one of: population, insurer, hospital)",
        expression="mapping",
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


NUL_REASON = "contains the character U+0000 (NUL), which no field may hold"


def nul_rows(table: pa.Table) -> dict[int, str]:
    """The rows of a batch holding U+0000 in a text column (offset -> its first such column).
    PostgreSQL cannot store the character (it failed the whole load), so such rows are
    rejected; one vectorised look per column, rows only where one is found."""
    found: dict[int, str] = {}
    for name in table.column_names:
        column = table.column(name)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue
        hits = pc.match_substring(column, "\x00")
        if not pc.any(hits).as_py():
            continue
        for offset, hit in enumerate(hits.to_pylist()):
            if hit:
                found.setdefault(offset, name)
    return found


def nul_column(row: dict[str, Any]) -> str | None:
    """The first column of a row whose text holds U+0000 (see :func:`nul_rows`)."""
    for name, value in row.items():
        if type(value) is str and "\x00" in value:
            return name
    return None


def shown_local_id(local_id: Any) -> Any:
    """A local id as the reject file shows it (U+0000 as U+FFFD: a CSV line cannot hold it)."""
    return local_id.replace("\x00", "\ufffd") if type(local_id) is str else local_id


def _date(value: Any, column: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise InvalidInput("not a date (YYYY-MM-DD)", expression=str(column)) from None


def read_batches(path: Path, columns: set[str], batch_size: int) -> Iterator[pa.Table]:
    """Stream the file (Parquet or CSV, by extension) as Arrow tables of ``batch_size`` rows
    (the last may be shorter)."""
    if path.suffix.lower() == ".parquet":
        parquet = pq.ParquetFile(path)
        present = [c for c in parquet.schema_arrow.names if c in columns]
        missing = columns - set(parquet.schema_arrow.names)
        if missing:
            raise InvalidInput(f"file has no column {sorted(missing)[0]}", expression="mapping")
        batches: Iterator[pa.RecordBatch] = parquet.iter_batches(
            batch_size=batch_size, columns=present
        )
    elif path.suffix.lower() in (".csv", ".txt"):
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 22),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in columns}, strings_can_be_null=True
            ),
        )
        missing = columns - set(reader.schema.names)
        if missing:
            raise InvalidInput(f"file has no column {sorted(missing)[0]}", expression="mapping")
        batches = iter(reader)
    else:
        raise InvalidInput("the feed must be .parquet or .csv", expression="file")
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += batch.num_rows
        if held < batch_size:
            continue
        table = pa.Table.from_batches(pending)
        for start in range(0, held - batch_size + 1, batch_size):
            yield table.slice(start, batch_size)
        rest = held % batch_size
        pending = table.slice(held - rest).to_batches() if rest else []
        held = rest
    if held:
        yield pa.Table.from_batches(pending)


def read_rows(path: Path, columns: set[str], batch_size: int) -> Iterator[list[dict[str, Any]]]:
    """Stream the file in batches of row dicts (Parquet or CSV, by extension)."""
    for table in read_batches(path, columns, batch_size):
        yield table.to_pylist()


def unread_batches(
    path: Path, columns: set[str], batch_size: int, skip: int
) -> Iterator[tuple[int, pa.Table]]:
    """``read_batches`` after the first ``skip`` rows (those a resumed load committed before):
    each batch with the number of rows before it in the file."""
    position = 0
    for batch in read_batches(path, columns, batch_size):
        if position + batch.num_rows > skip:
            start = max(0, skip - position)
            yield position + start, batch.slice(start)
        position += batch.num_rows


def unread_rows(
    path: Path, columns: set[str], batch_size: int, skip: int
) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """``read_rows`` after the first ``skip`` rows, each batch with the rows before it."""
    for first, batch in unread_batches(path, columns, batch_size, skip):
        yield first, batch.to_pylist()


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class LoadSummary:
    rows: int = 0
    new: int = 0
    linked: int = 0
    review: int = 0
    unchanged: int = 0
    rejected: int = 0
    resumed_from: int = 0
    already_loaded: bool = False
    # An initial load's state (registry/initial_load.py): its phase and what it deferred.
    initial: dict[str, Any] | None = None

    def stored(self) -> dict[str, Any]:
        """What the progress row keeps: the counts, and an initial load's state."""
        return {**self.as_dict(), "initial_load": self.initial}

    def as_dict(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in (
                "rows",
                "new",
                "linked",
                "review",
                "unchanged",
                "rejected",
                "resumed_from",
                "already_loaded",
            )
        }


def finish_chunk(
    conn: Any,
    registry: RegistryService,
    loader: Principal,
    summary: LoadSummary,
    outcomes: dict[MatchOutcome, int],
    *,
    rows: int,
    rejected: int,
    first_row: int,
    last_row: int,
    digest: str,
    source: str,
) -> None:
    """Count a committed chunk, audit it (one entry per chunk: the operator's write) and
    record how far the load got, all in the chunk's own transaction."""
    summary.rows += rows
    summary.new += outcomes.get(MatchOutcome.NEW, 0)
    summary.linked += outcomes.get(MatchOutcome.LINKED, 0)
    summary.review += outcomes.get(MatchOutcome.REVIEW, 0)
    summary.unchanged += outcomes.get(MatchOutcome.UNCHANGED, 0)
    summary.rejected += rejected
    registry.audit.append(
        conn,
        [
            registry.audit.event(
                loader,
                action=Action.CREATE,
                subtype="bulk-register",
                resource_type="Patient",
                detail=f"rows {first_row}-{last_row} of {digest[:12]}",
            )
        ],
    )
    _record_progress(conn, digest, source, rows_done=last_row, summary=summary.stored())


def loader_principal(client_id: str, source: str, operator: str | None) -> Principal:
    """Who a load writes as: the feed's institution, on its operator's behalf."""
    return Principal(
        client_id=client_id,
        institution_code=source,
        scopes=ScopeSet.parse("system/Patient.cu"),
        purpose_of_use="HOPERAT",
        end_user=operator,
    )


def start_load(db: Database, digest: str, source: str) -> LoadSummary:
    """Where a load of the file ``digest`` for ``source`` starts: a new file gets its
    progress row and an empty summary; an unfinished load resumes from its last committed
    chunk (``resumed_from``); a finished one is not loaded again (``already_loaded``)."""
    fields = LoadSummary.__dataclass_fields__
    with db.transaction() as conn:
        row = conn.execute(
            select(registry_loads).where(
                registry_loads.c.file_hash == digest, registry_loads.c.source == source
            )
        ).first()
        if row is None:
            try:
                with conn.begin_nested():
                    conn.execute(
                        registry_loads.insert().values(
                            file_hash=digest,
                            source=source,
                            rows_done=0,
                            finished=0,
                            summary={},
                            updated_at=datetime.now(UTC),
                        )
                    )
            except IntegrityError:
                pass  # the same file's load started at the same moment elsewhere
            return LoadSummary()
        stored = dict(row.summary or {})
        summary = LoadSummary(**{k: v for k, v in stored.items() if k in fields and k != "initial"})
        summary.initial = stored.get("initial_load")
        if row.finished:
            summary.already_loaded = True
        else:
            summary.resumed_from = int(row.rows_done)
        return summary


def finish_load(db: Database, digest: str, source: str, summary: LoadSummary) -> None:
    with db.transaction() as conn:
        if summary.initial is not None:
            summary.initial = {"phase": "done"}
        _record_progress(conn, digest, source, finished=1, summary=summary.stored())


def record_progress(conn: Any, digest: str, source: str, summary: LoadSummary) -> None:
    """Store the summary (and an initial load's state) without moving the row count."""
    _record_progress(conn, digest, source, summary=summary.stored())


def _record_progress(conn: Any, digest: str, source: str, **values: Any) -> None:
    conn.execute(
        update(registry_loads)
        .where(registry_loads.c.file_hash == digest, registry_loads.c.source == source)
        .values(**values, updated_at=datetime.now(UTC))
    )


def open_reject_file(path: Path, *, resuming: bool) -> TextIO:
    """The load's reject file (CSV): appended to when the load resumes, else new with its
    header row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a" if resuming else "w", newline="", encoding="utf-8")
    if not resuming:
        csv.writer(handle).writerow(["row", "local_id", "field", "reason"])
    return handle


class FeedLoader:
    def __init__(self, db: Database, registry: RegistryService) -> None:
        self.db, self.registry = db, registry

    def load(
        self,
        path: Path,
        *,
        source: str,
        mapping: Mapping,
        reject_file: Path,
        chunk_size: int = 1000,
        operator: str | None = None,
        progress: Callable[[int], None] | None = None,
        stop_after_chunks: int | None = None,
    ) -> LoadSummary:
        """Load ``path`` as the records of institution ``source``.

        ``stop_after_chunks`` ends the run early after that many committed chunks (to test
        resuming as a crash would leave it).
        """
        if not path.is_file():
            raise NotFound(f"no such file: {path.name}", expression="file")
        digest = file_hash(path)
        summary = start_load(self.db, digest, source)
        if summary.already_loaded:
            return summary
        loader = loader_principal("registry-loader", source, operator)
        skip = summary.resumed_from
        chunks = 0
        with open_reject_file(reject_file, resuming=skip > 0) as rejects_handle:
            rejects = csv.writer(rejects_handle)
            for first, rows in unread_rows(path, mapping.needed_columns(), chunk_size, skip):
                self._load_chunk(rows, first, source, mapping, loader, summary, rejects, digest)
                rejects_handle.flush()
                if progress:
                    progress(len(rows))
                chunks += 1
                if stop_after_chunks is not None and chunks >= stop_after_chunks:
                    return summary
        finish_load(self.db, digest, source, summary)
        return summary

    def _load_chunk(
        self,
        rows: list[dict[str, Any]],
        first_row: int,
        source: str,
        mapping: Mapping,
        loader: Principal,
        summary: LoadSummary,
        rejects: Any,
        digest: str,
    ) -> None:
        outcome_counts = {
            MatchOutcome.NEW: 0,
            MatchOutcome.LINKED: 0,
            MatchOutcome.REVIEW: 0,
            MatchOutcome.UNCHANGED: 0,
        }
        rejected: list[list[Any]] = []
        with self.db.transaction() as conn:
            for offset, row in enumerate(rows):
                number = first_row + offset + 1
                local_id = row.get(mapping.columns["local_id"])
                nul = nul_column(row)
                if nul is not None:
                    rejected.append([number, shown_local_id(local_id), nul, NUL_REASON])
                    continue
                try:
                    record = mapping.record(row, source)
                    normalized = normalize_record(record)
                    with conn.begin_nested():
                        result = self.registry.register_in(
                            conn, loader, record, normalized, audit=False
                        )
                except HealthroamError as error:
                    column = mapping.column_of(error.expression)
                    rejected.append([number, local_id, column, error.detail])
                    continue
                outcome_counts[result.outcome] += 1
            finish_chunk(
                conn,
                self.registry,
                loader,
                summary,
                outcome_counts,
                rows=len(rows),
                rejected=len(rejected),
                first_row=first_row + 1,
                last_row=first_row + len(rows),
                digest=digest,
                source=source,
            )
        for line in rejected:
            rejects.writerow(line)
