"""HL7 v2 gateway throughput (issue 6): N concurrent MLLP connections over real sockets to a
`healthroam gateway` process; each message is an ORU^R01 whose OBX becomes an Observation
written through the RecordService (audited) by the test kit's handler; every ACK is sent after
the transaction holding the message and its log row has committed (group commit).

Run (from the worktree):
  PYTHONPATH=src .venv/bin/python bench/bench_hl7_gateway.py --backend postgresql
  PYTHONPATH=src .venv/bin/python bench/bench_hl7_gateway.py --backend sqlite --seconds 10
A fresh database is created (and dropped). Prints one Markdown table row per run.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from healthroam.bootstrap import build  # noqa: E402
from healthroam.config import Settings  # noqa: E402
from healthroam.db.migrate import upgrade  # noqa: E402
from healthroam.exchange.hl7.mllp import MllpClient  # noqa: E402
from healthroam.exchange.hl7.service import SenderService  # noqa: E402
from hl7_testkit import oru  # noqa: E402

import benchlib  # noqa: E402


@contextmanager
def fresh_database(backend: str, workdir: Path) -> Iterator[str]:
    """A migrated database with hospital H001 and its HIS as a sender; PostgreSQL ones are
    dropped afterwards."""
    with benchlib.temporary_database(backend == "postgresql", workdir) as (_, url):
        settings = Settings(database_url=url, data_dir=workdir)
        with build(settings) as platform:
            upgrade(platform.db.engine)
            platform.institutions.add(
                code="H001", name="海南省人民医院", kind="hospital", region="460106", level=3
            )
            SenderService(platform.db).add(
                application="HIS", facility="H001", institution_code="H001"
            )
        yield url


class GatewayProcess:
    """`python -m healthroam gateway` on a free port, with the test kit's handler."""

    def __init__(
        self,
        url: str,
        workdir: Path,
        handler: str = "hl7_testkit:build",
        processes: int = 1,
        **settings: str,
    ) -> None:
        self.url, self.workdir, self.settings, self.handler = url, workdir, settings, handler
        self.processes = processes
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = workdir / "gateway.log"

    def start(self) -> None:
        env = benchlib.server_env(
            PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]),
            HEALTHROAM_DATABASE_URL=self.url,
            HEALTHROAM_DATA_DIR=str(self.workdir),
            **{f"HEALTHROAM_{k.upper()}": v for k, v in self.settings.items()},
        )
        log = self.log_path.open("a")
        offset = self.log_path.stat().st_size
        # One process picks a free port itself; several share a fixed one with SO_REUSEPORT.
        port = benchlib.free_port() if self.processes > 1 else 0
        command = [sys.executable, "-m", "healthroam", "gateway", "--port", str(port)]
        command += ["--handler", self.handler, "--processes", str(self.processes)]
        self.process = subprocess.Popen(
            command,
            env=env | {"HEALTHROAM_LOG_LEVEL": "INFO"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with self.log_path.open() as f:
                f.seek(offset)
                found = re.findall(r"listening on [\d.]+:(\d+)", f.read())
            if len(found) >= self.processes:
                self.port = int(found[0])
                return
            if self.process.poll() is not None:
                raise RuntimeError(self.log_path.read_text()[-2000:])
            time.sleep(0.05)
        raise RuntimeError("gateway did not start")

    def cpu_seconds(self) -> float:
        """User + system CPU time the gateway processes have used so far (Linux /proc)."""
        assert self.process is not None
        return sum(benchlib.cpu_of(benchlib.with_children(self.process.pid)).values())

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


@dataclass
class Tally:
    codes: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, control_id: str, code: str, seconds: float) -> None:
        with self.lock:
            self.codes[code] = self.codes.get(code, 0) + 1
            self.latencies.append(seconds)
            if code == "AA":
                self.acked.append(control_id)


def _msa_code(ack: bytes) -> str:
    start = ack.find(b"\rMSA")
    return ack[start + 5 : start + 7].decode("ascii", "replace") if start >= 0 else "??"


def drive(
    port: int, connections: int, until: float, prefix: str, tally: Tally, stop: threading.Event
) -> None:
    """``connections`` threads, each one connection sending a message, waiting for its ACK."""

    def one(n: int) -> None:
        try:
            client = MllpClient("127.0.0.1", port, timeout=30)
        except OSError:
            return
        with client:
            m = 0
            while time.monotonic() < until and not stop.is_set():
                control_id = f"{prefix}-{n}-{m}"
                payload = oru(control_id, values=(f"{5 + m % 50 / 10:.1f}",)).encode()
                started = time.perf_counter()
                try:
                    ack = client.send(payload)
                except OSError:
                    return
                except Exception:
                    return
                tally.add(control_id, _msa_code(ack), time.perf_counter() - started)
                m += 1

    threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, fresh_database(args.backend, Path(tmp)) as url:
        gateway = GatewayProcess(
            url,
            Path(tmp),
            handler="hl7_testkit:build_null" if args.null_handler else "hl7_testkit:build",
            processes=args.processes,
            gateway_writer_threads=str(args.writers),
            gateway_group_commit_max=str(args.group_max),
        )
        gateway.start()
        try:
            # Warm-up (imports, connection pool, first plans), not counted.
            drive(gateway.port, 2, time.monotonic() + 2, "warm", Tally(), threading.Event())
            tally = Tally()
            cpu_before = gateway.cpu_seconds()
            started = time.monotonic()
            drive(
                gateway.port,
                args.connections,
                started + args.seconds,
                "run",
                tally,
                threading.Event(),
            )
            elapsed = time.monotonic() - started
            cpu = gateway.cpu_seconds() - cpu_before
        finally:
            gateway.stop()
        lat = sorted(tally.latencies)
        total = len(lat)
        p50 = statistics.median(lat) * 1000 if lat else 0.0
        p95 = lat[int(0.95 * (total - 1))] * 1000 if lat else 0.0
        handler = "none" if args.null_handler else "Observation"
        print(
            f"| {args.backend} | {handler} | {args.processes} | {args.connections} | "
            f"{args.writers} | "
            f"{args.group_max} | "
            f"{total} | {total / elapsed:.0f} | {p50:.1f} | {p95:.1f} | "
            f"{cpu / max(total, 1) * 1000:.2f} | {tally.codes} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--processes", type=int, default=1, help="gateway processes")
    parser.add_argument(
        "--null-handler",
        action="store_true",
        help="a handler that writes nothing: the transport's own cost (framing, parsing, "
        "idempotency row, group commit)",
    )
    parser.add_argument("--group-max", type=int, default=200)
    args = parser.parse_args()
    print(
        "| backend | handler writes | processes | connections | writer threads | group max | "
        "messages | msg/s | p50 ms | p95 ms | gateway CPU ms/msg | ACK codes |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    run(args)


if __name__ == "__main__":
    main()
