"""Registry (issue 6, decision 0060): client and server CPU per call of a registration's steps
in main's form and in decision 0060's, interleaved in one process on one connection (so that
a shared, loaded host slows both alike), 20 calls per transaction:

- the link of a new source record to an existing person: main's statements (source, keys, name
  count, the person's sources, their institutions, the golden record, the event and its
  recipients, the master read back; SQLAlchemy Core but for the sources) against
  ``RegistryRepository.link_source`` (two psycopg pipelines);
- the reads of a new record: ``institution_and_source`` then ``candidates`` (two round trips,
  as main and the branch do) against both in one pipeline (tried in session 13, not kept).

--persons new persons are registered first (so that candidates are found); each round runs
--calls calls of each form per step, the forms alternating, for --rounds rounds (that both
forms write the same rows is tests/integration/registry/test_linked_source_rows.py's).

Run: PYTHONPATH=src:bench .venv/bin/python bench/bench_hl7_registration_forms.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, text

from healthroam.bootstrap import build
from healthroam.config import Settings
from healthroam.db.raw import dbapi
from healthroam.registry.blocking import blocking_keys
from healthroam.registry.codec import to_json
from healthroam.registry.model import LinkType, SourceKey, SourceRecord
from healthroam.registry.normalize import normalize_record
from healthroam.registry.repository import (
    _PG_CANDIDATES_ANY,
    _PG_INSTITUTION_AND_SOURCE,
    NewSource,
    RegistryRepository,
)
from healthroam.registry.service import _hash, golden_of_sources, record_data
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet

import benchlib

HOSPITALS = ("H460100001", "H460100002")
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = ("伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰")


def person(n: int, institution: str, local_id: str) -> SourceRecord:
    return SourceRecord(
        SourceKey(institution, "urn:mrn", local_id),
        name=SURNAMES[n % len(SURNAMES)] + GIVEN[(n // len(SURNAMES)) % len(GIVEN)],
        sex="female" if n % 2 else "male",
        birth_date=date(1950, 1, 1) + timedelta(days=37 * n),
        phones=(f"139{n:08d}",),
        fhir_patient_id=f"p-{institution}-{local_id}",
    )


def main_link(
    repo: RegistryRepository,
    source: NewSource,
    master_id: int,
    keys: frozenset[str],
    name: str | None,
    event: dict[str, Any],
) -> str:
    """Main's link (RegistryService._insert before decision 0060) and its master read."""
    source_id = repo.add_source(
        source.key,
        master_id,
        source.link_type,
        source.data,
        source.normalized,
        source.content_hash,
        source.fhir_patient_id,
        source.now,
    )
    repo.set_keys(source_id, keys)
    if name:
        repo.count_name(name, 1)
    sources = repo.sources_of([master_id])
    kinds = repo.institutions_of(s.institution for s in sources)
    repo.set_golden(master_id, golden_of_sources(sources, kinds), source.now)
    told = sorted({s.institution for s in sources})
    repo.add_events([{**event, "recipients": told, "master_id": master_id, "source_id": source_id}])
    master = repo.master(master_id)
    assert master is not None
    return master.master_index_id


def new_link(
    repo: RegistryRepository,
    source: NewSource,
    master_id: int,
    keys: frozenset[str],
    name: str | None,
    event: dict[str, Any],
) -> str:
    _, _, mii = repo.link_source(source, master_id, keys, name, golden_of_sources, event)
    assert mii is not None
    return mii


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--persons", type=int, default=400)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        benchlib.temporary_database(True, Path(tmp)) as (_database, url),
    ):
        settings = Settings(
            database_url=url,
            data_dir=Path(tmp),
            token_signing_key_file=Path(tmp) / "signing.pem",
            audit_seal_interval_ms=0,
        )
        benchlib.migrate(url)
        with build(settings) as platform:
            for code in HOSPITALS:
                platform.institutions.add(
                    code=code, name=code, kind="hospital", region="460106", level=3
                )
            principal = Principal(
                "his", HOSPITALS[1], ScopeSet.parse("system/*.cruds"), end_user="clerk"
            )
            with platform.db.transaction() as conn:
                masters = []
                for n in range(args.persons):
                    record = person(n, HOSPITALS[0], f"A{n}")
                    found = platform.registry.register_in(
                        conn, principal, record, normalize_record(record), audit=False
                    )
                    masters.append((n, found.source_id))
                ids: dict[int, int] = dict(
                    conn.execute(text("SELECT id, master_id FROM source_records")).all()
                )
            with platform.db.engine.connect() as conn:
                pid = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
                conn.commit()
                results = run(conn, pid, args, masters, ids)
    print("| step | form | client CPU ms per call | server CPU ms per call |")
    print("| --- | --- | ---: | ---: |")
    for (step, form), (client, server, count) in results.items():
        print(f"| {step} | {form} | {client * 1000 / count:.3f} | {server * 1000 / count:.3f} |")


