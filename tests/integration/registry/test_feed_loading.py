"""`healthroam registry load`: streaming, idempotent, resumable, with a reject file."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select, update

from healthroam.bootstrap import Platform
from healthroam.db.tables_registry import master_persons, source_records
from healthroam.errors import Unavailable
from healthroam.registry.loader import FeedLoader, LoadSummary, Mapping
from healthroam.synth.writer import write_province

from helpers import national_id


@pytest.fixture(scope="module")
def province_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("province")
    write_province(out, 300, "parquet", seed=11)
    return out


@pytest.fixture
def loader(platform: Platform) -> FeedLoader:
    for code in ("POP", "INS"):
        platform.institutions.add(code=code, name=code, kind="agency", region="460000")
    return FeedLoader(platform.db, platform.registry)


def _counts(platform: Platform) -> tuple[int, int]:
    with platform.db.transaction(readonly=True) as conn:
        masters = conn.execute(
            select(func.count())
            .select_from(master_persons)
            .where(master_persons.c.status == "active")
        ).scalar_one()
        sources = conn.execute(select(func.count()).select_from(source_records)).scalar_one()
    return int(masters), int(sources)


def test_load_twice_changes_nothing(
    platform: Platform, loader: FeedLoader, province_files: Path, tmp_path: Path
) -> None:
    feed = province_files / "sources" / "population.parquet"
    first = loader.load(
        feed,
        source="POP",
        mapping=Mapping.load("population"),
        reject_file=tmp_path / "rejects.csv",
        chunk_size=64,
    )
    rows = pq.ParquetFile(feed).metadata.num_rows
    assert first.rows == rows
    assert first.new + first.linked + first.review + first.rejected == rows
    before = _counts(platform)
    assert before[1] == rows - first.rejected
    again = loader.load(
        feed,
        source="POP",
        mapping=Mapping.load("population"),
        reject_file=tmp_path / "rejects2.csv",
        chunk_size=64,
    )
    assert again.already_loaded
    assert _counts(platform) == before


def test_insurer_feed_links_to_population(
    platform: Platform, loader: FeedLoader, province_files: Path, tmp_path: Path
) -> None:
    loader.load(
        province_files / "sources" / "population.parquet",
        source="POP",
        mapping=Mapping.load("population"),
        reject_file=tmp_path / "r1.csv",
    )
    masters_before, _ = _counts(platform)
    insurer = loader.load(
        province_files / "sources" / "insurer.parquet",
        source="INS",
        mapping=Mapping.load("insurer"),
        reject_file=tmp_path / "r2.csv",
    )
    assert insurer.linked > 0.9 * insurer.rows
    masters_after, _ = _counts(platform)
    # Only foreigners (not in the population base) and the rare unmatched make new persons.
    assert masters_after - masters_before <= insurer.new + insurer.review


def test_crash_mid_load_resumes_without_duplicates(
    platform: Platform, loader: FeedLoader, province_files: Path, tmp_path: Path
) -> None:
    feed = province_files / "sources" / "population.parquet"
    mapping = Mapping.load("population")
    partial = loader.load(
        feed,
        source="POP",
        mapping=mapping,
        reject_file=tmp_path / "r.csv",
        chunk_size=50,
        stop_after_chunks=2,
    )
    assert partial.rows == 100
    resumed = loader.load(
        feed, source="POP", mapping=mapping, reject_file=tmp_path / "r.csv", chunk_size=50
    )
    assert resumed.resumed_from == 100
    rows = pq.ParquetFile(feed).metadata.num_rows
    assert resumed.rows == rows
    assert _counts(platform)[1] == rows - resumed.rejected


def test_rejected_rows_are_written_with_their_reason(
    platform: Platform, loader: FeedLoader, tmp_path: Path
) -> None:
    feed = tmp_path / "feed.csv"
    good, bad = national_id(sequence=124), national_id(sequence=123)[:-1] + "0"
    assert bad != national_id(sequence=123)
    feed.write_text(
        "record_key,name,sex,birth_date,id_number,region_code,address,phone,ethnicity_code,"
        "death_date\n"
        f"P1,王芳,2,1990-01-01,{good},460106,,,01,\n"
        f"P2,李强,1,1990-01-01,{bad},460106,,,01,\n"
        f"P3,,1,1990-01-01,{national_id(sequence=125)},460106,,,01,\n"
        "P4,赵六,1,1990-02-30,,460106,,,01,\n",
        encoding="utf-8",
    )
    summary = loader.load(
        feed, source="POP", mapping=Mapping.load("population"), reject_file=tmp_path / "rejects.csv"
    )
    assert (summary.rows, summary.new, summary.rejected) == (4, 1, 3)
    with (tmp_path / "rejects.csv").open(encoding="utf-8") as handle:
        lines = list(csv.reader(handle))
    assert lines[0] == ["row", "local_id", "field", "reason"]
    by_id = {line[1]: line for line in lines[1:]}
    assert by_id["P2"][2:] == ["id_number", "ID number fails its check digit"]
    assert by_id["P3"][2] == "name"
    assert by_id["P4"][2] == "birth_date"
    assert bad not in (tmp_path / "rejects.csv").read_text()


def test_bulk_load_agrees_with_streaming_load(
    platform: Platform, province_files: Path, tmp_path: Path
) -> None:
    from healthroam.registry.bulk import BulkLoader

    for code in ("POP", "INS"):
        platform.institutions.add(code=code, name=code, kind="agency", region="460000")
    bulk = BulkLoader(platform.db, platform.registry, workers=2)
    population = province_files / "sources" / "population.parquet"
    partial = bulk.load(
        population,
        source="POP",
        mapping=Mapping.load("population"),
        reject_file=tmp_path / "r.csv",
        chunk_size=100,
        stop_after_chunks=1,
    )
    assert partial.rows == 100
    first = bulk.load(
        population,
        source="POP",
        mapping=Mapping.load("population"),
        reject_file=tmp_path / "r.csv",
        chunk_size=100,
    )
    rows = pq.ParquetFile(population).metadata.num_rows
    assert (first.rows, first.resumed_from) == (rows, 100)
    masters, sources = _counts(platform)
    assert sources == rows - first.rejected
    assert masters == first.new
    assert bulk.load(
        population,
        source="POP",
        mapping=Mapping.load("population"),
        reject_file=tmp_path / "r2.csv",
    ).already_loaded
    # A second feed goes through the matcher for IDs the registry already knows.
    insurer = bulk.load(
        province_files / "sources" / "insurer.parquet",
        source="INS",
        mapping=Mapping.load("insurer"),
        reject_file=tmp_path / "r3.csv",
    )
    assert insurer.linked > 0.9 * insurer.rows
    streaming = FeedLoader(platform.db, platform.registry)
    assert streaming.load(
        province_files / "sources" / "insurer.parquet",
        source="INS",
        mapping=Mapping.load("insurer"),
        reject_file=tmp_path / "r4.csv",
    ).already_loaded
    # Golden records, events and blocking keys exist for bulk-created persons.
    from healthroam.db.tables_registry import mpi_blocking_keys, mpi_events

    with platform.db.transaction(readonly=True) as conn:
        golden = conn.execute(select(master_persons.c.golden).limit(1)).scalar_one()
        events = conn.execute(select(func.count()).select_from(mpi_events)).scalar_one()
        keys = conn.execute(select(func.count()).select_from(mpi_blocking_keys)).scalar_one()
    assert golden["national_id"] or golden["identifiers"]
    assert events >= first.new
    assert keys >= 3 * first.new
    assert platform.audit.verify().ok


def test_population_changes_update_the_golden_record(
    platform: Platform, loader: FeedLoader, tmp_path: Path
) -> None:
    header = (
        "record_key,name,sex,birth_date,id_number,region_code,address,phone,"
        "ethnicity_code,death_date\n"
    )
    first = national_id(sequence=131, born="19500101")
    second = national_id(sequence=142, born="19800101")
    (tmp_path / "v1.csv").write_text(
        header
        + f"P1,王大山,1,1950-01-01,{first},460106,海口市龙华区滨海大道1号,,01,\n"
        + f"P2,李小梅,2,1980-01-01,{second},460106,海口市龙华区滨海大道2号,,01,\n",
        encoding="utf-8",
    )
    (tmp_path / "v2.csv").write_text(
        header
        + f"P1,王大山,1,1950-01-01,{first},460106,海口市龙华区滨海大道1号,,01,2026-10-01\n"
        + f"P2,李梅,2,1980-01-01,{second},469002,琼海市嘉积镇银海路8号,,01,\n",
        encoding="utf-8",
    )
    mapping = Mapping.load("population")
    loader.load(tmp_path / "v1.csv", source="POP", mapping=mapping, reject_file=tmp_path / "r")
    changes = loader.load(
        tmp_path / "v2.csv", source="POP", mapping=mapping, reject_file=tmp_path / "r2"
    )
    assert (changes.rows, changes.rejected, changes.new) == (2, 0, 0)
    with platform.db.transaction(readonly=True) as conn:
        goldens = {
            g["national_id"]: g for g in conn.execute(select(master_persons.c.golden)).scalars()
        }
    assert goldens[first]["death_date"] == "2026-10-01"  # a death
    assert goldens[second]["name"] == "李梅"  # a name change
    assert goldens[second]["region"] == "469002"  # a move
    assert goldens[second]["address"] == "琼海市嘉积镇银海路8号"
    assert _counts(platform) == (2, 2)


def _registry_snapshot(platform: Platform) -> dict[str, object]:
    """Everything a load writes, keyed by what does not depend on generated ids."""
    from healthroam.db.tables_registry import (
        mpi_blocking_keys,
        mpi_event_recipients,
        mpi_events,
        mpi_name_counts,
    )

    with platform.db.transaction(readonly=True) as conn:
        local = {
            r.id: r.local_id
            for r in conn.execute(select(source_records.c.id, source_records.c.local_id))
        }
        keys: dict[str, list[str]] = {}
        for key, source_id in conn.execute(
            select(mpi_blocking_keys.c.key, mpi_blocking_keys.c.source_id)
        ):
            keys.setdefault(local[source_id], []).append(key)
        masters = {
            r.id: r
            for r in conn.execute(
                select(
                    master_persons.c.id,
                    master_persons.c.golden,
                    master_persons.c.name,
                    master_persons.c.birth_date,
                    master_persons.c.sex,
                    master_persons.c.status,
                    master_persons.c.version,
                )
            )
        }
        sources = {}
        for r in conn.execute(select(source_records)):
            master = masters[r.master_id]
            golden = dict(master.golden)
            golden["provenance"] = {k: local[v] for k, v in golden["provenance"].items()}
            sources[r.local_id] = (
                r.institution_code,
                r.id_system,
                r.link_type,
                r.data,
                r.normalized,
                r.content_hash,
                sorted(keys.get(r.local_id, [])),
                golden,
                (master.name, master.birth_date, master.sex, master.status, master.version),
            )
        events = sorted(
            (e.event_type, local.get(e.source_id), e.actor_institution, e.institutions, e.detail)
            for e in conn.execute(select(mpi_events))
        )
        recipients = sorted(r.institution_code for r in conn.execute(select(mpi_event_recipients)))
        names = dict(conn.execute(select(mpi_name_counts.c.name, mpi_name_counts.c.count)).all())
    return {"sources": sources, "events": events, "recipients": recipients, "names": names}


def test_bulk_and_streaming_loads_write_the_same_registry(
    platform: Platform, province_files: Path, tmp_path: Path
) -> None:
    from healthroam.db.metadata import metadata
    from healthroam.registry.bulk import BulkLoader

    population = province_files / "sources" / "population.parquet"
    mapping = Mapping.load("population")

    def load(bulk: bool) -> tuple[dict[str, object], list[list[str]]]:
        with platform.db.transaction() as conn:
            for table in reversed(metadata.sorted_tables):
                conn.execute(table.delete())
        platform.institutions.add(code="POP", name="POP", kind="agency", region="460000")
        rejects = tmp_path / f"rejects-{bulk}.csv"
        if bulk:
            BulkLoader(platform.db, platform.registry, workers=2).load(
                population, source="POP", mapping=mapping, reject_file=rejects, chunk_size=120
            )
        else:
            FeedLoader(platform.db, platform.registry).load(
                population, source="POP", mapping=mapping, reject_file=rejects, chunk_size=120
            )
        with rejects.open(encoding="utf-8") as handle:
            return _registry_snapshot(platform), sorted(csv.reader(handle))

    bulk_snapshot, bulk_rejects = load(bulk=True)
    streaming_snapshot, streaming_rejects = load(bulk=False)
    assert bulk_snapshot["sources"]  # the comparison is not vacuous
    assert bulk_rejects == streaming_rejects
    # Events differ by design: the bulk path writes one "create" per new person with its
    # source record, the matcher a "create" and a "link" (docs/registry-loading.md).
    assert bulk_snapshot["names"] == streaming_snapshot["names"]
    assert bulk_snapshot["sources"] == streaming_snapshot["sources"]


def _feed_with_repeats(province_files: Path, out: Path) -> Path:
    """The population feed with rows that need the matcher in its first chunk: three persons
    again under new record keys (the same national ID), and one again without its ID number."""
    import pyarrow as pa

    table = pq.read_table(province_files / "sources" / "population.parquet")
    rows = table.to_pylist()
    extra = []
    for i, row in enumerate(rows[5:8]):
        extra.append({**row, "record_key": f"POP-AGAIN-{i}"})
    extra.append({**rows[9], "record_key": "POP-NO-ID", "id_number": None})
    path = out / "population-repeats.parquet"
    rows[20:20] = extra
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    return path


def _catalog(platform: Platform) -> list[tuple[str, ...]]:
    """Every index and constraint of the database, as PostgreSQL defines them."""
    from sqlalchemy import text

    with platform.db.transaction(readonly=True) as conn:
        if conn.dialect.name != "postgresql":
            return []
        indexes = conn.execute(
            text(
                "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
            )
        ).all()
        constraints = conn.execute(
            text(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
                " FROM pg_constraint WHERE connamespace = 'public'::regnamespace"
            )
        ).all()
    return sorted(tuple(r) for r in [*indexes, *constraints])


def _load_fresh(platform: Platform, feed: Path, rejects: Path, **options: Any) -> LoadSummary:
    from healthroam.db.metadata import metadata
    from healthroam.registry.bulk import BulkLoader

    with platform.db.transaction() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
    platform.institutions.add(code="POP", name="POP", kind="agency", region="460000")
    return BulkLoader(platform.db, platform.registry, workers=2).load(
        feed, source="POP", mapping=Mapping.load("population"), reject_file=rejects, **options
    )


def test_initial_load_writes_the_same_registry_and_rebuilds_every_index(
    platform: Platform, province_files: Path, tmp_path: Path
) -> None:
    feed = _feed_with_repeats(province_files, tmp_path)
    catalog = _catalog(platform)
    try:
        _check_initial_load(platform, feed, catalog, tmp_path)
    finally:
        _restore_deferred(platform)


def _restore_deferred(platform: Platform) -> None:
    """Put back what an interrupted initial load dropped (the database is shared by tests)."""
    from healthroam.db.tables_registry import registry_loads
    from healthroam.registry import initial_load

    with platform.db.transaction() as conn:
        for (summary,) in conn.execute(select(registry_loads.c.summary)):
            state = (summary or {}).get("initial_load") or {}
            if state.get("phase") == "rows":
                initial_load.restore(conn, state["ddl"])


def _check_initial_load(
    platform: Platform, feed: Path, catalog: list[tuple[str, ...]], tmp_path: Path
) -> None:
    from healthroam.db.tables_registry import (
        mpi_name_counts,
        registry_load_deferred,
        registry_load_names,
    )

    bulk = _load_fresh(platform, feed, tmp_path / "bulk.csv", chunk_size=120)
    expected = _registry_snapshot(platform)

    # Stopped after its first chunk, as a crash would leave it; then run again.
    stopped = _load_fresh(
        platform, feed, tmp_path / "initial.csv", chunk_size=120, initial=True, stop_after_chunks=1
    )
    postgres = platform.db.engine.dialect.name == "postgresql"
    with platform.db.transaction(readonly=True) as conn:
        waiting = conn.execute(select(func.count()).select_from(registry_load_deferred)).scalar()
    if postgres:
        assert _catalog(platform) != catalog  # the deferred indexes are gone meanwhile
        # ... but not the partial index of unpositioned events: the load's events have
        # positions, so it takes no entry, and rebuilding it would read every event again.
        assert any(entry[1] == "ix_mpi_events_unpositioned" for entry in _catalog(platform))
        assert waiting == 4  # the first chunk's repeated persons wait for the matcher
        # The chunk's name counts are staged, committed with it, and added up at the end.
        with platform.db.transaction(readonly=True) as conn:
            staged = dict(
                conn.execute(
                    select(
                        registry_load_names.c.name, func.sum(registry_load_names.c.count)
                    ).group_by(registry_load_names.c.name)
                ).all()
            )
            counted = conn.execute(select(func.count()).select_from(mpi_name_counts)).scalar()
        assert staged[""] == 116  # the total row: the chunk's persons with a name
        assert counted == 0
        # Meanwhile every other writer of the registry is refused, as unavailable (retry).
        with pytest.raises(Unavailable, match="initial load is running"):
            _touch_masters(platform)
    else:
        assert waiting == 0  # SQLite: --initial is the ordinary bulk load
    from healthroam.registry.bulk import BulkLoader

    resumed = BulkLoader(platform.db, platform.registry, workers=2).load(
        feed,
        source="POP",
        mapping=Mapping.load("population"),
        reject_file=tmp_path / "initial.csv",
        chunk_size=120,
    )
    assert stopped.rows == 120
    assert resumed.resumed_from == 120
    _touch_masters(platform)  # the load has finished: others may write again
    assert _catalog(platform) == catalog  # every index and constraint is back, as defined
    assert _registry_snapshot(platform) == expected
    for name in ("rows", "new", "linked", "review", "rejected"):
        assert getattr(resumed, name) == getattr(bulk, name), name
    assert resumed.linked >= 3  # the repeats were matched, not made new persons
    with platform.db.transaction(readonly=True) as conn:
        assert conn.execute(select(func.count()).select_from(registry_load_deferred)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(registry_load_names)).scalar() == 0
    with (tmp_path / "bulk.csv").open() as a, (tmp_path / "initial.csv").open() as b:
        assert sorted(csv.reader(a)) == sorted(csv.reader(b))


def _touch_masters(platform: Platform) -> None:
    with platform.db.transaction() as conn:
        conn.execute(update(master_persons).values(version=master_persons.c.version))


def test_initial_load_refuses_a_registry_that_has_records(
    platform: Platform, province_files: Path, tmp_path: Path
) -> None:
    from healthroam.errors import Conflict
    from healthroam.registry.bulk import BulkLoader

    catalog = _catalog(platform)
    _load_fresh(platform, province_files / "sources" / "population.parquet", tmp_path / "a.csv")

    def again() -> LoadSummary:
        return BulkLoader(platform.db, platform.registry).load(
            _feed_with_repeats(province_files, tmp_path),
            source="POP",
            mapping=Mapping.load("population"),
            reject_file=tmp_path / "b.csv",
            initial=True,
        )

    if platform.db.engine.dialect.name == "postgresql":
        with pytest.raises(Conflict, match="empty registry"):
            again()
        assert _catalog(platform) == catalog  # nothing was dropped
    else:  # SQLite has no initial mode: the flag loads as the ordinary bulk path does
        summary = again()
        assert summary.linked >= 3


def test_a_patient_registered_during_an_initial_load_is_told_to_retry(
    platform: Platform, province: Any, http: Any
) -> None:
    from healthroam.registry import initial_load

    from helpers import patient

    if platform.db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no initial mode: nothing is dropped, nothing is refused")
    headers = province.headers("system/Patient.cruds")
    with platform.db.transaction() as conn:
        rebuild = initial_load.defer(conn)
    try:
        refused = http.post("/fhir/Patient", json=patient("林芳", sequence=301), headers=headers)
        assert refused.status_code == 503
        outcome = refused.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "transient"
        assert "initial load" in outcome["issue"][0]["diagnostics"]
    finally:
        with platform.db.transaction() as conn:
            initial_load.restore(conn, rebuild)
    created = http.post("/fhir/Patient", json=patient("林芳", sequence=301), headers=headers)
    assert created.status_code == 201, created.text


def test_rows_holding_nul_are_rejected_not_the_load(
    platform: Platform, loader: FeedLoader, tmp_path: Path
) -> None:
    """U+0000 in a feed's field: PostgreSQL cannot store it, and the whole load failed with a
    database error (SQLite stored it). Both loaders now reject those rows, naming the column."""
    from healthroam.registry.bulk import BulkLoader

    feed = tmp_path / "feed.csv"
    feed.write_text(
        "record_key,name,sex,birth_date,id_number,region_code,address,phone,ethnicity_code,"
        "death_date\n"
        f"P1,王芳,2,1990-01-01,{national_id(sequence=124)},460106,,,01,\n"
        f"P2,李\x00强,1,1990-01-01,{national_id(sequence=125)},460106,海口\x00市,,01,\n"
        f"P\x003,张三,1,1990-01-01,{national_id(sequence=126)},460106,,,01,\n",
        encoding="utf-8",
    )
    streaming = loader.load(
        feed, source="POP", mapping=Mapping.load("population"), reject_file=tmp_path / "s.csv"
    )
    bulk = BulkLoader(platform.db, platform.registry, workers=1).load(
        feed, source="INS", mapping=Mapping.load("population"), reject_file=tmp_path / "b.csv"
    )
    assert (streaming.rows, streaming.new, streaming.rejected) == (3, 1, 2)
    assert (bulk.rows, bulk.linked, bulk.rejected) == (3, 1, 2)
    for rejects in ("s.csv", "b.csv"):
        text = (tmp_path / rejects).read_text(encoding="utf-8")
        assert "\x00" not in text
        lines = list(csv.reader(text.splitlines()))
        assert [line[:3] for line in lines[1:]] == [
            ["2", "P2", "name"],
            ["3", "P\ufffd3", "record_key"],
        ]
        assert all("U+0000" in line[3] for line in lines[1:])
    assert _counts(platform) == (1, 2)
