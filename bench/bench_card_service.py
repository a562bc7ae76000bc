"""Health card service benchmark (issue 5): bulk issuance into PostgreSQL, and dynamic-code
verification through the HTTP API (a real uvicorn server, ``wrk`` as the load generator).

Run: .venv/bin/python bench/bench_card_service.py --people 100000
Needs PostgreSQL (HEALTHROAM_TEST_POSTGRES_URL, default postgres@127.0.0.1) and Debian's wrk.
A fresh database is created and dropped. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import select

from healthroam.bootstrap import build
from healthroam.cards.bulk import BulkIssuer
from healthroam.cards.qr import make_dynamic_code
from healthroam.config import Settings
from healthroam.db.tables_cards import cards
from healthroam.keys.model import KeyPurpose

import benchlib

PORT = 8765
WRK_SCRIPT = """
-- tid is a global that setup() sets in each thread's state (a local would shadow it and
-- every thread would send the same codes, which the server then refuses as replays).
local codes, i, nthreads = {}, 0, 1
local counter = 0
function setup(thread) thread:set("tid", counter); counter = counter + 1 end
function init(args)
  nthreads = tonumber(args[2])
  local n = 0
  for line in io.lines(args[1]) do
    if n % nthreads == tid then codes[#codes + 1] = line end
    n = n + 1
  end
  wrk.headers["Authorization"] = "Bearer " .. args[3]
  wrk.headers["Content-Type"] = "application/json"
end
function request()
  i = i + 1
  local body = '{"text":"' .. codes[i] .. '","step":"01","channel":"02","terminal":"BENCH"}'
  return wrk.format("POST", "/cards/verify", nil, body)
end
"""


def bench_issuance(settings: Settings, workers: int) -> tuple[int, float]:
    with build(settings) as platform:
        platform.keys.init()
        issuer = BulkIssuer(platform.cards, workers=workers, batch_size=2000)
        started = time.perf_counter()
        summary = issuer.run(all_=True, activate=True)
        return summary.issued, time.perf_counter() - started


def make_codes(settings: Settings, cards_used: int, per_card: int, path: Path) -> int:
    with build(settings) as platform:
        key_id, key = platform.keys.symmetric(KeyPurpose.QR)
        with platform.db.transaction(readonly=True) as conn:
            ehc_ids = [
                r[0] for r in conn.execute(select(cards.c.ehc_id).limit(cards_used)).fetchall()
            ]
    now = int(time.time())
    lines = [
        make_dynamic_code(ehc_id, key_id, key, now - offset)
        for offset in range(per_card)
        for ehc_id in ehc_ids
    ]
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def token_for(settings: Settings) -> str:
    with build(settings) as platform:
        return benchlib.hospital_token(platform, "BENCHH", "基准医院", "system/Card.r")


def serve(settings_env: dict[str, str], workers: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_env}
    # Always explicit: on PostgreSQL `serve` defaults to one process per CPU (decision 0048).
    command = [sys.executable, "-m", "healthroam", "serve", "--port", str(PORT)]
    command += ["--workers", str(workers)]
    server = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    benchlib.wait_ready(f"http://127.0.0.1:{PORT}/healthz", server, seconds=20)
    return server


def profile(server: subprocess.Popen[bytes], seconds: int, out: Path) -> subprocess.Popen[bytes]:
    """Sample the server (and its worker processes) with py-spy while wrk runs."""
    return subprocess.Popen(
        [
            str(Path(sys.executable).with_name("py-spy")),
            "record",
            "--pid",
            str(server.pid),
            "--subprocesses",
            "--nonblocking",
            "--gil",
            "--format",
            "raw",
            "--rate",
            "200",
            "--duration",
            str(seconds),
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def run_wrk(codes: Path, token: str, seconds: int, threads: int, connections: int) -> str:
    script = codes.with_suffix(".lua")
    script.write_text(WRK_SCRIPT)
    result = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{PORT}",
            "--",
            str(codes),
            str(threads),
            token,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def main() -> None:
    global PORT  # --port: read by serve() and run_wrk()
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2, help="signing processes (issuance)")
    parser.add_argument("--http-workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--verify-seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--profile", type=Path, help="py-spy raw (collapsed) stacks to here")
    parser.add_argument("--port", type=int, default=PORT, help="server port (another bench?)")
    args = parser.parse_args()
    PORT = args.port
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    tmp = Path(tempfile.mkdtemp(prefix="hr-bench-"))
    if args.database == "postgresql":
        name, url = benchlib.create_database()
    else:
        name, url = "", f"sqlite:///{tmp / 'bench.db'}"
    env = {
        "HEALTHROAM_DATABASE_URL": url,
        "HEALTHROAM_DATA_DIR": str(tmp),
        "HEALTHROAM_LOG_LEVEL": "WARNING",
        "HEALTHROAM_CARD_DYNAMIC_CODE_WINDOW_SECONDS": "300",
    }
    settings = Settings(
        database_url=url, data_dir=tmp, log_level="WARNING", card_dynamic_code_window_seconds=300
    )
    server = None
    try:
        benchlib.migrate(url)
        t = time.perf_counter()
        benchlib.load_people(settings, args.people)
        print(f"loaded {args.people:,} master persons in {time.perf_counter() - t:.1f} s")
        issued, seconds = bench_issuance(settings, args.workers)
        rate = issued / seconds
        print(f"issued {issued:,} cards in {seconds:.1f} s: {rate:,.0f}/s")
        token = token_for(settings)
        codes = tmp / "codes.txt"
        count = make_codes(settings, 5000, 120, codes)
        print(f"{count:,} dynamic codes ready")
        server = serve(env, args.http_workers)
        spy = profile(server, args.verify_seconds, args.profile) if args.profile else None
        app_before = benchlib.cpu_of(benchlib.with_children(server.pid))
        db_before = benchlib.cpu_of(benchlib.backend_pids(name))
        output = run_wrk(codes, token, args.verify_seconds, 2, args.connections)
        app_after = benchlib.cpu_of(benchlib.with_children(server.pid))
        db_after = benchlib.cpu_of(benchlib.backend_pids(name))
        if spy is not None:
            spy.wait(timeout=60)
        print(output)
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
        done = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
        app_cpu = sum(app_after.values()) - sum(app_before.values())
        db_cpu = benchlib.cpu_spent(db_before, db_after)
        per = (app_cpu + db_cpu) / max(done, 1) * 1000
        print(
            f"CPU per verification: server {app_cpu / max(done, 1) * 1000:.2f} ms, "
            f"database backends {db_cpu / max(done, 1) * 1000:.2f} ms, total {per:.2f} ms "
            f"-> ceiling on 2 idle cores about {2000 / per:,.0f}/s (load generator excluded)"
        )
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
        db = "PostgreSQL" if args.database == "postgresql" else "SQLite"
        print("| measurement | result | target |\n|---|---:|---|")
        print(
            f"| bulk issuance into {db}, {issued:,} cards, {args.workers} workers "
            f"| {rate:,.0f}/s ({seconds:.1f} s) | 1,667/s |"
        )
        print(f"| 1,000,000 cards, extrapolated | {1_000_000 / rate / 60:.1f} min | <= 10 min |")
        print(
            f"| dynamic-code verification over HTTP ({db}), {args.http_workers} server "
            f"process(es), {args.connections} connections "
            f"| {rps:,.0f}/s (non-2xx: {bad.group(1) if bad else 0}) | >= 2,000/s |"
        )
    finally:
        if server is not None:
            benchlib.stop_process(server)
        if name:
            benchlib.drop_database(name)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
