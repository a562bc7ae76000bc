"""SQL of the HL7 gateway: the sender table, accepted messages (with their ACKs), rejections."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from psycopg.rows import namedtuple_row
from sqlalchemy import (
    Connection,
    Integer,
    bindparam,
    delete,
    insert,
    null,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError

from healthroam.db.raw import dbapi, insert_many, is_postgres, sqlalchemy_errors
from healthroam.db.schema import fhir_resources, institutions
from healthroam.db.tables_exchange import hl7_messages, hl7_rejections, hl7_senders
from healthroam.db.tables_records import fhir_idx_token
from healthroam.db.tables_registry import master_persons, source_records
from healthroam.exchange.hl7.senders import SenderBinding
from healthroam.records.deferred import deferred_on


def _binding(row: Any) -> SenderBinding:
    return SenderBinding(
        application=row.application,
        facility=row.facility,
        institution_code=row.institution_code,
        active=row.active,
        created_at=row.created_at,
        description=row.description,
    )


# A group commit's senders and stored ACKs on PostgreSQL, the keys as arrays (the SQLAlchemy
# form is an IN of tuples, one statement text per group size). The senders are a few rows.
_PG_SENDERS = (
    "SELECT s.application, s.facility, s.institution_code, s.active, s.description,"
    " s.created_at, i.active AS institution_active"
    " FROM unnest(%(apps)s::text[], %(facs)s::text[]) AS k(application, facility)"
    " JOIN hl7_senders s ON s.application = k.application AND s.facility = k.facility"
    " JOIN institutions i ON i.code = s.institution_code"
)
# The message log grows without bound: each key is its own primary-key look-up (a LATERAL
# sub-query kept apart by OFFSET 0); joined, the planner hashed a sequential scan of the whole
# log on a table without statistics (autovacuum off, a new database; decision 0057).
_PG_ACKS = (
    "SELECT m.application, m.facility, m.control_id, m.ack, m.ack_code, m.digest"
    " FROM unnest(%(apps)s::text[], %(facs)s::text[], %(ids)s::text[])"
    " AS k(application, facility, control_id)"
    " JOIN LATERAL (SELECT * FROM hl7_messages x WHERE x.application = k.application"
    " AND x.facility = k.facility AND x.control_id = k.control_id OFFSET 0) m ON true"
)


def _raw_rows(conn: Connection, sql: str, params: dict[str, Any]) -> list[Any]:
    """Rows as named tuples (attribute access, as SQLAlchemy's rows)."""
    with sqlalchemy_errors(sql[:40]):
        cursor = dbapi(conn).cursor(row_factory=namedtuple_row)
        return cursor.execute(sql, params).fetchall()


@dataclass(frozen=True, slots=True)
class StoredAck:
    ack: bytes
    ack_code: str
    digest: bytes


class SenderRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, binding: SenderBinding) -> bool:
        """Insert; False when the (application, facility) pair is already bound."""
        try:
            with self.conn.begin_nested():
                self.conn.execute(
                    insert(hl7_senders).values(
                        application=binding.application,
                        facility=binding.facility,
                        institution_code=binding.institution_code,
                        active=binding.active,
                        description=binding.description,
                        created_at=binding.created_at,
                    )
                )
        except IntegrityError:
            return False
        return True

    def get(self, application: str, facility: str) -> SenderBinding | None:
        row = self.conn.execute(
            select(hl7_senders).where(
                hl7_senders.c.application == application, hl7_senders.c.facility == facility
            )
        ).first()
        return _binding(row) if row else None

    def find_active(self, application: str, facility: str) -> tuple[SenderBinding, bool] | None:
        """The binding and whether its institution is active, or None when unbound."""
        row = self.conn.execute(
            select(hl7_senders, institutions.c.active.label("institution_active"))
            .join(institutions, institutions.c.code == hl7_senders.c.institution_code)
            .where(hl7_senders.c.application == application, hl7_senders.c.facility == facility)
        ).first()
        return (_binding(row), bool(row.institution_active)) if row else None

    def find_active_many(
        self, keys: set[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[SenderBinding, bool]]:
        """:meth:`find_active` for several senders in one query."""
        if not keys:
            return {}
        rows: Any
        if is_postgres(self.conn):  # every group commit asks: through psycopg (db/raw.py)
            ordered = sorted(keys)
            params = {"apps": [k[0] for k in ordered], "facs": [k[1] for k in ordered]}
            rows = _raw_rows(self.conn, _PG_SENDERS, params)
        else:
            rows = self.conn.execute(
                select(hl7_senders, institutions.c.active.label("institution_active"))
                .join(institutions, institutions.c.code == hl7_senders.c.institution_code)
                .where(tuple_(hl7_senders.c.application, hl7_senders.c.facility).in_(sorted(keys)))
            )
        return {
            (r.application, r.facility): (_binding(r), bool(r.institution_active)) for r in rows
        }

    def list(self, institution_code: str | None = None) -> list[SenderBinding]:
        query = select(hl7_senders).order_by(hl7_senders.c.application, hl7_senders.c.facility)
        if institution_code is not None:
            query = query.where(hl7_senders.c.institution_code == institution_code)
        return [_binding(r) for r in self.conn.execute(query)]

    def set_active(self, application: str, facility: str, active: bool) -> bool:
        result = self.conn.execute(
            update(hl7_senders)
            .where(hl7_senders.c.application == application, hl7_senders.c.facility == facility)
            .values(active=active)
        )
        return result.rowcount > 0

    def remove(self, application: str, facility: str) -> bool:
        result = self.conn.execute(
            delete(hl7_senders).where(
                hl7_senders.c.application == application, hl7_senders.c.facility == facility
            )
        )
        return result.rowcount > 0


class MessageLogRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def find_ack(self, application: str, facility: str, control_id: str) -> StoredAck | None:
        row = self.conn.execute(
            select(hl7_messages.c.ack, hl7_messages.c.ack_code, hl7_messages.c.digest).where(
                hl7_messages.c.application == application,
                hl7_messages.c.facility == facility,
                hl7_messages.c.control_id == control_id,
            )
        ).first()
        return StoredAck(bytes(row.ack), row.ack_code, bytes(row.digest)) if row else None

    def find_acks(self, keys: set[tuple[str, str, str]]) -> dict[tuple[str, str, str], StoredAck]:
        """:meth:`find_ack` for several messages in one query."""
        if not keys:
            return {}
        rows: Any
        if is_postgres(self.conn):  # every group commit asks: through psycopg (db/raw.py)
            ordered = sorted(keys)
            params = {
                "apps": [k[0] for k in ordered],
                "facs": [k[1] for k in ordered],
                "ids": [k[2] for k in ordered],
            }
            rows = _raw_rows(self.conn, _PG_ACKS, params)
        else:
            c = hl7_messages.c
            rows = self.conn.execute(
                select(c.application, c.facility, c.control_id, c.ack, c.ack_code, c.digest).where(
                    tuple_(c.application, c.facility, c.control_id).in_(sorted(keys))
                )
            )
        return {
            (r.application, r.facility, r.control_id): StoredAck(
                bytes(r.ack), r.ack_code, bytes(r.digest)
            )
            for r in rows
        }

    def record_accepted(self, **values: Any) -> None:
        """Insert the message's row; raises IntegrityError when its key is already taken."""
        self.conn.execute(insert(hl7_messages), values)  # parameters: a cached statement

    def record_accepted_many(self, rows: list[dict[str, Any]]) -> None:
        """Insert several messages' rows (same keys) in one statement; raises IntegrityError
        when a key is already taken."""
        insert_many(self.conn, hl7_messages, rows)

    def record_rejected(self, **values: Any) -> None:
        self.conn.execute(insert(hl7_rejections), values)

    def count_accepted(self) -> int:
        from sqlalchemy import func

        return int(self.conn.execute(select(func.count()).select_from(hl7_messages)).scalar_one())

    def accepted_control_ids(self, application: str, facility: str) -> set[str]:
        rows = self.conn.execute(
            select(hl7_messages.c.control_id).where(
                hl7_messages.c.application == application, hl7_messages.c.facility == facility
            )
        )
        return {r.control_id for r in rows}

    def purge_rejections(self, before: datetime) -> int:
        """Delete the rejections received before ``before``; return how many."""
        result = self.conn.execute(
            delete(hl7_rejections).where(hl7_rejections.c.received_at < before)
        )
        return int(result.rowcount or 0)

    def rejections(self, since: datetime | None = None) -> list[Any]:
        query = select(hl7_rejections).order_by(hl7_rejections.c.id)
        if since is not None:
            query = query.where(hl7_rejections.c.received_at >= since)
        return list(self.conn.execute(query))


@dataclass(frozen=True, slots=True)
class CurrentRow:
    """What the handlers need of a stored resource's current row."""

    deleted: bool
    institution_code: str | None
    content: dict[str, Any] | None
    # A Patient's master index id as registered (LookupRepository.master_index_id), when read
    # with the row: ``master_known`` says whether it was (None then means "not registered").
    master_index_id: str | None = None
    master_known: bool = False


# The look-ups run for almost every message: built once (with bound parameters), so a call
# costs SQLAlchemy's cache look-up and the execution, not the construction of the statement.
_r, _t = fhir_resources.c, fhir_idx_token.c
_MASTER_OF_ROW = (
    select(master_persons.c.master_index_id)
    .select_from(
        source_records.join(master_persons, master_persons.c.id == source_records.c.master_id)
    )
    .where(source_records.c.fhir_patient_id == _r.id, _r.resource_type == "Patient")
    .limit(1)
    .scalar_subquery()
)
_CURRENT = select(
    _r.resource_type,
    _r.id,
    _r.deleted,
    _r.institution_code,
    _r.content,
    _MASTER_OF_ROW.label("master_index_id"),
)
_CURRENT_ONE = _CURRENT.where(_r.resource_type == bindparam("rtype"), _r.id == bindparam("rid"))
_CURRENT_MANY = _CURRENT.where(
    tuple_(_r.resource_type, _r.id).in_(bindparam("keys", expanding=True))
)
# current_many and identified_many together: one UNION ALL (key rows carry no system/code).
_KEYED_PART = select(
    _r.resource_type,
    _r.id,
    _r.deleted,
    _r.institution_code,
    _r.content,
    _MASTER_OF_ROW.label("master_index_id"),
    null().label("system"),
    null().label("code"),
    null().label("last_updated"),
).where(tuple_(_r.resource_type, _r.id).in_(bindparam("keys", expanding=True)))
_IDENTIFIED_PART = (
    select(
        _r.resource_type,
        _r.id,
        _r.deleted,
        _r.institution_code,
        _r.content,
        null().label("master_index_id"),
        _t.system,
        _t.code,
        _r.last_updated,
    )
    .select_from(
        fhir_resources.join(
            fhir_idx_token, (_t.resource_type == _r.resource_type) & (_t.resource_id == _r.id)
        )
    )
    .where(
        _t.param == "identifier",
        tuple_(_t.resource_type, _t.system, _t.code).in_(bindparam("identifiers", expanding=True)),
        _r.deleted.is_(False),
    )
)
_KEYED_AND_IDENTIFIED = union_all(_KEYED_PART, _IDENTIFIED_PART)
# The same on PostgreSQL, sent over psycopg (db/raw.py): the keys and identifiers as arrays,
# one text whatever their number. The query is the function ``hl7_lookup`` (migration
# 0010_hl7lookup, decision 0049): it runs under a generic plan made once per connection (all
# index look-ups, made only once ``fhir_resources`` is past the size where a plan made on it
# could take another index), where a statement of its own would be planned again for every
# message under the connections' ``force_custom_plan``.
_PG_KEYED_AND_IDENTIFIED = (
    "SELECT * FROM hl7_lookup(%s::varchar[], %s::varchar[], %s::varchar[], %s::varchar[],"
    " %s::varchar[])"
)


class _LookupRow(NamedTuple):
    resource_type: str
    id: str
    deleted: bool
    institution_code: str | None
    content: dict[str, Any] | None
    master_index_id: str | None
    system: str | None
    code: str | None
    last_updated: Any


_BY_IDENTIFIER = (
    select(_r.id, _r.deleted, _r.institution_code, _r.content)
    .select_from(
        fhir_resources.join(
            fhir_idx_token, (_t.resource_type == _r.resource_type) & (_t.resource_id == _r.id)
        )
    )
    .where(
        _t.resource_type == bindparam("rtype"),
        _t.param == "identifier",
        _t.system == bindparam("system"),
        _t.code == bindparam("value"),
        _r.deleted.is_(False),
    )
    .order_by(_r.last_updated, _r.id)
    .limit(bindparam("limit", type_=Integer))
)
# The same without a limit and with the time: merged with rows not stored yet (deferred).
_BY_IDENTIFIER_ALL = (
    select(_r.id, _r.institution_code, _r.content, _r.last_updated)
    .select_from(
        fhir_resources.join(
            fhir_idx_token, (_t.resource_type == _r.resource_type) & (_t.resource_id == _r.id)
        )
    )
    .where(
        _t.resource_type == bindparam("rtype"),
        _t.param == "identifier",
        _t.system == bindparam("system"),
        _t.code == bindparam("value"),
        _r.deleted.is_(False),
    )
)
_MASTER_INDEX_ID = (
    select(master_persons.c.master_index_id)
    .select_from(
        source_records.join(master_persons, master_persons.c.id == source_records.c.master_id)
    )
    .where(source_records.c.fhir_patient_id == bindparam("patient_id"))
    .limit(1)
)


class LookupRepository:
    """The handlers' reads by primary key: several resources in one query, and the master
    index id of a Patient in one join."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def current_many(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], CurrentRow]:
        """The current rows of ``(resource_type, id)`` keys, a Patient's with its master index
        id (:meth:`master_index_id`); absent keys are not in the result."""
        if not keys:
            return {}
        rows: Sequence[Any]
        if is_postgres(self.conn):
            rows = self._keyed_and_identified(keys, set())
        elif len(keys) == 1:
            [(rtype, rid)] = keys
            rows = self.conn.execute(_CURRENT_ONE, {"rtype": rtype, "rid": rid}).all()
        else:
            rows = self.conn.execute(_CURRENT_MANY, {"keys": sorted(keys)}).all()
        return {
            (r.resource_type, r.id): CurrentRow(
                bool(r.deleted),
                r.institution_code,
                r.content,
                r.master_index_id,
                master_known=r.resource_type == "Patient",
            )
            for r in rows
        }

    def current_and_identified(
        self, keys: set[tuple[str, str]], identifiers: set[tuple[str, str, str]], limit: int = 5
    ) -> tuple[
        dict[tuple[str, str], CurrentRow], dict[tuple[str, str, str], list[tuple[str, CurrentRow]]]
    ]:
        """:meth:`current_many` of ``keys`` and :meth:`by_identifier` of each
        ``(resource_type, system, value)`` of ``identifiers``, in one query; every identifier
        asked for is in the second result (an empty list: nothing found)."""
        if not identifiers:
            return self.current_many(keys), {}
        current: dict[tuple[str, str], CurrentRow] = {}
        hits: dict[tuple[str, str, str], list[tuple[Any, str, CurrentRow]]] = {
            key: [] for key in identifiers
        }
        deferred = deferred_on(self.conn)
        if deferred:  # the index rows written in this block are not stored yet: merged below
            with deferred.bypass():
                rows = self._keyed_and_identified(keys, identifiers)
            unsure, pending = deferred.identified(identifiers)
            rows = [r for r in rows if r.system is None or (r.resource_type, r.id) not in unsure]
            for wanted, found in pending.items():
                for (_, rid), snap in found:
                    if not snap.deleted:
                        row = CurrentRow(False, snap.institution_code, snap.content)
                        hits[wanted].append((snap.last_updated, rid, row))
        else:
            rows = self._keyed_and_identified(keys, identifiers)
        for r in rows:
            if r.system is None:
                current[(r.resource_type, r.id)] = CurrentRow(
                    bool(r.deleted),
                    r.institution_code,
                    r.content,
                    r.master_index_id,
                    master_known=r.resource_type == "Patient",
                )
            else:
                row = CurrentRow(bool(r.deleted), r.institution_code, r.content)
                hits[(r.resource_type, r.system, r.code)].append((r.last_updated, r.id, row))
        identified = {
            key: [(rid, row) for _, rid, row in sorted(found, key=lambda h: (h[0], h[1]))[:limit]]
            for key, found in hits.items()
        }
        return current, identified

    def _keyed_and_identified(
        self, keys: set[tuple[str, str]], identifiers: set[tuple[str, str, str]]
    ) -> Sequence[Any]:
        """The rows of ``_KEYED_AND_IDENTIFIED`` (on PostgreSQL through psycopg: it runs for
        nearly every message, and SQLAlchemy's work per execution was most of its cost)."""
        if not is_postgres(self.conn):
            params = {"keys": sorted(keys), "identifiers": sorted(identifiers)}
            return self.conn.execute(_KEYED_AND_IDENTIFIED, params).all()
        ordered, wanted = sorted(keys), sorted(identifiers)
        with sqlalchemy_errors("SELECT the message's look-ups"):
            cursor = dbapi(self.conn).cursor()
            cursor.execute(
                _PG_KEYED_AND_IDENTIFIED,
                (
                    [k[0] for k in ordered],
                    [k[1] for k in ordered],
                    [i[0] for i in wanted],
                    [i[1] for i in wanted],
                    [i[2] for i in wanted],
                ),
            )
            return [_LookupRow._make(row) for row in cursor.fetchall()]

    def by_identifier(
        self, resource_type: str, system: str, value: str, limit: int = 5
    ) -> list[tuple[str, CurrentRow]]:
        """Current rows of ``resource_type`` indexed with ``identifier=system|value`` (what a
        FHIR search ``?identifier=system|value`` finds), oldest first, in one query."""
        params = {"rtype": resource_type, "system": system, "value": value, "limit": limit}
        deferred = deferred_on(self.conn)
        if not deferred:
            rows = self.conn.execute(_BY_IDENTIFIER, params)
            return [
                (row.id, CurrentRow(bool(row.deleted), row.institution_code, row.content))
                for row in rows
            ]
        # The index rows written in this block are not stored yet: merged here.
        wanted = (resource_type, system, value)
        with deferred.bypass():
            stored = self.conn.execute(
                _BY_IDENTIFIER_ALL, {"rtype": resource_type, "system": system, "value": value}
            ).all()
        unsure, pending = deferred.identified({wanted})
        found = [
            (row.last_updated, row.id, CurrentRow(False, row.institution_code, row.content))
            for row in stored
            if (resource_type, row.id) not in unsure
        ]
        found += [
            (snap.last_updated, rid, CurrentRow(False, snap.institution_code, snap.content))
            for (_, rid), snap in pending.get(wanted, [])
            if not snap.deleted
        ]
        found.sort(key=lambda h: (h[0], h[1]))
        return [(rid, row) for _, rid, row in found[:limit]]

    def master_index_id(self, patient_id: str) -> str | None:
        """The master index id of the person a stored Patient was registered as (not
        following merges, like the registry's own source look-up)."""
        row = self.conn.execute(_MASTER_INDEX_ID, {"patient_id": patient_id}).first()
        return str(row.master_index_id) if row else None
