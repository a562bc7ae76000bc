"""Benchmark `healthroam synth`: end-to-end generation time, throughput and peak memory.

    .venv/bin/python bench/bench_synth.py --people 1000000
    .venv/bin/python bench/bench_synth.py --people 10000000

Writes Parquet under a temporary directory (in /tmp) and deletes it afterwards unless --keep.
Peak memory is the process's maximum resident set size. Results go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

from healthroam.synth.writer import FORMATS, write_province


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--format", choices=FORMATS, default="parquet")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep", action="store_true", help="keep the output files")
    args = parser.parse_args()

    out = Path(tempfile.mkdtemp(prefix="bench-synth-", dir="/tmp"))
    last = [time.perf_counter()]
    started = last[0]

    def progress(done: int) -> None:
        now = time.perf_counter()
        if now - last[0] > 30:
            print(f"  {done:>11,} people  {now - started:7.1f} s", flush=True)
            last[0] = now

    try:
        summary = write_province(out, args.people, args.format, args.seed, progress)
        wall = time.perf_counter() - started
        size = _size(out)
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"machine      {os.cpu_count()} cores, {platform.python_implementation()} "
          f"{platform.python_version()}")  # fmt: skip
    print(f"people       {summary.people:,}")
    print(f"records      {summary.records:,} source records in {len(summary.rows)} files")
    print(
        f"output       {size / 2**20:,.0f} MiB {args.format}" + ("" if args.keep else " (deleted)")
    )
    print(f"wall time    {wall:,.1f} s")
    rate = summary.records / wall
    print(f"throughput   {summary.people / wall:,.0f} people/s, {rate:,.0f} records/s")
    print(f"peak RSS     {peak_mib:,.0f} MiB")


if __name__ == "__main__":
    main()
