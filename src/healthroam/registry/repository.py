"""SQL storage of the registry: master persons, source records, keys, reviews, events."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import (
    BigInteger,
    Connection,
    Integer,
    String,
    and_,
    any_,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from healthroam.db.raw import RawSelect, dbapi, is_postgres, sqlalchemy_errors
from healthroam.db.schema import fhir_resources, institutions
from healthroam.db.tables_registry import (
    master_persons,
    mpi_blocking_keys,
    mpi_event_recipients,
    mpi_events,
    mpi_name_counts,
    mpi_pair_decisions,
    mpi_reviews,
    source_records,
)
from healthroam.registry import event_feed
from healthroam.registry.model import SourceKey

TOTAL = ""  # the mpi_name_counts row holding the number of named records
# Below this many named records, name frequencies say more about the sample than about the
# population: no term-frequency adjustment (the model's average u applies).
MIN_TF_POPULATION = 10_000


@dataclass(frozen=True, slots=True)
class MasterRow:
    id: int
    master_index_id: str
    status: str
    merged_into: int | None
    golden: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class SourceRow:
    id: int
    institution: str
    id_system: str
    local_id: str
    master_id: int
    link_type: str
    data: dict[str, Any]
    normalized: dict[str, Any]
    content_hash: str
    fhir_patient_id: str | None
    updated_at: datetime


def _master(row: Any) -> MasterRow:
    return MasterRow(
        row.id,
        row.master_index_id,
        row.status,
        row.merged_into,
        row.golden,
        row.version,
        row.created_at,
        row.updated_at,
    )


def _source(row: Any) -> SourceRow:
    return SourceRow(
        row.id,
        row.institution_code,
        row.id_system,
        row.local_id,
        row.master_id,
        row.link_type,
        row.data,
        row.normalized,
        row.content_hash,
        row.fhir_patient_id,
        row.updated_at,
    )


# The statements of a registration (every new or changed Patient), built once with bound
# parameters: a call costs SQLAlchemy's cache look-up and the execution, not the construction.
_s, _m, _i = source_records.c, master_persons.c, institutions.c
_INSTITUTION_AND_SOURCE = (
    select(
        _i.kind.label("institution_kind"), _i.level.label("institution_level"), *source_records.c
    )
    .select_from(
        institutions.outerjoin(
            source_records,
            and_(
                _s.institution_code == _i.code,
                _s.id_system == bindparam("system"),
                _s.local_id == bindparam("local_id"),
            ),
        )
    )
    .where(_i.code == bindparam("institution"))
)
_INSTITUTIONS_OF = select(_i.code, _i.kind, _i.level).where(
    _i.code.in_(bindparam("codes", expanding=True))
)
_MASTER = select(master_persons).where(_m.id == bindparam("master_id"))
_MASTER_BY_INDEX_ID = select(master_persons).where(
    _m.master_index_id == bindparam("master_index_id")
)
_PREDECESSORS = select(master_persons).where(_m.merged_into == bindparam("master_id"))
_SET_GOLDEN = (
    update(master_persons)
    .where(_m.id == bindparam("master_id"))
    .values(
        golden=bindparam("golden"),
        name=bindparam("name"),
        birth_date=bindparam("birth_date"),
        sex=bindparam("sex"),
        version=_m.version + 1,
        updated_at=bindparam("now"),
    )
)
_SOURCES_OF = (
    select(source_records).where(_s.master_id.in_(bindparam("master_ids", expanding=True)))
).order_by(_s.id)
_SOURCE_BY_FHIR_ID = select(source_records).where(_s.fhir_patient_id == bindparam("patient_id"))
_MASTER_OF_FHIR_PATIENT = (
    select(master_persons)
    .select_from(source_records.join(master_persons, _m.id == _s.master_id))
    .where(_s.fhir_patient_id == bindparam("patient_id"))
    .limit(1)
)
# A stored, not deleted FHIR Patient and the master person of its source record (if any).
_LIVE_PATIENT_AND_MASTER = (
    select(fhir_resources.c.id.label("patient_id"), *master_persons.c)
    .select_from(
        fhir_resources.outerjoin(
            source_records, _s.fhir_patient_id == fhir_resources.c.id
        ).outerjoin(master_persons, _m.id == _s.master_id)
    )
    .where(
        fhir_resources.c.resource_type == "Patient",
        fhir_resources.c.id == bindparam("patient_id"),
        fhir_resources.c.deleted.is_(False),
    )
    .limit(1)
)
_CANDIDATE_IDS = (
    select(mpi_blocking_keys.c.source_id)
    .where(mpi_blocking_keys.c.key.in_(bindparam("keys", expanding=True)))
    .distinct()
    .limit(bindparam("limit", type_=Integer))
    .subquery()
)
_CANDIDATES = select(source_records).where(_s.id.in_(select(_CANDIDATE_IDS.c.source_id)))
_CANDIDATES_EXCLUDING = _CANDIDATES.where(_s.id != bindparam("exclude"))
_NAME_AND_TOTAL = select(mpi_name_counts.c.name, mpi_name_counts.c.count).where(
    mpi_name_counts.c.name.in_([bindparam("name"), bindparam("total")])
)
_NAME_COUNTS = {
    dialect: upsert(mpi_name_counts).on_conflict_do_update(
        index_elements=[mpi_name_counts.c.name],
        set_={"count": mpi_name_counts.c.count + bindparam("delta", type_=BigInteger)},
    )
    for dialect, upsert in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}


@dataclass(frozen=True, slots=True)
class KnownPerson:
    """A master person as read in the current transaction (the survivor of any merges) and
    its source records (none when it is not active), so a later step of the same work (the
    care gate after result recognition) need not read them again."""

    master: MasterRow
    sources: list[SourceRow]

    @classmethod
    def of(cls, repo: RegistryRepository, asked: MasterRow) -> KnownPerson:
        master = repo.merged_into_chain(asked)
        return cls(master, repo.sources_of([master.id]) if master.status == "active" else [])

    @property
    def fhir_patient_ids(self) -> list[str]:
        return [s.fhir_patient_id for s in self.sources if s.fhir_patient_id]


@dataclass(frozen=True, slots=True)
class NewSource:
    """A source record to insert (:meth:`RegistryRepository.add_person`)."""

    key: SourceKey
    link_type: str
    data: dict[str, Any]
    normalized: dict[str, Any]
    content_hash: str
    fhir_patient_id: str | None
    now: datetime


def _golden_columns(golden: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A master person's golden record and the columns PDQm searches on."""
    return {
        "golden": golden,
        "name": golden.get("name") or golden.get("latin_name"),
        "birth_date": golden.get("birth_date"),
        "sex": golden.get("sex"),
        "now": now,
    }


