"""Where the CPU of one HTTP card verification goes (issue 5), without sockets or wrk.

Builds a platform on a fresh SQLite file (or PostgreSQL with --postgres), issues cards, then
drives the real ASGI app in-process: ``--concurrency`` requests at a time to
``POST /cards/verify`` with distinct dynamic codes, the verification batches and the audit
sealer running as in the server. Prints CPU per verification (process time, so other work on
a shared machine inflates it less than wall time) and, with --profile, the cumulative cProfile
table of the top functions.

Run: .venv/bin/python bench/profile_card_verify.py --requests 3000 [--postgres] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import secrets
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from healthroam.api.app import create_app
from healthroam.bootstrap import build
from healthroam.cards.bulk import BulkIssuer
from healthroam.cards.qr import make_dynamic_code
from healthroam.config import Settings
from healthroam.db.tables_cards import cards
from healthroam.db.tables_registry import master_persons
from healthroam.keys.model import KeyPurpose
from healthroam.security.sealer import AuditSealer

import benchlib


def setup(url: str, tmp: Path, people: int) -> tuple[Settings, list[str], str]:
    settings = Settings(
        database_url=url, data_dir=tmp, log_level="WARNING", card_dynamic_code_window_seconds=600
    )
    benchlib.migrate(url)
    with build(settings) as platform:
        platform.keys.init()
        now = datetime.now(UTC)
        with platform.db.transaction() as conn:
            conn.execute(
                insert(master_persons),
                [
                    {
                        "master_index_id": secrets.token_hex(32).upper(),
                        "status": "active",
                        "golden": {
                            "name": "王五",
                            "sex": "1",
                            "birth_date": "1980-02-02",
                            "national_id": f"460106198002{i:05d}X"[:17] + "X",
                            "region": "460106",
                        },
                        "version": 1,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in range(people)
                ],
            )
        BulkIssuer(platform.cards, workers=1, batch_size=1000).run(all_=True, activate=True)
        key_id, key = platform.keys.symmetric(KeyPurpose.QR)
        with platform.db.transaction(readonly=True) as conn:
            ehc_ids = [r[0] for r in conn.execute(select(cards.c.ehc_id))]
        token = benchlib.hospital_token(platform, "PROFH", "剖析医院", "system/Card.r")
    at = int(time.time())
    codes = [make_dynamic_code(e, key_id, key, at - s) for s in range(300) for e in ehc_ids]
    return settings, codes, token


async def drive_service(platform: Any, codes: list[str], concurrency: int, db: bool) -> int:
    """The service alone (no HTTP): ``verify_async``, or only its no-database half."""
    principal = platform.auth.principal(platform.auth.token(TOKEN[0]))
    queue = iter(codes)
    ok = 0

    async def worker() -> None:
        nonlocal ok
        for text in queue:
            if db:
                await platform.cards.verify_async(
                    principal,
                    text=text,
                    step="01",
                    channel="02",
                    terminal="PROF",
                    check_client=True,
                )
            else:
                platform.cards.prepare(principal, text, "01", "02", "PROF", True)
            ok += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok


TOKEN: list[str] = []


async def drive(app: Any, codes: list[str], token: str, concurrency: int) -> int:
    headers = [
        (b"host", b"bench"),
        (b"content-type", b"application/json"),
        (b"authorization", f"Bearer {token}".encode()),
    ]
    ok = 0
    queue = iter(codes)

    async def one(text: str) -> int:
        body = json.dumps(
            {"text": text, "step": "01", "channel": "02", "terminal": "PROF"}
        ).encode()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/cards/verify",
            "raw_path": b"/cards/verify",
            "query_string": b"",
            "root_path": "",
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        sent = False
        status = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(scope, receive, send)
        return status

    statuses: dict[int, int] = {}

    async def worker() -> None:
        nonlocal ok
        for text in queue:
            status = await one(text)
            statuses[status] = statuses.get(status, 0) + 1
            ok += status == 200

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if ok < len(codes):
        print("statuses:", statuses)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--people", type=int, default=200)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--layer",
        choices=("http", "service", "service-unsealed", "prepare"),
        default="http",
        help="http: the ASGI app; service: CardService.verify_async; service-unsealed: the same "
        "without the audit sealer; prepare: only the half without the database",
    )
    parser.add_argument("--sort", default="tottime", help="cProfile order (tottime, cumulative)")
    parser.add_argument("--writers", type=int, default=2, help="verification batch writers")
    parser.add_argument("--flush-ms", type=int, default=2, help="batch gathering wait")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hr-prof-"))
    name, url = (
        benchlib.create_database() if args.postgres else ("", f"sqlite:///{tmp / 'prof.db'}")
    )
    try:
        settings, codes, token = setup(url, tmp, args.people)
        codes = codes[: args.requests + 200]
        TOKEN.append(token)
        settings = settings.model_copy(update={"card_use_log_flush_ms": args.flush_ms})
        with build(settings) as platform:
            platform.cards.uses.writers = args.writers
            app = create_app(platform)
            sealer = AuditSealer(platform.audit, settings.audit_seal_interval_ms)
            if args.layer in ("http", "service"):
                sealer.start()

            def run(batch: list[str]) -> int:
                if args.layer == "http":
                    return asyncio.run(drive(app, batch, token, args.concurrency))
                return asyncio.run(
                    drive_service(platform, batch, args.concurrency, args.layer != "prepare")
                )

            run(codes[:200])  # warm up
            profiler = cProfile.Profile() if args.profile else None
            backends = benchlib.cpu_of(benchlib.backend_pids(name))
            cpu, wall = time.process_time(), time.perf_counter()
            if profiler:
                profiler.enable()
            ok = run(codes[200:])
            sealer.stop()
            if profiler:
                profiler.disable()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            n = len(codes) - 200
            if name:
                after = benchlib.cpu_of(benchlib.backend_pids(name))
                db_cpu = benchlib.cpu_spent(backends, after)
                print(f"PostgreSQL backends: {db_cpu / n * 1000:.3f} ms CPU per verification")
            print(
                f"{'PostgreSQL' if args.postgres else 'SQLite'}, {args.layer}: {n} verifications "
                f"({ok} "
                f"accepted), concurrency {args.concurrency}: {n / wall:,.0f}/s wall, "
                f"{cpu / n * 1000:.3f} ms CPU each (this process, sealing included), "
                f"{platform.cards.uses.batches} batches ({args.writers} writers, "
                f"{args.flush_ms} ms wait)"
            )
            if profiler:
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats(args.sort).print_stats(45)
                print(out.getvalue())
    finally:
        if name:
            benchlib.drop_database(name)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
