"""Writing a synthetic province to files, chunk by chunk.

Layout of ``out_dir`` (``EXT`` is ``parquet`` or ``csv``)::

    institutions.EXT            the hospitals
    sources/population.EXT      the population base (人口库)
    sources/insurer.EXT         the insurer (医保)
    sources/hospital-CODE.EXT   one file per hospital
    truth/people.EXT            the true population
    truth/links.EXT             record_key -> person_id, with the errors each record carries
    manifest.json               what was generated: seed, counts per file, error rates
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal, Protocol

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from healthroam.errors import InvalidInput
from healthroam.synth.corrupt import ErrorRates
from healthroam.synth.places import institutions
from healthroam.synth.population import (
    DEFAULT_AS_OF,
    DEFAULT_CHUNK_SIZE,
    ETHNICITIES,
    PersonChunk,
    PopulationGenerator,
    digits,
    take,
)
from healthroam.synth.sources import SourceDeriver, _dates

Format = Literal["parquet", "csv"]
FORMATS: tuple[Format, ...] = ("parquet", "csv")


class _Sink(Protocol):
    def write_table(self, table: pa.Table) -> None: ...
    def close(self) -> None: ...


@dataclass
class ProvinceSummary:
    """What :func:`write_province` wrote."""

    out_dir: str
    format: str
    seed: int
    people: int
    as_of: str
    chunk_size: int
    rows: dict[str, int] = field(default_factory=dict)  # file (relative path) -> rows

    @property
    def records(self) -> int:
        return sum(n for path, n in self.rows.items() if path.startswith("sources/"))


class _Files:
    def __init__(self, out_dir: Path, fmt: Format) -> None:
        self.out_dir = out_dir
        self.fmt = fmt
        self.sinks: dict[str, _Sink] = {}
        self.rows: dict[str, int] = {}

    def write(self, name: str, table: pa.Table) -> None:
        path = f"{name}.{self.fmt}"
        sink = self.sinks.get(path)
        if sink is None:
            target = self.out_dir / path
            target.parent.mkdir(parents=True, exist_ok=True)
            if self.fmt == "parquet":
                sink = pq.ParquetWriter(str(target), table.schema, compression="zstd")
            else:
                sink = pacsv.CSVWriter(str(target), table.schema)
            self.sinks[path] = sink
            self.rows[path] = 0
        sink.write_table(table)
        self.rows[path] += table.num_rows

    def close(self) -> None:
        for sink in self.sinks.values():
            sink.close()


def people_table(chunk: PersonChunk, generator: PopulationGenerator) -> pa.Table:
    """The true population of a chunk, as written to ``truth/people``."""
    ethnicity = chunk.ethnicity.astype("int64")
    names = pa.array([ETHNICITIES.get(c, "") for c in range(100)])
    return pa.table(
        {
            "person_id": chunk.person_id,
            "name": chunk.name,
            "sex": pa.array(chunk.sex),
            "birth_date": _dates(chunk.birth_date),
            "death_date": _dates(chunk.death_date),
            "ethnicity_code": digits(ethnicity, 2),
            "ethnicity": take(names, ethnicity),
            "nationality": chunk.nationality,
            "id_number": chunk.id_number,
            "id15": chunk.id15,
            "passport_number": chunk.passport,
            "region_code": take(generator.t.region_code_strings, chunk.region),
            "address": chunk.address,
            "phone": chunk.phone,
            "landline": chunk.landline,
            "namesake_of": chunk.namesake_of,
        }
    )


def institutions_table() -> pa.Table:
    rows = institutions()
    return pa.table(
        {
            "code": [h.code for h in rows],
            "name": [h.name for h in rows],
            "level": pa.array([h.level for h in rows], type=pa.int8()),
            "kind": [h.kind for h in rows],
            "region_code": [h.region_code for h in rows],
        }
    )


def write_province(
    out_dir: Path | str,
    people: int,
    fmt: Format = "parquet",
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    as_of: date = DEFAULT_AS_OF,
    hospital_rates: ErrorRates | None = None,
) -> ProvinceSummary:
    """Generate ``people`` people and write every source, the truth and the institutions.

    Memory stays flat: one chunk of ``chunk_size`` people is alive at a time. ``progress`` is
    called with the number of people finished after each chunk. Deterministic for a given
    ``seed``, ``chunk_size`` and ``as_of``.
    """
    if people < 1:
        raise InvalidInput("people must be at least 1", expression="people")
    if fmt not in FORMATS:
        raise InvalidInput("format must be parquet or csv", expression="format")
    if chunk_size < 1:
        raise InvalidInput("chunk size must be at least 1", expression="chunk_size")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    generator = PopulationGenerator(seed, as_of=as_of)
    deriver = (
        SourceDeriver(generator, hospital_rates=hospital_rates)
        if hospital_rates is not None
        else SourceDeriver(generator)
    )
    files = _Files(out, fmt)
    try:
        files.write("institutions", institutions_table())
        for index, start in enumerate(range(0, people, chunk_size)):
            chunk = generator.chunk(index, start, min(chunk_size, people - start))
            files.write("truth/people", people_table(chunk, generator))
            for batch in deriver.derive(index, chunk):
                files.write(f"sources/{batch.source}", batch.records)
                files.write("truth/links", batch.links)
            if progress is not None:
                progress(start + len(chunk))
    finally:
        files.close()
    summary = ProvinceSummary(
        out_dir=str(out),
        format=fmt,
        seed=seed,
        people=people,
        as_of=as_of.isoformat(),
        chunk_size=chunk_size,
        rows=dict(sorted(files.rows.items())),
    )
    manifest = asdict(summary) | {
        "error_rates": {
            "population": asdict(deriver.population_rates),
            "hospital": asdict(deriver.hospital_rates),
            "insurer": asdict(deriver.insurer_rates),
        }
    }
    (out / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n")
    return summary
