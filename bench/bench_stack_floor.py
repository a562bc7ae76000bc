"""The floor of the chosen stack for a FHIR read: what one HTTP read costs with nothing of the
platform in it, beside the platform's own read, in the same run on the same store.

The floor is a bare ASGI application under the same Uvicorn (httptools, uvloop) that answers
`GET /fhir/Observation/<id>` with one prepared primary-key read over psycopg (async, a few
connections) and the stored text: no authentication, no scopes, no audit entry, no FastAPI.
Nothing a health platform may leave out is left in it, so it is a lower bound on the CPU per
read of any Python server built on these parts, not a competitor.

Each server is started in turn (one process, as `bench_fhir_store.py` does), loaded with `wrk`
(16 connections) over the same random Observation ids, and measured by CPU seconds of the
server process and of PostgreSQL's backends for the database, per request. The capacity of two
dedicated cores is then about 2 / (CPU per request), whatever else shares the machine.

    cd bench && PYTHONPATH=../src ../.venv/bin/python bench_stack_floor.py \\
        --work /tmp/fs1k --database postgresql+psycopg://postgres@127.0.0.1:5432/hr_fs1k

`--work`/`--database`: a store built by `bench_fhir_store.py` (its state.json). Not part of CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bench_fhir_store as store
import psycopg
from sqlalchemy.engine import make_url

from healthroam.config import Settings

import benchlib

_READ = (
    "SELECT version, last_updated, body_tail FROM fhir_resources "
    "WHERE resource_type = 'Observation' AND id = %s AND NOT deleted"
)
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class _Floor:
    """The bare ASGI application (``bench_stack_floor:app``), connections opened at start-up."""

    def __init__(self) -> None:
        self.idle: asyncio.Queue[psycopg.AsyncConnection[Any]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                if message["type"] == "lifespan.startup":
                    self.idle = asyncio.Queue()
                    for _ in range(4):
                        self.idle.put_nowait(
                            await psycopg.AsyncConnection.connect(
                                os.environ["FLOOR_DSN"], autocommit=True, prepare_threshold=0
                            )
                        )
                    await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        assert self.idle is not None
        path: str = scope["path"]
        status, body = 404, b'{"resourceType":"OperationOutcome"}'
        if path == "/readyz":
            status, body = 200, b"{}"
        elif path.startswith("/fhir/Observation/"):
            rid = path.rsplit("/", 1)[1]
            conn = await self.idle.get()
            try:
                cursor = await conn.execute(_READ, (rid,))
                row = await cursor.fetchone()
            finally:
                self.idle.put_nowait(conn)
            if row is not None:
                version, updated, tail = row
                head = (
                    f'{{"resourceType":"Observation","id":"{rid}","meta":{{"versionId":'
                    f'"{version}","lastUpdated":"{updated.isoformat()}"}}'
                )
                status = 200
                body = (head + ("}" if tail == "}" else "," + tail)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/fhir+json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


app = _Floor()


@contextmanager
def _floor_server(dsn: str, log: Path) -> Iterator[tuple[str, int]]:
    port = benchlib.free_port()
    command = [sys.executable, "-m", "uvicorn", "bench_stack_floor:app", "--port", str(port),
               "--workers", "1", "--http", "httptools", "--loop", "uvloop",
               "--log-level", "warning", "--no-access-log"]  # fmt: skip
    env = benchlib.server_env() | {"FLOOR_DSN": dsn, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    with log.open("w") as out:
        process = subprocess.Popen(
            command, cwd=Path(__file__).parent, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            base = f"http://127.0.0.1:{port}"
            benchlib.wait_ready(f"{base}/readyz", process, log=log)
            yield base, process.pid
        finally:
            benchlib.stop_process(process, seconds=20)


def _measure(
    base: str, pid: int, auth: str, paths: list[str], args: argparse.Namespace, name: str
) -> dict[str, Any]:
    database = make_url(args.database).database or ""
    header = {"Authorization": auth}
    store.wrk(base, header, paths, args.work, 2, args.connections)  # warm-up
    before = benchlib.cpu_of([pid, *benchlib.backend_pids(database)])
    figures = store.wrk(base, header, paths, args.work, args.duration, args.connections)
    after = benchlib.cpu_of([pid, *benchlib.backend_pids(database)])
    server = after[pid] - before[pid]
    db = benchlib.cpu_spent({k: v for k, v in before.items() if k != pid},
                            {k: v for k, v in after.items() if k != pid})  # fmt: skip
    requests = figures["requests"]
    if figures["non2xx"] or figures["errors"]:
        raise SystemExit(f"{name}: {figures['non2xx']} non-2xx, {figures['errors']} errors")
    per = (server + db) / requests * 1000
    return {
        "server": name,
        "requests_per_s": round(requests / figures["seconds"]),
        "p50_ms": round(figures["p50_ms"], 2),
        "server_cpu_ms": round(server / requests * 1000, 3),
        "database_cpu_ms": round(db / requests * 1000, 3),
        "capacity_2_cores": round(2000 / per),
        "load": round(os.getloadavg()[0], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    state = json.loads((args.work / "state.json").read_text())
    rng = random.Random(11)
    paths = [f"/fhir/Observation/{rng.choice(state['observations'])}" for _ in range(5000)]
    settings = Settings(database_url=args.database, data_dir=args.work / "data",
                        token_ttl_seconds=3600)  # fmt: skip
    secrets = {k: (v[0], v[1]) for k, v in state["secrets"].items()}
    dsn = make_url(args.database).set(drivername="postgresql").render_as_string(False)
    rows = []
    for number in range(args.rounds):
        with _floor_server(dsn, args.work / "floor.log") as (base, pid):
            rows.append(_measure(base, pid, "none", paths, args, "floor") | {"round": number})
            print(json.dumps(rows[-1]), flush=True)
        with store.server(settings, 1, args.work / "server.log") as (base, pid):
            auth = store.Clients(base, secrets).headers("reader")["Authorization"]
            rows.append(_measure(base, pid, auth, paths, args, "healthroam") | {"round": number})
            print(json.dumps(rows[-1]), flush=True)
    print(f"{'server':12} {'round':>5} {'req/s':>6} {'p50':>6} {'srv ms':>7} {'db ms':>6} "
          f"{'2-core cap.':>11} {'load':>5}")  # fmt: skip
    for r in rows:
        print(f"{r['server']:12} {r['round']:>5} {r['requests_per_s']:>6} {r['p50_ms']:>6} "
              f"{r['server_cpu_ms']:>7} {r['database_cpu_ms']:>6} {r['capacity_2_cores']:>11} "
              f"{r['load']:>5}")  # fmt: skip


if __name__ == "__main__":
    main()
