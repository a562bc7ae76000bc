"""SQL of cross-institution care: relationships, access exceptions, and the resident's record
keys with the institution that wrote each resource."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    String,
    and_,
    bindparam,
    column,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    tuple_,
    union_all,
    update,
)

from healthroam.db.raw import RawSelect, dbapi, is_postgres, sqlalchemy_errors
from healthroam.db.schema import fhir_resources
from healthroam.db.tables_care import access_exceptions, care_relationships
from healthroam.db.tables_records import fhir_idx_reference, fhir_idx_token
from healthroam.db.tables_registry import master_persons, source_records
from healthroam.errors import NotFound
from healthroam.exchange.care.model import (
    AccessException,
    CareRelationship,
    RelationshipReason,
    ReviewOutcome,
    ReviewStatus,
)
from healthroam.records.deferred import deferred_on
from healthroam.records.repository import Key, VisibleCondition
from healthroam.registry.model import check_master_index_id
from healthroam.registry.repository import KnownPerson, MasterRow, RegistryRepository, SourceRow

ACTIVE_ENCOUNTER = frozenset({"arrived", "in-progress"})
PRIVACY_SCOPE = "patient-privacy"


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class PersonRecord:
    """A master person (the survivor when the asked id was merged away) and the FHIR Patients
    that stand for them: every linked source Patient and the golden ``Patient/<mii>``."""

    master: MasterRow
    sources: list[SourceRow]
    patient_keys: list[Key]

    @property
    def master_index_id(self) -> str:
        return self.master.master_index_id


class RecordKey(NamedTuple):
    """A resource of the person's record and the institution that wrote it (a named tuple:
    a whole record's keys, ~1,000 of them, are built per ``$everything``)."""

    resource_type: str
    id: str
    institution_code: str | None


def _relationship(row: Any) -> CareRelationship:
    return CareRelationship(
        row.id,
        row.master_index_id,
        row.institution_code,
        aware(row.since),
        aware(row.until),
        RelationshipReason(row.reason),
        row.encounter_ref,
        row.card_id,
    )


def _exception(row: Any) -> AccessException:
    return AccessException(
        id=row.id,
        occurred_at=aware(row.occurred_at),
        institution_code=row.institution_code,
        client_id=row.client_id,
        end_user=row.end_user,
        master_index_id=row.master_index_id,
        access=row.access,
        reason=row.reason,
        had_relationship=row.had_relationship,
        consent_overridden=row.consent_overridden,
        status=ReviewStatus(row.status),
        review_outcome=ReviewOutcome(row.review_outcome) if row.review_outcome else None,
        review_note=row.review_note,
        reviewed_by=row.reviewed_by,
        reviewed_at=aware(row.reviewed_at) if row.reviewed_at else None,
    )


# Asked for every care decision (each order's duplicate-test alerts): built once.
_CURRENT_RELATIONSHIP = (
    select(care_relationships)
    .where(
        care_relationships.c.institution_code == bindparam("institution"),
        care_relationships.c.master_index_id == bindparam("master_index_id"),
        care_relationships.c.until > bindparam("now"),
        care_relationships.c.since <= bindparam("now"),
    )
    .order_by(care_relationships.c.until.desc())
    .limit(1)
)
_PG_CURRENT_RELATIONSHIP = RawSelect(_CURRENT_RELATIONSHIP)
# A new relationship's row (every column given; the id drawn from its sequence).
_PG_ADD_RELATIONSHIP = (
    "INSERT INTO care_relationships (master_index_id, institution_code, since, until, reason,"
    " encounter_ref, card_id, terminal_code, client_id) VALUES (%(master_index_id)s,"
    " %(institution_code)s, %(since)s, %(until)s, %(reason)s, %(encounter_ref)s, %(card_id)s,"
    " %(terminal_code)s, %(client_id)s) RETURNING id"
)


def _one_type(conn: Connection, keys: Sequence[Key]) -> dict[str, Any] | None:
    """On PostgreSQL, keys all of one resource type (a person's Patients) as the parameters
    of the ``= ANY`` statements below; None: the SQLAlchemy statement (``IN`` of pairs)."""
    if not keys or not is_postgres(conn):
        return None
    kind = keys[0][0]
    if any(k[0] != kind for k in keys):
        return None
    return {"target_type": kind, "target_ids": list(dict.fromkeys(k[1] for k in keys))}