def run(
    conn: Connection,
    pid: int,
    args: argparse.Namespace,
    masters: list[tuple[int, int]],
    ids: dict[int, int],
) -> dict[tuple[str, str], list[Any]]:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    event = {"event_type": "link", "now": now, "actor_institution": HOSPITALS[1]}
    event |= {"actor_user": "clerk", "actor_client": "his", "detail": {"outcome": "linked"}}
    counter = [0]

    def link_input() -> tuple[NewSource, int, frozenset[str], str | None, dict[str, Any]]:
        n, source_id = masters[counter[0] % len(masters)]
        counter[0] += 1
        record = person(n, HOSPITALS[1], f"B{counter[0]}")
        normalized = normalize_record(record)
        data = record_data(record)
        new = NewSource(
            record.key,
            LinkType.AUTO.value,
            data,
            to_json(normalized),
            _hash(data),
            record.fhir_patient_id,
            now,
        )
        return new, ids[source_id], blocking_keys(normalized), normalized.name, event

    def read_input() -> tuple[SourceKey, frozenset[str]]:
        n = counter[0] % len(masters)
        counter[0] += 1
        record = person(n, HOSPITALS[1], f"R{counter[0]}")
        return record.key, blocking_keys(normalize_record(record))

    def main_reads(repo: RegistryRepository, key: SourceKey, keys: frozenset[str]) -> int:
        repo.institution_and_source(key)
        return len(repo.candidates(keys, None, 500))

    def new_reads(repo: RegistryRepository, key: SourceKey, keys: frozenset[str]) -> int:
        """Both reads in one pipeline (tried in session 13, not kept: no CPU saved)."""
        raw = dbapi(repo.conn)
        params = {"institution": key.institution, "system": key.system, "local_id": key.local_id}
        first, hits = raw.cursor(), raw.cursor()
        with raw.pipeline():
            first.execute(_PG_INSTITUTION_AND_SOURCE.sql, params)
            hits.execute(_PG_CANDIDATES_ANY.sql, {"keys": sorted(keys), "limit": 500})
        first.fetchone()
        return len(hits.fetchall())

    steps: dict[str, dict[str, Callable[..., Any]]] = {
        "link to an existing person": {"main": main_link, "branch": new_link},
        "reads of a new record": {"main": main_reads, "one pipeline": new_reads},
    }
    inputs: dict[str, Callable[[], tuple[Any, ...]]] = {
        "link to an existing person": link_input,
        "reads of a new record": read_input,
    }
    spent: dict[tuple[str, str], list[Any]] = {}
    for turn in range(args.rounds):
        for step, forms in steps.items():
            order = list(forms) if turn % 2 == 0 else list(forms)[::-1]
            for form in order:
                calls = [inputs[step]() for _ in range(args.calls)]
                server0, client0 = benchlib.cpu_seconds(pid), time.process_time()
                for start in range(0, len(calls), 20):
                    with conn.begin():
                        repo = RegistryRepository(conn)
                        for call in calls[start : start + 20]:
                            forms[form](repo, *call)
                client = time.process_time() - client0
                server = benchlib.cpu_seconds(pid) - server0
                total = spent.setdefault((step, form), [0.0, 0.0, 0])
                total[0] += client
                total[1] += server
                total[2] += len(calls)
    return spent


if __name__ == "__main__":
    main()
