"""HL7 v2 gateway durability (issue 6): no acknowledged message may be lost when the gateway
is killed with SIGKILL mid-stream.

Each round starts `healthroam gateway` (the test kit's Observation handler), drives it with
several MLLP connections that record every control id answered AA, kills the process with
SIGKILL at a random moment 0.2-1.5 s after the round's first ACK, and goes on. After all
rounds, every acknowledged control id must be in the message log, and every logged message's
Observation in the FHIR store (they commit in one transaction). Prints a Markdown table row.

Run (from the worktree):
  PYTHONPATH=src .venv/bin/python bench/bench_hl7_durability.py --backend postgresql --rounds 20
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import func, select

from healthroam.db.engine import create_database_engine
from healthroam.db.schema import fhir_resources
from healthroam.db.tables_exchange import hl7_messages

from bench_hl7_gateway import GatewayProcess, Tally, drive, fresh_database


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    tally = Tally()
    kills_mid_stream = 0
    with tempfile.TemporaryDirectory() as tmp, fresh_database(args.backend, Path(tmp)) as url:
        gateway = GatewayProcess(url, Path(tmp))
        for round_no in range(args.rounds):
            gateway.start()
            stop = threading.Event()
            driver = threading.Thread(
                target=drive,
                args=(
                    gateway.port,
                    args.connections,
                    time.monotonic() + 600,
                    f"r{round_no}",
                    tally,
                    stop,
                ),
            )
            before = len(tally.acked)
            driver.start()
            deadline = time.monotonic() + 120
            while len(tally.acked) == before and time.monotonic() < deadline:
                time.sleep(0.01)  # the first message of a fresh process loads definitions
            time.sleep(rng.uniform(0.2, 1.5))
            in_flight = len(tally.acked)
            gateway.kill()
            stop.set()
            driver.join(60)
            if in_flight > before:  # messages were flowing when the kill came
                kills_mid_stream += 1
            print(f"round {round_no + 1}: {len(tally.acked) - before} acknowledged", flush=True)
        engine = create_database_engine(url)
        with engine.connect() as conn:
            stored = {
                r.control_id
                for r in conn.execute(
                    select(hl7_messages.c.control_id).where(
                        hl7_messages.c.application == "HIS", hl7_messages.c.facility == "H001"
                    )
                )
            }
            observations = conn.execute(
                select(func.count())
                .select_from(fhir_resources)
                .where(fhir_resources.c.resource_type == "Observation")
            ).scalar_one()
        engine.dispose()
    acked = set(tally.acked)
    missing = acked - stored
    print()
    print(
        "| backend | SIGKILLs | acknowledged (AA) | in message log | acknowledged but missing |"
        " log rows without their Observation |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    print(
        f"| {args.backend} | {args.rounds} ({kills_mid_stream} with messages in flight) | "
        f"{len(acked)} | {len(stored)} | {len(missing)} | {len(stored) - observations} |"
    )
    if missing:
        raise SystemExit(f"LOST: {sorted(missing)[:20]}")


if __name__ == "__main__":
    main()