# Each Patient drives its own look-up of the reference index by (target_type, target_id) (a
# LATERAL sub-query kept apart by OFFSET 0): with `target_id = ANY(...)` the planner, on tables
# without statistics, read the index by target_type alone and filtered every reference to any
# Patient (decision 0057).
_REFERRING = (
    " FROM unnest(%(target_ids)s::text[]) AS t(id)"
    " JOIN LATERAL (SELECT x.resource_type, x.resource_id FROM fhir_idx_reference x"
    " WHERE x.target_type = %(target_type)s AND x.target_id = t.id{only} OFFSET 0) ref ON true"
)
# The resources referring to a person's Patients, with their writer (the care gate's record).
_PG_RECORD_KEYS = RawSelect(
    "SELECT DISTINCT r.resource_type, r.id, r.institution_code"
    + _REFERRING.format(only="")
    + " JOIN fhir_resources r ON r.resource_type = ref.resource_type"
    " AND r.id = ref.resource_id WHERE r.deleted = false",
    ("resource_type", "id", "institution_code"),
)
# The Encounters an institution wrote about a person's Patients (their status read in Python).
_PG_ACTIVE_ENCOUNTERS = RawSelect(
    # Constant text (no input in it).
    "SELECT r.id, r.content FROM fhir_resources r WHERE r.resource_type = 'Encounter'"  # noqa: S608
    " AND r.id IN (SELECT ref.resource_id"
    + _REFERRING.format(only=" AND x.resource_type = 'Encounter'")
    + ") AND r.institution_code = %(institution)s AND r.deleted = false",
    ("id", "content"),
)


class CareRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # --- the person -----------------------------------------------------------------------

    def person(
        self,
        master_index_id: str,
        field_name: str = "masterIndexId",
        *,
        predecessors: bool = True,
        known: KnownPerson | None = None,
    ) -> PersonRecord:
        """``predecessors``: also the golden Patients of merged-away master persons (for reads
        of the record; a check-in needs only the sources). ``known``: the person's master and
        sources as already read in this transaction (result recognition's), used instead of
        reading them again when it is the person asked for."""
        registry = RegistryRepository(self.conn)
        mii = check_master_index_id(master_index_id, field_name)
        if known is not None and known.master.master_index_id == mii:
            current, sources = known.master, known.sources
        else:
            asked = registry.master_by_index_id(mii)
            if asked is None:
                raise NotFound("no person with this master index ID", expression=field_name)
            current = registry.merged_into_chain(asked)
            sources = registry.sources_of([current.id]) if current.status == "active" else []
        goldens = [current, *(registry.predecessors(current.id) if predecessors else [])]
        keys: list[Key] = [("Patient", s.fhir_patient_id) for s in sources if s.fhir_patient_id]
        keys += [("Patient", m.master_index_id) for m in goldens]
        return PersonRecord(current, sources, list(dict.fromkeys(keys)))

    def record_keys(self, person: PersonRecord) -> list[RecordKey]:
        """Every live resource that refers to the person's Patients, and the source Patients
        themselves, with the institution that wrote each."""
        patient_keys = person.patient_keys
        deferred = deferred_on(self.conn)
        one_type = _one_type(self.conn, patient_keys)
        if one_type is not None:  # every order with alerts asks: through psycopg (db/raw.py)
            stored = _PG_RECORD_KEYS.rows(self.conn, one_type)  # never flushes
        else:
            ref, res = fhir_idx_reference.c, fhir_resources.c
            query = (
                select(res.resource_type, res.id, res.institution_code)
                .select_from(
                    fhir_idx_reference.join(
                        fhir_resources,
                        (res.resource_type == ref.resource_type) & (res.id == ref.resource_id),
                    )
                )
                .where(
                    tuple_(ref.target_type, ref.target_id).in_(list(patient_keys)),
                    res.deleted == false(),
                )
                .distinct()
            )
            with deferred.bypass() if deferred else nullcontext():
                stored = list(self.conn.execute(query).all())
        if deferred:  # rows not stored yet (the HL7 gateway's group): merged, no flush
            unsure, pending = deferred.referring(patient_keys)
            found = [RecordKey(r[0], r[1], r[2]) for r in stored if (r[0], r[1]) not in unsure]
            found.extend(
                RecordKey(key[0], key[1], deferred.snapshots[key].institution_code)
                for key in pending
            )
        else:
            found = [RecordKey(r[0], r[1], r[2]) for r in stored]
        found.extend(self._source_keys(person))
        return found

    @staticmethod
    def _source_keys(person: PersonRecord) -> list[RecordKey]:
        # A source Patient is written by its source institution (the registry keeps which).
        return [
            RecordKey("Patient", s.fhir_patient_id, s.institution)
            for s in person.sources
            if s.fhir_patient_id
        ]

    def wrote_about(self, person: PersonRecord, institution: str) -> tuple[bool, bool]:
        """Whether ``institution`` wrote data about the person, and whether anybody else did
        (two indexed EXISTS look-ups instead of listing the whole record)."""
        own = any(s.institution == institution for s in person.sources if s.fhir_patient_id)
        other = any(s.institution != institution for s in person.sources if s.fhir_patient_id)
        ref, res = fhir_idx_reference.c, fhir_resources.c
        about = (
            select(literal(1))
            .select_from(
                fhir_idx_reference.join(
                    fhir_resources,
                    (res.resource_type == ref.resource_type) & (res.id == ref.resource_id),
                )
            )
            .where(
                tuple_(ref.target_type, ref.target_id).in_(list(person.patient_keys)),
                res.deleted == false(),
            )
            .limit(1)
        )
        if not own:
            own = (
                self.conn.execute(about.where(res.institution_code == institution)).first()
                is not None
            )
        if not other:
            other = (
                self.conn.execute(
                    about.where(
                        or_(res.institution_code != institution, res.institution_code.is_(None))
                    )
                ).first()
                is not None
            )
        return own, other

    def consent_keys(self, person: PersonRecord) -> list[RecordKey]:
        """The live Consent resources about the person."""
        ref, res = fhir_idx_reference.c, fhir_resources.c
        rows = self.conn.execute(
            select(res.id, res.institution_code)
            .select_from(
                fhir_idx_reference.join(
                    fhir_resources,
                    (res.resource_type == ref.resource_type) & (res.id == ref.resource_id),
                )
            )
            .where(
                ref.resource_type == "Consent",
                tuple_(ref.target_type, ref.target_id).in_(list(person.patient_keys)),
                res.deleted == false(),
            )
            .distinct()
        )
        return [RecordKey("Consent", r[0], r[1]) for r in rows]

    def compartment_patients(self, key: Key) -> list[str]:
        """The Patients (ids) whose compartment a stored resource is in: itself for a Patient,
        else every Patient it refers to (the reference index, one indexed look-up)."""
        ref = fhir_idx_reference.c
        found = [key[1]] if key[0] == "Patient" else []
        rows = self.conn.execute(
            select(ref.target_id)
            .where(
                ref.resource_type == key[0],
                ref.resource_id == key[1],
                ref.target_type == "Patient",
                ref.target_id.is_not(None),
            )
            .distinct()
        )
        found.extend(r[0] for r in rows)
        return list(dict.fromkeys(found))

    def shown(self, key: Key, institution: str, now: Callable[[], datetime]) -> bool:
        """Whether the resource passes :func:`visible_condition` for persons ``institution``
        has a care relationship with (one query: the fast path of a read)."""
        res = fhir_resources.c
        visible = visible_condition(institution, None, now, postgres=is_postgres(self.conn))
        query = select(literal(1)).where(
            res.resource_type == key[0],
            res.id == key[1],
            visible(res.resource_type, res.id, res.institution_code, res.deleted),
        )
        return self.conn.execute(query).first() is not None

    def related(self, patient_id: str, institution: str, now: Callable[[], datetime]) -> bool:
        """Whether the Patient is one of a person ``institution`` has a care relationship with
        and who has no privacy Consent on record (one query: the fast path of a search)."""
        ids = visible_patients(institution, now).subquery()
        query = select(literal(1)).select_from(ids).where(ids.c.patient_id == patient_id)
        return self.conn.execute(query.limit(1)).first() is not None

    def masters_of(self, patient_ids: Sequence[str]) -> dict[str, str]:
        """Patient id -> the master index id of the person it stands for: a source Patient's
        master, or the golden Patient's own (merged-away ones too; ``person`` follows merges).
        Patients that stand for nobody known are left out."""
        if not patient_ids:
            return {}
        mp, sr = master_persons.c, source_records.c
        found: dict[str, str] = {}
        rows = self.conn.execute(
            select(sr.fhir_patient_id, mp.master_index_id)
            .select_from(source_records.join(master_persons, mp.id == sr.master_id))
            .where(sr.fhir_patient_id.in_(list(patient_ids)))
        )
        found.update((r[0], r[1]) for r in rows)
        rest = [p for p in patient_ids if p not in found]
        if rest:
            golden = self.conn.execute(
                select(mp.master_index_id).where(mp.master_index_id.in_(rest))
            )
            found.update((r[0], r[0]) for r in golden)
        return found

    def active_encounters(
        self, institution: str, patient_keys: Sequence[Key]
    ) -> list[tuple[str, dict[str, Any]]]:
        """Encounters the institution wrote about these Patients that are arrived/in progress."""
        if not patient_keys:
            return []
        deferred = deferred_on(self.conn)
        one_type = _one_type(self.conn, patient_keys)
        if one_type is not None:  # asked for every order with alerts: through psycopg
            params = {**one_type, "institution": institution}
            stored = _PG_ACTIVE_ENCOUNTERS.rows(self.conn, params)  # never flushes
        else:
            ref, res = fhir_idx_reference.c, fhir_resources.c
            ids = (
                select(ref.resource_id)
                .where(
                    ref.resource_type == "Encounter",
                    tuple_(ref.target_type, ref.target_id).in_(list(patient_keys)),
                )
                .distinct()
            )
            query = select(res.id, res.content).where(
                res.resource_type == "Encounter",
                res.id.in_(ids),
                res.institution_code == institution,
                res.deleted == false(),
            )
            with deferred.bypass() if deferred else nullcontext():
                stored = list(self.conn.execute(query).all())
        if deferred:  # rows not stored yet (the HL7 gateway's group): merged, no flush
            unsure, pending = deferred.referring(patient_keys)
            rows = [(r.id, r.content) for r in stored if ("Encounter", r.id) not in unsure]
            for key in pending:
                snap = deferred.snapshots[key]
                if key[0] == "Encounter" and snap.institution_code == institution:
                    rows.append((key[1], snap.content))
        else:
            rows = [(r.id, r.content) for r in stored]
        return [
            (rid, content)
            for rid, content in rows
            if (content or {}).get("status") in ACTIVE_ENCOUNTER
        ]

    # --- relationships --------------------------------------------------------------------

    def current_relationship(
        self, institution: str, master_index_id: str, now: datetime
    ) -> CareRelationship | None:
        params = {"institution": institution, "master_index_id": master_index_id, "now": now}
        if is_postgres(self.conn):  # every order with alerts asks: through psycopg (db/raw.py)
            row = _PG_CURRENT_RELATIONSHIP.first(self.conn, params)
        else:
            row = self.conn.execute(_CURRENT_RELATIONSHIP, params).first()
        return _relationship(row) if row is not None else None

    def add_relationship(
        self,
        *,
        master_index_id: str,
        institution_code: str,
        since: datetime,
        until: datetime,
        reason: RelationshipReason,
        encounter_ref: str | None = None,
        card_id: str | None = None,
        terminal_code: str | None = None,
        client_id: str | None = None,
    ) -> CareRelationship:
        values = {
            "master_index_id": master_index_id,
            "institution_code": institution_code,
            "since": since,
            "until": until,
            "reason": reason.value,
            "encounter_ref": encounter_ref,
            "card_id": card_id,
            "terminal_code": terminal_code,
            "client_id": client_id,
        }
        if is_postgres(self.conn):  # an order's first care decision at a site: psycopg
            with sqlalchemy_errors("INSERT INTO care_relationships"):
                found = dbapi(self.conn).execute(_PG_ADD_RELATIONSHIP, values).fetchone()
            assert found is not None
            new_id = int(found[0])
        else:
            new_id = self.conn.execute(
                insert(care_relationships).values(values).returning(care_relationships.c.id)
            ).scalar_one()
        return CareRelationship(
            new_id, master_index_id, institution_code, since, until, reason, encounter_ref, card_id
        )

    def relationships_of(self, master_index_id: str) -> list[CareRelationship]:
        c = care_relationships.c
        rows = self.conn.execute(
            select(care_relationships)
            .where(c.master_index_id == master_index_id)
            .order_by(c.since.desc(), c.id.desc())
        )
        return [_relationship(r) for r in rows]

    # --- access exceptions ----------------------------------------------------------------

    def add_exception(self, values: dict[str, Any]) -> int:
        new_id: int = self.conn.execute(
            insert(access_exceptions)
            .values({**values, "status": ReviewStatus.OPEN.value})
            .returning(access_exceptions.c.id)
        ).scalar_one()
        return new_id

    def exceptions(
        self, status: ReviewStatus | None, institution: str | None, limit: int, after: int | None
    ) -> list[AccessException]:
        c = access_exceptions.c
        query = select(access_exceptions).order_by(c.id).limit(limit)
        if status is not None:
            query = query.where(c.status == status.value)
        if institution is not None:
            query = query.where(c.institution_code == institution)
        if after is not None:
            query = query.where(c.id > after)
        return [_exception(r) for r in self.conn.execute(query)]

    def exception(self, exception_id: int) -> AccessException | None:
        row = self.conn.execute(
            select(access_exceptions).where(access_exceptions.c.id == exception_id)
        ).first()
        return _exception(row) if row is not None else None

    def close_exception(
        self,
        exception_id: int,
        outcome: ReviewOutcome,
        note: str | None,
        reviewer: str,
        now: datetime,
    ) -> bool:
        c = access_exceptions.c
        result = self.conn.execute(
            update(access_exceptions)
            .where(c.id == exception_id, c.status == ReviewStatus.OPEN.value)
            .values(
                status=ReviewStatus.CLOSED.value,
                review_outcome=outcome.value,
                review_note=note,
                reviewed_by=reviewer,
                reviewed_at=now,
            )
        )
        return result.rowcount == 1


