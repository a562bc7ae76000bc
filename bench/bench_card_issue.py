"""Bulk card issuance alone (issue 5): wall time and CPU per card of the main process and of
the PostgreSQL backends (the signing processes get the rest of the machine).

Run: .venv/bin/python bench/bench_card_issue.py --people 20000 [--workers 2]
Creates and drops its own PostgreSQL database.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from healthroam.bootstrap import build
from healthroam.cards.bulk import BulkIssuer
from healthroam.config import Settings

import benchlib


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2, help="signing processes")
    parser.add_argument("--batch-size", type=int, default=2000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hr-issue-"))
    name, url = benchlib.create_database()
    try:
        benchlib.migrate(url)
        settings = Settings(database_url=url, data_dir=tmp, log_level="WARNING")
        benchlib.load_people(settings, args.people)
        with build(settings) as platform:
            platform.keys.init()
            issuer = BulkIssuer(platform.cards, workers=args.workers, batch_size=args.batch_size)
            backends = benchlib.cpu_of(benchlib.backend_pids(name))
            cpu, wall = time.process_time(), time.perf_counter()
            summary = issuer.run(all_=True, activate=True)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            after = benchlib.cpu_of(benchlib.backend_pids(name))
        db_cpu = benchlib.cpu_spent(backends, after)
        n = max(summary.issued, 1)
        print(
            f"issued {summary.issued:,} cards in {wall:.1f} s = {summary.issued / wall:,.0f}/s "
            f"({1_000_000 / (summary.issued / wall) / 60:.1f} min per million); main process "
            f"{cpu / n * 1000:.3f} ms CPU per card, PostgreSQL backends {db_cpu / n * 1000:.3f} "
            f"ms; load average {os.getloadavg()[0]:.1f}"
        )
    finally:
        benchlib.drop_database(name)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
