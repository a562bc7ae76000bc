"""CPU per row of the registry's normaliser and of the bulk loader's worker side, in one process.

    PYTHONPATH=src .venv/bin/python bench/bench_normalise.py --province /tmp/prov --rows 200000

Runs, in this process (no workers, no database), on one synthetic province (``healthroam
synth``; ``--people`` generates one under ``--province`` if it is missing):

* ``linkage``: the distinct input rows of every source file through
  ``linkage_prepare.normalise_batch``, as the batch-linkage workers run them (memoised);
* ``loader``: the population feed's rows through ``bulk._prepare`` (mapping, normalisation,
  blocking keys, JSON, content hash, golden record and COPY lines), as a bulk-load worker runs
  them on PostgreSQL.

Prints CPU seconds (``time.process_time``) and µs per row, plus a SHA-256 digest of each
output (the normalised table; the prepared rows with the random master index ID masked), so
two versions of the code can be compared for identical results as well as speed: run it with
``PYTHONPATH`` pointing at each checkout, alternately.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from healthroam.registry import bulk, linkage_prepare, normalize
from healthroam.registry.loader import Mapping

_MASTER_INDEX_ID = re.compile(r"\t[0-9A-F]{64}\t")


def linkage_run(province: Path, limit: int | None) -> dict[str, object]:
    con = duckdb.connect()
    con.execute("set threads = 1")
    files = linkage_prepare.source_files([province])
    union = "\nunion all\n".join(linkage_prepare.source_select_sql(con, p) for p in files)
    cols = ", ".join(linkage_prepare.INPUT_COLUMNS)
    query = f"select distinct {cols} from ({union})"
    ordered = f"select row_number() over () as input_id, * from ({query} order by all)"
    if limit:
        ordered += f" limit {limit}"
    con.execute(f"create temp table inputs as {ordered}")
    reader = con.sql("select * from inputs order by input_id").to_arrow_reader(20_000)
    batches = list(reader)
    rows = sum(b.num_rows for b in batches)
    digest = hashlib.sha256()
    today = date(2026, 11, 25)
    cpu = 0.0
    # As a batch-linkage worker runs (main has no batch_gc: the default thresholds then).
    tuned = getattr(normalize, "batch_gc", contextlib.nullcontext)
    with linkage_prepare.memoised_normalisation(), tuned():
        for batch in batches:
            started = time.process_time()
            out = linkage_prepare.normalise_batch(batch, today)
            cpu += time.process_time() - started
            digest.update(json.dumps(out.to_pydict(), ensure_ascii=False).encode())
    return _result(rows, cpu, digest)


def loader_run(province: Path, limit: int | None) -> dict[str, object]:
    table = pq.read_table(province / "sources" / "population.parquet")
    if limit:
        table = table.slice(0, limit)
    mapping = Mapping.load("population")
    columns = sorted(mapping.needed_columns())
    rows = table.select(columns)
    actor = bulk.Actor("POP", None, "registry-bulk-loader")
    stamp = datetime(2026, 11, 30, tzinfo=UTC)  # fixed, so that digests compare
    digest = hashlib.sha256()
    cpu = 0.0
    part = 5_000  # as the loader's pieces: chunk 20,000 over 2 workers x 2
    getattr(normalize, "tune_gc_for_batches", lambda: None)()  # as the workers (if any)
    for first in range(0, rows.num_rows, part):
        piece = rows.slice(first, part)
        started = time.process_time()
        ids = [bulk.Ids(first + i, first + i) for i in range(1, piece.num_rows + 1)]
        prepared = bulk._prepare(bulk.Piece(piece, first, "POP", mapping, actor, 3, ids, stamp))
        cpu += time.process_time() - started
        for p in prepared:
            values: list[Any] = list(p)
            if p.copy is not None:  # (the lines are UTF-8 bytes since decision 0050)
                lines = [c.decode() if isinstance(c, bytes) else c for c in p.copy]
                values[-2] = [_MASTER_INDEX_ID.sub("\t<mid>\t", lines[0]), *lines[1:]]
            digest.update(json.dumps(values, ensure_ascii=False).encode())
    return _result(rows.num_rows, cpu, digest)


def _result(rows: int, cpu: float, digest: Any) -> dict[str, object]:
    return {
        "rows": rows,
        "cpu_s": round(cpu, 2),
        "us_per_row": round(cpu / rows * 1e6, 1),
        "sha256": digest.hexdigest(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--province", type=Path, required=True)
    parser.add_argument("--people", type=int, default=100_000, help="if it must be generated")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rows", type=int, default=None, help="at most this many rows each")
    parser.add_argument("--only", choices=("linkage", "loader"), default=None)
    args = parser.parse_args()
    if not (args.province / "manifest.json").exists():
        from healthroam.synth.writer import write_province

        write_province(args.province, args.people, "parquet", args.seed)
    result: dict[str, object] = {"load_average_1min": round(os.getloadavg()[0], 2)}
    if args.only in (None, "linkage"):
        result["linkage"] = linkage_run(args.province, args.rows)
    if args.only in (None, "loader"):
        result["loader"] = loader_run(args.province, args.rows)
    result["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
