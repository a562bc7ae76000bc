"""Benchmark batch linkage end to end: normalise + block + predict + cluster, and accuracy.

    .venv/bin/python bench/bench_linkage.py --records 1000000
    .venv/bin/python bench/bench_linkage.py --records 10000000 --no-default

Generates a synthetic province with about ``--records`` source records (2.9 per person) under
/tmp, links it with the packaged ``matching.json`` (or ``--model``), scores the clusters
against the truth, and does the same with Splink's default-style model (standard library
comparisons on the raw columns, trained on the same data) unless ``--no-default``. Deletes
the data afterwards unless ``--keep``. Peak memory is the largest resident set of this
process and of its normalisation workers; the normalisation's CPU seconds are reported for this
process and for the workers. Results go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import duckdb

from healthroam.registry import linkage
from healthroam.registry.linkage_prepare import prepare
from healthroam.synth.writer import write_province

RECORDS_PER_PERSON = 2.906  # what the generator gives with its default source rates


def _peak_mib() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def _sweep(con: duckdb.DuckDBPyConnection, spec: dict[str, Any], weights: list[float]) -> Any:
    """Accuracy when clustering at each of ``weights`` (posterior log2 odds) instead of the
    model's link threshold: one prediction at the lowest, one clustering per weight."""
    linker, scored = linkage.predict(con, "records", spec, min_weight=min(weights))
    out = {}
    for weight in sorted(weights):
        clustered = linker.clustering.cluster_pairwise_predictions_at_threshold(
            scored, threshold_match_weight=weight
        )
        out[str(weight)] = linkage.evaluate(clustered.physical_name, "truth", con=con).as_dict()
        clustered.drop_table_from_database_and_remove_from_cache()
    scored.drop_table_from_database_and_remove_from_cache()
    return out


def _cpu_seconds() -> tuple[float, float]:
    """User + system CPU seconds of this process and of its finished child processes."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=202)
    parser.add_argument("--model", type=Path, default=None, help="matching.json")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="12GB")
    parser.add_argument("--no-default", action="store_true", help="skip Splink's default model")
    parser.add_argument("--province", type=Path, default=None, help="use this province")
    parser.add_argument("--keep", action="store_true", help="keep the generated province")
    parser.add_argument(
        "--sweep",
        default="",
        help="comma-separated link weights: also cluster at each and report its accuracy",
    )
    args = parser.parse_args()

    spec = json.loads(args.model.read_text()) if args.model else linkage.packaged_spec()
    people = round(args.records / RECORDS_PER_PERSON)
    out = args.province or Path(tempfile.mkdtemp(prefix="bench-linkage-", dir="/tmp"))
    result: dict[str, Any] = {}
    try:
        if args.province is None:
            started = time.perf_counter()
            write_province(out, people, "parquet", args.seed)
            result["synth_seconds"] = round(time.perf_counter() - started, 1)
        con = duckdb.connect()
        con.execute("set threads = 2")
        con.execute(f"set memory_limit = '{args.memory_limit}'")
        con.execute(f"set temp_directory = '{tempfile.gettempdir()}'")

        started = time.perf_counter()
        cpu_before = _cpu_seconds()
        prepared = prepare(
            con,
            [out],
            "records",
            workers=args.workers,
            today=date(2026, 11, 25),
            keep_raw=None if args.no_default else "raw",
        )
        normalised = time.perf_counter()
        cpu_after = _cpu_seconds()
        summary = linkage.link(con, "records", spec)
        finished = time.perf_counter()
        result["ours"] = {
            "prepare": prepared.as_dict() | {"rows_by_source": None},
            "normalise_seconds": round(normalised - started, 1),
            # CPU of the normalisation: this process (DuckDB) and the worker processes
            "normalise_cpu_s_main_and_workers": [
                round(after - before, 1)
                for before, after in zip(cpu_before, cpu_after, strict=True)
            ],
            "block_predict_cluster_seconds": round(finished - normalised, 1),
            "end_to_end_seconds": round(finished - started, 1),
            "link": summary,
            "peak_rss_mib_main_and_worker": [round(v) for v in _peak_mib()],
        }
        linkage.load_truth(con, out, "truth")
        result["ours"]["accuracy"] = linkage.evaluate("clusters", "truth", con=con).as_dict()
        print(json.dumps(result, indent=2), flush=True)
        if args.sweep:
            result["ours"]["sweep"] = _sweep(con, spec, [float(w) for w in args.sweep.split(",")])
            print(json.dumps(result["ours"]["sweep"], indent=2), flush=True)

        if not args.no_default:
            started = time.perf_counter()
            linker = linkage.train_default_model(con, "raw")
            trained = time.perf_counter()
            linkage.link_default_model(linker, con)
            finished = time.perf_counter()
            result["splink_default"] = {
                "train_seconds": round(trained - started, 1),
                "predict_cluster_seconds": round(finished - trained, 1),
                "accuracy": linkage.evaluate("default_clusters", "truth", con=con).as_dict(),
                "peak_rss_mib_main_and_worker": [round(v) for v in _peak_mib()],
            }
    finally:
        if args.province is None and not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    result["machine"] = (
        f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}"
    )
    result["people"] = people
    result["model"] = str(args.model or "packaged matching.json")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