# A new person on PostgreSQL (add_person): ids first, then the rows in one pipeline.
_PG_NEW_IDS = (
    "SELECT nextval(pg_get_serial_sequence('master_persons', 'id')),"
    " nextval(pg_get_serial_sequence('source_records', 'id')),"
    " ARRAY(SELECT nextval(pg_get_serial_sequence('mpi_events', 'seq'))"
    " FROM generate_series(1, %s))"
)
_PG_ADD_MASTER = (
    "INSERT INTO master_persons (id, master_index_id, status, merged_into, golden, name,"
    " birth_date, sex, version, created_at, updated_at)"
    " VALUES (%s, %s, 'active', NULL, %s, %s, %s, %s, 1, %s, %s)"
)
_PG_ADD_SOURCE = (
    "INSERT INTO source_records (id, institution_code, id_system, local_id, master_id,"
    " link_type, data, normalized, content_hash, fhir_patient_id, created_at, updated_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_PG_ADD_KEYS = (
    "INSERT INTO mpi_blocking_keys (key, source_id) SELECT k, %s FROM unnest(%s::text[]) AS k"
)
# One new named record: +1 on the total and on the name, the total first (count_name's order).
_PG_COUNT_NAMES = (
    "INSERT INTO mpi_name_counts (name, count)"
    " SELECT n, 1 FROM unnest(%s::text[]) WITH ORDINALITY AS t(n, i) ORDER BY i"
    " ON CONFLICT (name) DO UPDATE SET count = mpi_name_counts.count + 1"
)
_PG_ADD_EVENT = (
    "INSERT INTO mpi_events (seq, occurred_at, event_type, master_id, other_master_id,"
    " source_id, actor_institution, actor_user, actor_client, reason, institutions, detail)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_PG_ADD_RECIPIENTS = (
    "INSERT INTO mpi_event_recipients (institution_code, seq)"
    " SELECT * FROM unnest(%s::text[], %s::bigint[])"
)

# A new source record linked to an existing person on PostgreSQL (link_source, decision 0060):
# the source with its blocking keys, the name counts and the person's sources with their
# institutions in one pipeline; then the golden record and the link event in another.
_PG_LINK_SOURCE = (
    "WITH s AS (INSERT INTO source_records (institution_code, id_system, local_id, master_id,"
    " link_type, data, normalized, content_hash, fhir_patient_id, created_at, updated_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id),"
    " k AS (INSERT INTO mpi_blocking_keys (key, source_id)"
    " SELECT k.key, s.id FROM s, unnest(%s::text[]) WITH ORDINALITY AS k(key, i) ORDER BY k.i)"
    " SELECT id FROM s"
)
_SOURCE_COLUMNS = ", ".join(f"s.{c.name}" for c in source_records.c)
_PG_SOURCES_AND_INSTITUTIONS = (
    f"SELECT {_SOURCE_COLUMNS}, i.kind, i.level"  # noqa: S608
    " FROM source_records s LEFT JOIN institutions i ON i.code = s.institution_code"
    " WHERE s.master_id = %s ORDER BY s.id"
)
_SOURCE_AND_INSTITUTION_ROW: Any = namedtuple(  # type: ignore[misc]
    "SourceAndInstitution", [*(c.name for c in source_records.c), "kind", "level"]
)
_PG_SET_GOLDEN = (
    "UPDATE master_persons SET golden = %s, name = %s, birth_date = %s, sex = %s,"
    " version = version + 1, updated_at = %s WHERE id = %s RETURNING master_index_id"
)
_PG_LINK_EVENT = (
    "WITH e AS (INSERT INTO mpi_events (occurred_at, event_type, master_id, other_master_id,"
    " source_id, actor_institution, actor_user, actor_client, reason, institutions, detail)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING seq)"
    " INSERT INTO mpi_event_recipients (institution_code, seq)"
    " SELECT c.code, e.seq FROM e, unnest(%s::text[]) WITH ORDINALITY AS c(code, i) ORDER BY c.i"
)


