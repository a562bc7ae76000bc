"""HL7 v2 gateway driven by the hospital simulator (issue 6): msg/s, ACK latency and CPU per
message of the gateway process(es) and of PostgreSQL's backends, over real MLLP sockets.

A fresh PostgreSQL database is created, migrated and dropped; `healthroam gateway` (the
platform's dispatcher: FHIR mapping, registry, recognition, message log) runs on a free port;
`healthroam simulate hospitals --setup` registers the hospitals and warms up for a few seconds,
then `healthroam simulate hospitals` runs for --seconds (HL7 only). CPU is read from /proc
around the measured run (gateway with its children; the database's backends).

The simulator shares the machine's cores, so its own CPU is reported too (decision 0063), per
message ACKed: "sending" is its user + system time from when its hospital threads are first
seen running (/proc/<pid>/task, sampled every 20 ms) to when they are last seen - building the
messages, the sockets, the threads; "in all" is the whole process (waited for: its rusage),
with the imports and the synthetic population made before the first message. The traffic is
unchanged (the simulator's own code is not touched by this measure).

Run: PYTHONPATH=src .venv/bin/python bench/bench_hl7_simulated.py [--processes 2] [--writers 1]
Prints the gateway's "stopped" log lines (groups, second passes), then one Markdown table row:
label | hospitals | processes x writers | sent | AA / AE / AR / no ACK | msg/s | ACK p50 / p95
ms | gateway CPU ms/msg | PostgreSQL CPU ms/msg | both | simulator CPU ms/msg sending | in all |
load average | elapsed.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import benchlib
from bench_hl7_gateway import ROOT, GatewayProcess


@dataclass
class SimulatorCpu:
    """CPU seconds of the `simulate hospitals` process: in all (imports and population
    included) and while its hospital threads were running (the sending itself)."""

    total: float = 0.0
    sending: float = 0.0


def simulate(
    port: int, env: dict[str, str], seconds: float, rate: float, setup: bool, hospitals: int
) -> tuple[str, SimulatorCpu]:
    command = [sys.executable, "-m", "healthroam", "simulate", "hospitals"]
    command += ["--count", str(hospitals)]
    command += ["--rate", str(rate), "--seconds", str(seconds), "--port", str(port)]
    if setup:
        command.append("--setup")

    def reaped() -> float:  # CPU of the children waited for so far
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    before = reaped()
    process = subprocess.Popen(
        command,
        env=env | {"COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    cpu = SimulatorCpu()
    done = threading.Event()

    def watch() -> None:  # CPU when the hospital threads are first and last seen running
        first: float | None = None
        task = Path(f"/proc/{process.pid}/task")
        while not done.is_set():
            try:
                running = len(os.listdir(task)) >= hospitals
            except OSError:
                return
            now = benchlib.cpu_seconds(process.pid)
            if running:
                first = now if first is None else first
                cpu.sending = now - first
            done.wait(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = process.communicate()
    done.set()
    watcher.join()
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command, out, err)
    cpu.total = reaped() - before
    return out, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=1, help="gateway processes")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--rate", type=float, default=1000, help="offered messages/s")
    parser.add_argument("--writers", type=int, default=4, help="writer threads per process")
    parser.add_argument("--label", default="", help="a name for the code measured")
    parser.add_argument(
        "--hospitals",
        type=int,
        default=20,
        help="simulated hospitals: one connection each, each waiting for its ACK, so at most "
        "this many messages are in flight",
    )
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        benchlib.temporary_database(True, Path(tmp)) as (name, url),
    ):
        benchlib.migrate(url)
        workdir = Path(tmp)
        env = benchlib.server_env(
            PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]),
            HEALTHROAM_DATABASE_URL=url,
            HEALTHROAM_DATA_DIR=str(workdir),
        )
        gateway = GatewayProcess(
            url,
            workdir,
            handler="healthroam.exchange.hl7.handlers:platform_dispatcher",
            processes=args.processes,
            gateway_writer_threads=str(args.writers),
        )
        gateway.start()
        try:
            simulate(
                gateway.port, env, 3, args.rate, setup=True, hospitals=args.hospitals
            )  # hospitals, warm-up
            pids = benchlib.backend_pids(name)
            before = benchlib.cpu_of(pids)
            cpu_before = gateway.cpu_seconds()
            started = time.monotonic()
            out, simulator = simulate(
                gateway.port, env, args.seconds, args.rate, setup=False, hospitals=args.hospitals
            )
            elapsed = time.monotonic() - started
            cpu = gateway.cpu_seconds() - cpu_before
            pids = sorted({*pids, *benchlib.backend_pids(name)})
            server = benchlib.cpu_spent(before, benchlib.cpu_of(pids))
        finally:
            gateway.stop()
        stopped = re.findall(r"hl7 gateway stopped: .*", gateway.log_path.read_text())
    row = next(line for line in out.splitlines() if re.match(r"^\W*\d+\s*\W", line))
    sent, aa, ae, ar, none, rate, p50, p95 = re.findall(r"[\d.]+", row)[:8]
    total = max(int(aa) + int(ae) + int(ar), 1)
    for line in stopped:  # groups and second passes, per process (where the code logs them)
        print(f"  {line}")
    print(
        f"| {args.label} | {args.hospitals} | {args.processes} x {args.writers} | {sent} | "
        f"{aa} / {ae} / {ar} / {none} | {rate} | "
        f"{p50} / {p95} | {cpu / total * 1000:.2f} | {server / total * 1000:.2f} | "
        f"{(cpu + server) / total * 1000:.2f} | {simulator.sending / total * 1000:.2f} | "
        f"{simulator.total / total * 1000:.2f} | {os.getloadavg()[0]:.1f} | {elapsed:.0f} s |"
    )


if __name__ == "__main__":
    main()
