"""HL7 v2 message handler benchmark (issue 6): ADT^A04 + ORM^O01 + ORU^R01 (5 OBX) per patient,
each message parsed, mapped, written through RecordService (validated, stored, indexed,
audited, Patients matched in the registry) and committed in its own transaction - the work the
gateway does per message, without the MLLP socket and ACK.

Run: PYTHONPATH=src .venv/bin/python bench/bench_hl7_handlers.py --patients 300 [--sqlite]
Needs PostgreSQL (HEALTHROAM_TEST_POSTGRES_URL, default postgres@127.0.0.1) unless --sqlite;
a fresh database is created and dropped. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import hl7
from sqlalchemy import event

from healthroam.bootstrap import build
from healthroam.config import Settings
from healthroam.exchange.hl7.contract import MessageContext, Sender
from healthroam.exchange.hl7.handlers import build_dispatcher
from healthroam.registry.idnumber import check_character
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet

import benchlib

SAMPLES = Path(__file__).resolve().parents[1] / "tests" / "data" / "hl7"
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高符吉"
GIVEN = "秀英建国志强海燕丽娟文华春梅小红明辉玉兰德胜美玲"


def template(name: str) -> str:
    return (SAMPLES / name).read_text(encoding="utf-8").strip().replace("\n", "\r")


def messages(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    a04, orm, oru = (
        template(n) for n in ("adt_a04_register.hl7", "orm_o01_new.hl7", "oru_r01_results.hl7")
    )
    out: list[str] = []
    for i in range(count):
        born = f"{rng.randint(1940, 2010)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        body = f"460106{born}{rng.randint(0, 99):02d}{rng.choice('02468')}"
        national = body + check_character(body)
        name = rng.choice(SURNAMES) + "^" + "".join(rng.sample(GIVEN, 2))
        keys = {
            "00012345": f"{10_000_000 + i}",
            "460106198503120027": national,
            "王^秀英": name,
            "19850312": born,
            "V20261129-0007": f"V{i:07d}",
            "Z20261129-0031": f"V{i:07d}",
            "ORD-778899": f"ORD-{i:07d}",
            "LAB-20261129-0042": f"LAB-{i:07d}",
        }
        for text_ in (a04, orm, oru):
            for old, new in keys.items():
                text_ = text_.replace(old, new)
            out.append(text_)
    return out


STATEMENTS = [0]
CPU = [0.0]  # process time of the message loop after the first patient's three messages
# (one-off costs: search parameter compilation, name dictionaries), steadier than wall time


def _count(*_args: object) -> None:
    STATEMENTS[0] += 1


def run(database_url: str, count: int, data_dir: Path) -> list[float]:
    settings = Settings(
        database_url=database_url,
        data_dir=data_dir,
        token_signing_key_file=data_dir / "signing.pem",
        audit_seal_interval_ms=0,
    )
    benchlib.migrate(database_url)
    platform = build(settings)
    try:
        platform.institutions.add(
            code="H001", name="海口市人民医院", kind="hospital", region="460106", level=3
        )
        handler = build_dispatcher(platform.records, platform.registry)
        event.listen(platform.db.engine, "before_cursor_execute", _count)
        principal = Principal("bench", "H001", ScopeSet.parse("system/*.cruds"))
        timings: list[float] = []
        cpu_started = time.process_time()
        for n, raw in enumerate(messages(count, seed=42)):
            if n == 3:
                cpu_started = time.process_time()
            started = time.perf_counter()
            message = hl7.parse(raw)
            kind = str(message.segment("MSH")[9]).split("^")
            context = MessageContext(
                sender=Sender("HIS", "H001", "H001"),
                principal=principal,
                control_id=str(message.segment("MSH")[10]),
                message_type=kind[0],
                trigger_event=kind[1],
                version="2.5.1",
                received_at=datetime.now(UTC),
            )
            with platform.db.transaction() as conn:
                handler(conn, context, message)
            timings.append(time.perf_counter() - started)
        CPU[0] = time.process_time() - cpu_started
        return timings
    finally:
        platform.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--sqlite", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        backend = "SQLite" if args.sqlite else "PostgreSQL"
        with benchlib.temporary_database(not args.sqlite, Path(tmp)) as (_, url):
            started = time.perf_counter()
            timings = run(url, args.patients, Path(tmp))
            elapsed = time.perf_counter() - started
    ms = sorted(t * 1000 for t in timings)

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, int(p * len(ms)))]

    print(f"| measurement ({backend}, {args.patients} patients, 1 connection) | value |")
    print("| --- | --- |")
    print(f"| messages (A04 + ORM + ORU with 5 OBX per patient) | {len(ms)} |")
    print(f"| throughput, one sender | {len(ms) / sum(timings):.0f} messages/s |")
    print(
        f"| per message p50 / p95 / p99 | {pct(0.5):.1f} / {pct(0.95):.1f} / {pct(0.99):.1f} ms |"
    )
    print(f"| mean | {statistics.mean(ms):.1f} ms |")
    print(f"| CPU per message (mean, warm) | {CPU[0] * 1000 / (len(ms) - 3):.1f} ms |")
    print(f"| SQL statements per message (mean) | {STATEMENTS[0] / len(ms):.1f} |")
    print(f"| wall time incl. setup | {elapsed:.1f} s |")


if __name__ == "__main__":
    main()