# --- what a care provider may see: one SQL condition for searches and history ------------------


def related_patient_ids(institution: str, now: Callable[[], datetime]) -> Select[Any]:
    """The Patient ids (source Patients, the golden ``Patient/<mii>`` and merged-away goldens) of
    every person ``institution`` has a recorded care relationship with now (a card check-in, or
    an active Encounter a read already found), leaving out every such person with a privacy
    Consent on record: whether that refuses this institution is decided per person (a read, or
    a search restricted to the patient), never in bulk. Built from the relationships outwards,
    so its cost follows the institution's current relationships, not the province."""
    cr, mp, sr = care_relationships.c, master_persons.c, source_records.c
    # The clock is read when the statement runs, so the construct is built once and reused.
    moment = bindparam("care_now", callable_=now, type_=care_relationships.c.since.type)
    related = (
        select(mp.id)
        .where(
            mp.master_index_id.in_(
                select(cr.master_index_id).where(
                    cr.institution_code == institution,
                    cr.since <= moment,
                    cr.until > moment,
                )
            )
        )
        .cte("related_persons")
    )
    patients = union_all(
        select(sr.master_id.label("person"), sr.fhir_patient_id.label("patient_id")).where(
            sr.master_id.in_(select(related.c.id)), sr.fhir_patient_id.is_not(None)
        ),
        select(mp.id, mp.master_index_id).where(mp.id.in_(select(related.c.id))),
        select(mp.merged_into, mp.master_index_id).where(mp.merged_into.in_(select(related.c.id))),
    ).cte("related_patients")
    con, con_ref, con_scope = (
        fhir_resources.alias("con"),
        fhir_idx_reference.alias("con_ref"),
        fhir_idx_token.alias("con_scope"),
    )
    consenting = (
        select(patients.c.person)
        .select_from(
            patients.join(
                con_ref,
                and_(
                    con_ref.c.target_type == "Patient",
                    con_ref.c.target_id == patients.c.patient_id,
                    con_ref.c.resource_type == "Consent",
                ),
            )
            .join(
                con,
                and_(con.c.resource_type == "Consent", con.c.id == con_ref.c.resource_id),
            )
            .join(
                con_scope,
                and_(
                    con_scope.c.resource_type == "Consent",
                    con_scope.c.resource_id == con.c.id,
                    con_scope.c.param == "scope",
                    con_scope.c.code == PRIVACY_SCOPE,
                ),
            )
        )
        .where(con.c.deleted == false())
        .cte("consenting_persons")
    )
    shown = patients.alias("shown")
    return select(shown.c.patient_id).where(
        ~select(literal(1)).where(consenting.c.person == shown.c.person).exists()
    )