# The reads of a registration and of the care gate on PostgreSQL, through psycopg (db/raw.py);
# the lists as arrays (``= ANY``) instead of an expanding IN, so the text is compiled once.
_PG_INSTITUTION_AND_SOURCE = RawSelect(_INSTITUTION_AND_SOURCE)
# Each blocking key drives its own look-up of the (key, source) index: LATERAL, kept from
# being flattened by OFFSET 0. psycopg prepares a statement on its fifth execution and
# PostgreSQL then settles on a generic plan; for ``key = ANY($1)`` that plan walked the whole
# source-id index filtering on the key (a scan of every blocking key of the registry), priced
# below the custom plan because it cannot know how few keys match.
_PG_KEYS = (
    func.unnest(bindparam("keys", type_=ARRAY(String))).table_valued("key").render_derived(name="k")
)
_PG_KEY_HITS = (
    select(mpi_blocking_keys.c.source_id)
    .where(mpi_blocking_keys.c.key == _PG_KEYS.c.key)
    .offset(literal_column("0"))
    .lateral("hits")
)
_PG_CANDIDATE_IDS = (
    select(_PG_KEY_HITS.c.source_id)
    .select_from(_PG_KEYS.join(_PG_KEY_HITS, true()))
    .distinct()
    .limit(bindparam("limit", type_=Integer))
    .subquery()
)
_PG_CANDIDATES = select(source_records).where(_s.id.in_(select(_PG_CANDIDATE_IDS.c.source_id)))
_PG_CANDIDATES_ANY = RawSelect(_PG_CANDIDATES)
_PG_CANDIDATES_EXCLUDING = RawSelect(_PG_CANDIDATES.where(_s.id != bindparam("exclude")))
_PG_SOURCES_OF = RawSelect(
    select(source_records)
    .where(_s.master_id == any_(bindparam("master_ids", type_=ARRAY(BigInteger))))
    .order_by(_s.id)
)
_PG_PREDECESSORS = RawSelect(_PREDECESSORS)
_PG_NAME_COUNTS = RawSelect(_NAME_AND_TOTAL)  # a name's count and the total (decision 0060)
_PG_LIVE_PATIENT_AND_MASTER = RawSelect(_LIVE_PATIENT_AND_MASTER)


class RegistryRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # --- institutions -----------------------------------------------------------------------
    def institution(self, code: str) -> tuple[str, int | None] | None:
        row = self.conn.execute(
            select(institutions.c.kind, institutions.c.level).where(institutions.c.code == code)
        ).first()
        return (row.kind, row.level) if row else None

    def institution_and_source(
        self, key: SourceKey
    ) -> tuple[tuple[str, int | None] | None, SourceRow | None]:
        """:meth:`institution` of the key's institution and :meth:`source_by_key`, in one
        query (a registration needs both)."""
        params = {"institution": key.institution, "system": key.system, "local_id": key.local_id}
        if is_postgres(self.conn):
            row = _PG_INSTITUTION_AND_SOURCE.first(self.conn, params)
        else:
            row = self.conn.execute(_INSTITUTION_AND_SOURCE, params).first()
        if row is None:
            return None, None
        source = _source(row) if row.id is not None else None
        return (row.institution_kind, row.institution_level), source

    def institutions_of(self, codes: Iterable[str]) -> dict[str, tuple[str, int | None]]:
        rows = self.conn.execute(_INSTITUTIONS_OF, {"codes": sorted(set(codes))})
        return {r.code: (r.kind, r.level) for r in rows}

    # --- master persons ---------------------------------------------------------------------
    def add_master(self, master_index_id: str, now: datetime) -> int:
        result = self.conn.execute(
            insert(master_persons),
            {
                "master_index_id": master_index_id,
                "status": "active",
                "merged_into": None,
                "golden": {},
                "version": 0,
                "created_at": now,
                "updated_at": now,
            },
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    def master(self, master_id: int, *, lock: bool = False) -> MasterRow | None:
        if lock and self.conn.dialect.name == "postgresql":
            query = select(master_persons).where(_m.id == master_id).with_for_update()
            row = self.conn.execute(query).first()
        else:
            row = self.conn.execute(_MASTER, {"master_id": master_id}).first()
        return _master(row) if row else None

    def master_by_index_id(self, master_index_id: str) -> MasterRow | None:
        row = self.conn.execute(_MASTER_BY_INDEX_ID, {"master_index_id": master_index_id}).first()
        return _master(row) if row else None

    def masters(self, ids: Iterable[int]) -> dict[int, MasterRow]:
        rows = self.conn.execute(select(master_persons).where(master_persons.c.id.in_(set(ids))))
        return {r.id: _master(r) for r in rows}

    def set_golden(self, master_id: int, golden: dict[str, Any], now: datetime) -> None:
        self.conn.execute(_SET_GOLDEN, {"master_id": master_id, **_golden_columns(golden, now)})

    def add_person(
        self,
        master_index_id: str,
        source: NewSource,
        keys: Iterable[str],
        name: str | None,
        golden_of: Callable[[int], dict[str, Any]],
        events: Sequence[dict[str, Any]],
    ) -> tuple[int, int]:
        """A new master person with its one source record: :meth:`add_master`,
        :meth:`add_source`, :meth:`set_keys`, :meth:`count_name` (when ``name``),
        :meth:`set_golden` with ``golden_of(source_id)`` and :meth:`add_events` (each event's
        ``master_id`` filled in, and its ``source_id`` where it has ``names_source``). Returns
        (master id, source id).

        On PostgreSQL the ids are drawn from the sequences first (one round trip) and the rows
        are sent together in one pipeline over psycopg, the master already with its golden
        record (version 1, as the insert and the update made it): two round trips instead of
        eight statements. Same rows either way."""
        now = source.now
        if not is_postgres(self.conn):
            master_id = self.add_master(master_index_id, now)
            source_id = self._add_source_statements(source, master_id, keys, name)
            self.set_golden(master_id, golden_of(source_id), now)
            self.add_events(
                [
                    {
                        **e,
                        "master_id": master_id,
                        "source_id": source_id if e.get("names_source") else None,
                    }
                    for e in events
                ]
            )
            return master_id, source_id
        raw = dbapi(self.conn)
        with sqlalchemy_errors("INSERT master person (pipelined)"):
            cursor = raw.cursor()
            row = cursor.execute(_PG_NEW_IDS, (len(events),)).fetchone()
            assert row is not None
            master_id, source_id, seqs = int(row[0]), int(row[1]), sorted(row[2])
            golden = _golden_columns(golden_of(source_id), now)
            told = [sorted(set(e.get("recipients") or ())) for e in events]
            with raw.pipeline():
                cursor.execute(
                    _PG_ADD_MASTER,
                    (
                        master_id,
                        master_index_id,
                        Jsonb(golden["golden"]),
                        golden["name"],
                        golden["birth_date"],
                        golden["sex"],
                        now,
                        now,
                    ),
                )
                cursor.execute(
                    _PG_ADD_SOURCE,
                    (
                        source_id,
                        source.key.institution,
                        source.key.system,
                        source.key.local_id,
                        master_id,
                        source.link_type,
                        Jsonb(source.data),
                        Jsonb(source.normalized),
                        source.content_hash,
                        source.fhir_patient_id,
                        now,
                        now,
                    ),
                )
                wanted = [k[:255] for k in sorted(set(keys))]
                if wanted:
                    cursor.execute(_PG_ADD_KEYS, (source_id, wanted))
                if name:
                    names = list(dict.fromkeys((TOTAL, name[:200])))
                    cursor.execute(_PG_COUNT_NAMES, (names,))
                if events:
                    cursor.executemany(
                        _PG_ADD_EVENT,
                        [
                            (
                                seq,
                                e["now"],
                                e["event_type"],
                                master_id,
                                e.get("other_master_id"),
                                source_id if e.get("names_source") else None,
                                e.get("actor_institution"),
                                e.get("actor_user"),
                                e.get("actor_client"),
                                e.get("reason"),
                                Jsonb(codes),
                                Jsonb(e["detail"]) if e.get("detail") is not None else None,
                            )
                            for seq, e, codes in zip(seqs, events, told, strict=True)
                        ],
                    )
                recipients = [
                    (c, seq) for seq, codes in zip(seqs, told, strict=True) for c in codes
                ]
                if recipients:
                    cursor.execute(
                        _PG_ADD_RECIPIENTS,
                        ([c for c, _ in recipients], [seq for _, seq in recipients]),
                    )
        return master_id, source_id

    def link_source(
        self,
        source: NewSource,
        master_id: int,
        keys: Iterable[str],
        name: str | None,
        golden_of: Callable[[Sequence[SourceRow], dict[str, tuple[str, int | None]]], Any],
        event: dict[str, Any],
    ) -> tuple[int, list[str], str | None]:
        """A new source record linked to the existing person ``master_id``: :meth:`add_source`,
        :meth:`set_keys`, :meth:`count_name` (when ``name``), the person's golden record
        refreshed (:meth:`sources_of` and :meth:`institutions_of` read after those writes,
        ``golden_of(sources, kinds)`` stored by :meth:`set_golden`) and ``event`` added
        (:meth:`add_events`, with ``master_id``, the new ``source_id`` and the sources'
        institutions as its recipients). Returns (source id, recipients, the person's master
        index id when it was read on the way, else None).

        On PostgreSQL two pipelines over psycopg (decision 0060): the source with its keys (one
        statement), the name counts and the person's sources joined to their institutions;
        then the golden record (``RETURNING`` the master index id) and the event with its
        recipients (one statement). Two round trips instead of nine statements; the same rows,
        written in the same order (the name counts' row locks before the master's, as
        before), and the sources read after the writes that queue on those locks."""
        now = source.now
        if not is_postgres(self.conn):
            source_id = self._add_source_statements(source, master_id, keys, name)
            sources = self.sources_of([master_id])
            kinds = self.institutions_of(s.institution for s in sources)
            self.set_golden(master_id, golden_of(sources, kinds), now)
            told = sorted({s.institution for s in sources})
            self.add_events(
                [{**event, "recipients": told, "master_id": master_id, "source_id": source_id}]
            )
            return source_id, told, None
        raw = dbapi(self.conn)
        with sqlalchemy_errors("INSERT linked source record (pipelined)"):
            added, read = raw.cursor(), raw.cursor()
            with raw.pipeline():
                added.execute(
                    _PG_LINK_SOURCE,
                    (
                        source.key.institution,
                        source.key.system,
                        source.key.local_id,
                        master_id,
                        source.link_type,
                        Jsonb(source.data),
                        Jsonb(source.normalized),
                        source.content_hash,
                        source.fhir_patient_id,
                        now,
                        now,
                        [k[:255] for k in sorted(set(keys))],
                    ),
                )
                if name:
                    names = list(dict.fromkeys((TOTAL, name[:200])))
                    raw.cursor().execute(_PG_COUNT_NAMES, (names,))
                read.execute(_PG_SOURCES_AND_INSTITUTIONS, (master_id,))
            inserted = added.fetchone()
            assert inserted is not None
            source_id = int(inserted[0])
            found: list[Any] = [_SOURCE_AND_INSTITUTION_ROW._make(r) for r in read.fetchall()]
            sources = [_source(r) for r in found]
            kinds = {r.institution_code: (r.kind, r.level) for r in found if r.kind is not None}
            golden = _golden_columns(golden_of(sources, kinds), now)
            told = sorted({s.institution for s in sources})
            detail = event.get("detail")
            updated = raw.cursor()
            with raw.pipeline():
                updated.execute(
                    _PG_SET_GOLDEN,
                    (
                        Jsonb(golden["golden"]),
                        golden["name"],
                        golden["birth_date"],
                        golden["sex"],
                        now,
                        master_id,
                    ),
                )
                raw.cursor().execute(
                    _PG_LINK_EVENT,
                    (
                        event["now"],
                        event["event_type"],
                        master_id,
                        event.get("other_master_id"),
                        source_id,
                        event.get("actor_institution"),
                        event.get("actor_user"),
                        event.get("actor_client"),
                        event.get("reason"),
                        Jsonb(told),
                        Jsonb(detail) if detail is not None else None,
                        told,
                    ),
                )
            master = updated.fetchone()
        return source_id, told, str(master[0]) if master is not None else None

    def set_status(
        self, master_id: int, status: str, merged_into: int | None, now: datetime
    ) -> None:
        self.conn.execute(
            update(master_persons)
            .where(master_persons.c.id == master_id)
            .values(
                status=status,
                merged_into=merged_into,
                version=master_persons.c.version + 1,
                updated_at=now,
            )
        )

    def merged_into_chain(self, master: MasterRow) -> MasterRow:
        """Follow merged_into to the surviving master (merges can chain)."""
        seen = {master.id}
        while master.status == "merged" and master.merged_into is not None:
            nxt = self.master(master.merged_into)
            if nxt is None or nxt.id in seen:
                break
            seen.add(nxt.id)
            master = nxt
        return master

    def predecessors(self, master_id: int) -> list[MasterRow]:
        params = {"master_id": master_id}
        if is_postgres(self.conn):
            return [_master(r) for r in _PG_PREDECESSORS.rows(self.conn, params)]
        return [_master(r) for r in self.conn.execute(_PREDECESSORS, params)]

    # --- source records ---------------------------------------------------------------------
    def source_by_key(self, key: SourceKey) -> SourceRow | None:
        row = self.conn.execute(
            select(source_records).where(
                source_records.c.institution_code == key.institution,
                source_records.c.id_system == key.system,
                source_records.c.local_id == key.local_id,
            )
        ).first()
        return _source(row) if row else None

    def source(self, source_id: int) -> SourceRow | None:
        row = self.conn.execute(
            select(source_records).where(source_records.c.id == source_id)
        ).first()
        return _source(row) if row else None

    def source_by_fhir_id(self, patient_id: str) -> SourceRow | None:
        row = self.conn.execute(_SOURCE_BY_FHIR_ID, {"patient_id": patient_id}).first()
        return _source(row) if row else None

    def master_of_fhir_patient(self, patient_id: str) -> MasterRow | None:
        """The master person of the source record of a FHIR Patient (merges not followed):
        :meth:`source_by_fhir_id` and :meth:`master` in one join."""
        row = self.conn.execute(_MASTER_OF_FHIR_PATIENT, {"patient_id": patient_id}).first()
        return _master(row) if row else None

    def master_of_live_patient(self, patient_id: str) -> tuple[bool, MasterRow | None]:
        """Whether a FHIR Patient with this id is stored and not deleted, and
        :meth:`master_of_fhir_patient`, in one query."""
        params = {"patient_id": patient_id}
        if is_postgres(self.conn):
            row = _PG_LIVE_PATIENT_AND_MASTER.first(self.conn, params)
        else:
            row = self.conn.execute(_LIVE_PATIENT_AND_MASTER, params).first()
        if row is None:
            return False, None
        return True, _master(row) if row.id is not None else None

    def sources_of(self, master_ids: Iterable[int]) -> list[SourceRow]:
        params = {"master_ids": sorted(set(master_ids))}
        if is_postgres(self.conn):
            return [_source(r) for r in _PG_SOURCES_OF.rows(self.conn, params)]
        return [_source(r) for r in self.conn.execute(_SOURCES_OF, params)]

    def _add_source_statements(
        self, source: NewSource, master_id: int, keys: Iterable[str], name: str | None
    ) -> int:
        """:meth:`add_source`, :meth:`set_keys` and :meth:`count_name` (when ``name``) as
        separate statements (the general path of :meth:`add_person` and :meth:`link_source`)."""
        source_id = self.add_source(
            source.key,
            master_id,
            source.link_type,
            source.data,
            source.normalized,
            source.content_hash,
            source.fhir_patient_id,
            source.now,
        )
        self.set_keys(source_id, keys)
        if name:
            self.count_name(name, 1)
        return source_id

    def add_source(
        self,
        key: SourceKey,
        master_id: int,
        link_type: str,
        data: dict[str, Any],
        normalized: dict[str, Any],
        content_hash: str,
        fhir_patient_id: str | None,
        now: datetime,
    ) -> int:
        result = self.conn.execute(
            insert(source_records),
            {
                "institution_code": key.institution,
                "id_system": key.system,
                "local_id": key.local_id,
                "master_id": master_id,
                "link_type": link_type,
                "data": data,
                "normalized": normalized,
                "content_hash": content_hash,
                "fhir_patient_id": fhir_patient_id,
                "created_at": now,
                "updated_at": now,
            },
        )
        pk = result.inserted_primary_key
        assert pk is not None
        return int(pk[0])

    def update_source(
        self,
        source_id: int,
        data: dict[str, Any],
        normalized: dict[str, Any],
        content_hash: str,
        now: datetime,
    ) -> None:
        self.conn.execute(
            update(source_records)
            .where(source_records.c.id == source_id)
            .values(data=data, normalized=normalized, content_hash=content_hash, updated_at=now)
        )

    def move_sources(
        self, source_ids: Sequence[int], master_id: int, link_type: str, now: datetime
    ) -> None:
        if source_ids:
            self.conn.execute(
                update(source_records)
                .where(source_records.c.id.in_(source_ids))
                .values(master_id=master_id, link_type=link_type, updated_at=now)
            )

    def move_all(self, from_master: int, to_master: int, now: datetime) -> list[int]:
        ids = list(
            self.conn.execute(
                select(source_records.c.id).where(source_records.c.master_id == from_master)
            ).scalars()
        )
        self.conn.execute(
            update(source_records)
            .where(source_records.c.master_id == from_master)
            .values(master_id=to_master, updated_at=now)
        )
        return [int(i) for i in ids]

    # --- blocking keys and name frequencies --------------------------------------------------
    def set_keys(self, source_id: int, keys: Iterable[str], *, replace: bool = False) -> None:
        if replace:
            self.conn.execute(
                delete(mpi_blocking_keys).where(mpi_blocking_keys.c.source_id == source_id)
            )
        rows = [{"key": k[:255], "source_id": source_id} for k in sorted(set(keys))]
        if rows:
            self.conn.execute(insert(mpi_blocking_keys), rows)

    def candidates(self, keys: Iterable[str], exclude: int | None, limit: int) -> list[SourceRow]:
        """Source records sharing at least one blocking key (an index lookup, never a scan)."""
        wanted = sorted(set(keys))
        if not wanted:
            return []
        params: dict[str, Any] = {"keys": wanted, "limit": limit}
        if exclude is not None:
            params["exclude"] = exclude
        if is_postgres(self.conn):
            raw = _PG_CANDIDATES_ANY if exclude is None else _PG_CANDIDATES_EXCLUDING
            return [_source(r) for r in raw.rows(self.conn, params)]
        query = _CANDIDATES if exclude is None else _CANDIDATES_EXCLUDING
        return [_source(r) for r in self.conn.execute(query, params)]

    def count_name(self, name: str, delta: int) -> None:
        """Add ``delta`` to the name's count and to the total, in one upsert of both rows.

        The total first: every writer takes the one total row before any name's row (VALUES
        rows are inserted or updated in order), so two transactions registering several
        people (a Bundle, an import chunk, an HL7 group commit) queue on it instead of
        locking two names in opposite orders (a deadlock)."""
        self.conn.execute(
            _NAME_COUNTS[self.conn.dialect.name],
            [
                {"name": key, "count": max(delta, 0), "delta": delta}
                for key in dict.fromkeys((TOTAL, name[:200]))
            ],
        )

    def name_frequency(self, name: str) -> float:
        params = {"name": name[:200], "total": TOTAL}
        if is_postgres(self.conn):
            found = _PG_NAME_COUNTS.rows(self.conn, params)
        else:
            found = list(self.conn.execute(_NAME_AND_TOTAL, params))
        rows = {row[0]: int(row[1]) for row in found}
        total = rows.get(TOTAL, 0)
        if total < MIN_TF_POPULATION:
            return 0.0
        return rows.get(name[:200], 0) / total

    # --- reviews and decisions --------------------------------------------------------------
    def add_review(
        self,
        source_id: int,
        candidate_source_id: int,
        weight: float,
        details: dict[str, Any],
        now: datetime,
    ) -> bool:
        try:
            with self.conn.begin_nested():
                self.conn.execute(
                    insert(mpi_reviews).values(
                        source_id=source_id,
                        candidate_source_id=candidate_source_id,
                        weight=weight,
                        details=details,
                        status="open",
                        created_at=now,
                    )
                )
        except IntegrityError:
            return False
        return True

    def reviews(self, status: str | None, limit: int, after: int | None) -> list[Any]:
        query = select(mpi_reviews).order_by(mpi_reviews.c.id).limit(limit)
        if status:
            query = query.where(mpi_reviews.c.status == status)
        if after is not None:
            query = query.where(mpi_reviews.c.id > after)
        return list(self.conn.execute(query))

    def review(self, review_id: int, *, lock: bool = False) -> Any:
        query = select(mpi_reviews).where(mpi_reviews.c.id == review_id)
        if lock and self.conn.dialect.name == "postgresql":
            query = query.with_for_update()
        return self.conn.execute(query).first()

    def close_review(
        self,
        review_id: int,
        status: str,
        now: datetime,
        user: str | None,
        agency: str,
        reason: str | None,
    ) -> None:
        self.conn.execute(
            update(mpi_reviews)
            .where(mpi_reviews.c.id == review_id)
            .values(
                status=status, decided_at=now, decided_by=user, decided_agency=agency, reason=reason
            )
        )

    def set_decision(
        self, a: int, b: int, decision: str, now: datetime, user: str | None, agency: str | None
    ) -> None:
        low, high = min(a, b), max(a, b)
        self.conn.execute(
            delete(mpi_pair_decisions).where(
                mpi_pair_decisions.c.low_source_id == low,
                mpi_pair_decisions.c.high_source_id == high,
            )
        )
        self.conn.execute(
            insert(mpi_pair_decisions).values(
                low_source_id=low,
                high_source_id=high,
                decision=decision,
                decided_at=now,
                decided_by=user,
                decided_agency=agency,
            )
        )

    def different_from(self, source_ids: Sequence[int]) -> set[int]:
        """Source records a steward said are different people from any of ``source_ids``."""
        if not source_ids:
            return set()
        rows = self.conn.execute(
            select(mpi_pair_decisions.c.low_source_id, mpi_pair_decisions.c.high_source_id).where(
                mpi_pair_decisions.c.decision == "different",
                or_(
                    mpi_pair_decisions.c.low_source_id.in_(source_ids),
                    mpi_pair_decisions.c.high_source_id.in_(source_ids),
                ),
            )
        )
        wanted = set(source_ids)
        return {
            row.high_source_id if row.low_source_id in wanted else row.low_source_id for row in rows
        }

    # --- events -----------------------------------------------------------------------------
    def add_event(
        self,
        event_type: str,
        master_id: int,
        now: datetime,
        *,
        other_master_id: int | None = None,
        source_id: int | None = None,
        actor_institution: str | None = None,
        actor_user: str | None = None,
        actor_client: str | None = None,
        reason: str | None = None,
        recipients: Iterable[str] = (),
        detail: dict[str, Any] | None = None,
    ) -> int:
        told = sorted(set(recipients))
        result = self.conn.execute(
            insert(mpi_events).values(
                occurred_at=now,
                event_type=event_type,
                master_id=master_id,
                other_master_id=other_master_id,
                source_id=source_id,
                actor_institution=actor_institution,
                actor_user=actor_user,
                actor_client=actor_client,
                reason=reason,
                institutions=told,
                detail=detail,
            )
        )
        pk = result.inserted_primary_key
        assert pk is not None
        seq = int(pk[0])
        if told:
            self.conn.execute(
                insert(mpi_event_recipients),
                [{"institution_code": code, "seq": seq} for code in told],
            )
        return seq

    def add_events(self, events: Sequence[dict[str, Any]]) -> list[int]:
        """:meth:`add_event` of several events (its keyword arguments, plus ``event_type``,
        ``master_id`` and ``now``) in one insert, and their recipients in another; the events
        get ascending seq numbers in the given order."""
        if not events:
            return []
        rows = []
        for event in events:
            told = sorted(set(event.get("recipients") or ()))
            rows.append(
                {
                    "occurred_at": event["now"],
                    "event_type": event["event_type"],
                    "master_id": event["master_id"],
                    "other_master_id": event.get("other_master_id"),
                    "source_id": event.get("source_id"),
                    "actor_institution": event.get("actor_institution"),
                    "actor_user": event.get("actor_user"),
                    "actor_client": event.get("actor_client"),
                    "reason": event.get("reason"),
                    "institutions": told,
                    "detail": event.get("detail"),
                }
            )
        if len(rows) == 1:
            inserted = self.conn.execute(insert(mpi_events).values(rows[0])).inserted_primary_key
            assert inserted is not None
            seqs = [int(inserted[0])]
        else:
            result = self.conn.execute(
                insert(mpi_events).returning(mpi_events.c.seq, sort_by_parameter_order=True),
                rows,
            )
            seqs = [int(seq) for seq in result.scalars()]
        recipients = [
            {"institution_code": code, "seq": seq}
            for seq, row in zip(seqs, rows, strict=True)
            for code in row["institutions"]
        ]
        if recipients:
            self.conn.execute(insert(mpi_event_recipients), recipients)
        return seqs

    def events_unpositioned(self) -> bool:
        return event_feed.pending(self.conn)

    def position_events(self, limit: int) -> int:
        return event_feed.assign_positions(self.conn, limit)

    def events_for(self, institution: str | None, after: int, limit: int) -> list[Any]:
        """Events in feed order (``position``, decision 0044) after the position ``after``."""
        query = (
            select(mpi_events).where(mpi_events.c.position > after).order_by(mpi_events.c.position)
        )
        if institution is not None:
            query = query.join(
                mpi_event_recipients,
                and_(
                    mpi_event_recipients.c.seq == mpi_events.c.seq,
                    mpi_event_recipients.c.institution_code == institution,
                ),
            )
        return list(self.conn.execute(query.limit(limit)))

    def history(self, master_ids: Iterable[int]) -> list[Any]:
        ids = set(master_ids)
        return list(
            self.conn.execute(
                select(mpi_events)
                .where(or_(mpi_events.c.master_id.in_(ids), mpi_events.c.other_master_id.in_(ids)))
                .order_by(mpi_events.c.seq)
            )
        )

    def last_merge_event(self, merged_master: int) -> Any:
        return self.conn.execute(
            select(mpi_events)
            .where(
                mpi_events.c.event_type == "merge", mpi_events.c.other_master_id == merged_master
            )
            .order_by(mpi_events.c.seq.desc())
            .limit(1)
        ).first()

    # --- PDQm -------------------------------------------------------------------------------
    def search_masters(
        self,
        *,
        master_ids: set[int] | None,
        name_prefix: str | None,
        name_contains: str | None,
        birth_date: str | None,
        sex: str | None,
        limit: int,
    ) -> list[MasterRow]:
        query = select(master_persons).where(master_persons.c.status == "active")
        if master_ids is not None:
            query = query.where(master_persons.c.id.in_(master_ids))
        if name_prefix:
            query = query.where(master_persons.c.name.startswith(name_prefix, autoescape=True))
        if name_contains:
            query = query.where(master_persons.c.name.contains(name_contains, autoescape=True))
        if birth_date:
            query = query.where(master_persons.c.birth_date == birth_date)
        if sex:
            query = query.where(master_persons.c.sex == sex)
        rows = self.conn.execute(query.order_by(master_persons.c.id).limit(limit))
        return [_master(r) for r in rows]

    def masters_with_key(self, key: str) -> set[int]:
        rows = self.conn.execute(
            select(source_records.c.master_id)
            .join(mpi_blocking_keys, mpi_blocking_keys.c.source_id == source_records.c.id)
            .where(mpi_blocking_keys.c.key == key)
        )
        return {int(r) for r in rows.scalars()}

    def count_masters(self) -> int:
        return int(self.conn.execute(select(func.count()).select_from(master_persons)).scalar_one())