_VISIBLE: dict[tuple[str, Callable[[], datetime], bool], Any] = {}


def visible_patients(institution: str, now: Callable[[], datetime], postgres: bool = False) -> Any:
    """:func:`related_patient_ids` as a CTE, built once per institution (building the
    construct costs more than running it). On PostgreSQL the same rows come from the
    function ``care_visible_patients`` (migration 0014_carevisible, decision 0066), whose
    plan is made once per connection: embedded as CTEs, this part was planned again with
    every search, at a cost above that of executing the whole search."""
    key = (institution, now, postgres)
    found = _VISIBLE.get(key)
    if found is None:
        if postgres:
            moment = bindparam("care_now", callable_=now, type_=care_relationships.c.since.type)
            found = _VISIBLE[key] = func.care_visible_patients(institution, moment).table_valued(
                column("patient_id", String), name="visible_patients"
            )
        else:
            found = _VISIBLE[key] = related_patient_ids(institution, now).cte("visible_patients")
    return found.select()


class _Visible:
    """:func:`visible_condition`'s condition. ``shape_key``: for the view across residents
    (no per-person list), what the condition is made from besides the row's columns - the
    institution and the clock, which is read when a statement runs - so that a search
    shape's statement made with it serves every request of that institution's (decision
    0065); None for a per-person list, which is bound as literals."""

    __slots__ = ("institution", "shape_key", "visible_ids")

    def __init__(
        self,
        institution: str,
        visible_ids: Sequence[str] | Any,
        shape_key: tuple[str, str, Callable[[], datetime]] | None,
    ) -> None:
        self.institution = institution
        self.visible_ids = visible_ids
        self.shape_key = shape_key

    def __call__(self, rtype: Any, rid: Any, writer: Any, deleted: Any) -> ColumnElement[bool]:
        ref = fhir_idx_reference.alias("compartment")
        hidden_patient = (
            select(literal(1))
            .where(
                ref.c.resource_type == rtype,
                ref.c.resource_id == rid,
                ref.c.target_type == "Patient",
                ref.c.target_id.is_not(None),
                ref.c.target_id.not_in(self.visible_ids),
            )
            .exists()
        )
        return or_(
            writer == self.institution,
            and_(
                deleted == false(),
                or_(rtype != "Patient", rid.in_(self.visible_ids)),
                ~hidden_patient,
            ),
        )


def visible_condition(
    institution: str,
    patient_ids: Sequence[str] | None,
    now: Callable[[], datetime],
    *,
    postgres: bool = False,
) -> VisibleCondition:
    """A care provider's view of the store as one SQL condition on a resource row: what it
    wrote itself; anything outside every patient compartment (no reference to a Patient:
    Organization, Practitioner, ValueSet ...); and resources whose every Patient is one of
    ``patient_ids`` (a per-person decision), or with None, a Patient of a person it has a care
    relationship with now (:func:`related_patient_ids`). A deleted resource of another
    institution is never shown (its compartment is no longer indexed). ``postgres``: the
    connection's (:func:`visible_patients`)."""
    if patient_ids is not None:
        return _Visible(institution, list(patient_ids), None)
    return _Visible(
        institution, visible_patients(institution, now, postgres), ("care", institution, now)
    )
