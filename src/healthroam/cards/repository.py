"""SQL storage of cards, their history, card uses, issuance runs and trust lists."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    String,
    Table,
    any_,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from healthroam.cards.model import Card, CardEvent, CardKind, CardStatus
from healthroam.db.tables_cards import (
    card_events,
    card_issue_runs,
    card_replays,
    card_trust_lists,
    card_uses,
    cards,
)
from healthroam.db.tables_registry import master_persons

_REVOKED = [s.value for s in CardStatus if s.revoked]
# The advisory lock key of trust-list signing ("hroamTRL" as a big-endian 64-bit integer).
TRUST_LIST_LOCK = int.from_bytes(b"hroamTRL", "big", signed=True)
# PostgreSQL: one statement text for any number of keys (an array parameter instead of an IN
# list), so SQLAlchemy compiles it and psycopg converts it once, not once per batch size.
_CARDS_BY_EHC_IDS = select(cards).where(
    cards.c.ehc_id == any_(bindparam("ehc_ids", type_=postgresql.ARRAY(String)))
)
_CLAIM_CODES_PG = (
    "INSERT INTO card_replays (code_hash, expires_at) "
    "SELECT * FROM unnest(%(hashes)s::bytea[], %(expires)s::bigint[]) "
    "ON CONFLICT (code_hash) DO NOTHING RETURNING code_hash"
)


def _latest(rows: Any, key: str) -> dict[Any, Card]:
    """Per key, the live card if there is one, else the most recently updated cancelled one
    (the order of :meth:`CardRepository.latest_by_ehc_id`)."""
    found: dict[Any, Card] = {}
    for row in rows:
        card = card_from_row(row)
        k = getattr(row, key)
        k = bytes(k) if isinstance(k, memoryview) else k
        held = found.get(k)
        if held is None or _rank(card) < _rank(held):
            found[k] = card
    return found


def _rank(card: Card) -> tuple[bool, float]:
    return card.status is CardStatus.CANCELLED, -card.updated_at.timestamp()


def card_from_row(row: Any) -> Card:
    return Card(
        id=row.id,
        master_person_id=row.master_person_id,
        master_index_id=row.master_index_id,
        kind=CardKind(row.kind),
        card_no=row.card_no,
        ehc_id=row.ehc_id,
        id_type=row.id_type,
        status=CardStatus(row.status),
        status_version=row.status_version,
        region=row.region,
        issuer=row.issuer,
        valid_from=row.valid_from,
        valid_until=row.valid_until,
        issuing_key_id=row.issuing_key_id,
        ehc_root_key_id=row.ehc_root_key_id,
        credential=row.credential,
        static_code=row.static_code,
        replaces=row.replaces,
        replaced_by=row.replaced_by,
        batch_id=row.batch_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        credential_version=row.credential_version,
    )


@dataclass(frozen=True, slots=True)
class PersonRow:
    id: int
    master_index_id: str
    status: str
    golden: Any


@dataclass(frozen=True, slots=True)
class IssueRun:
    run_id: str
    scope: str
    last_master_id: int
    issued: int
    skipped: int
    finished: bool


class CardRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # --- master persons (read only) ---------------------------------------------------------

    def person(self, master_index_id: str) -> PersonRow | None:
        row = self.conn.execute(
            select(
                master_persons.c.id,
                master_persons.c.master_index_id,
                master_persons.c.status,
                master_persons.c.golden,
            ).where(master_persons.c.master_index_id == master_index_id)
        ).first()
        return PersonRow(row.id, row.master_index_id, row.status, row.golden) if row else None

    def golden(self, master_person_id: int) -> Any:
        return self.conn.execute(
            select(master_persons.c.golden).where(master_persons.c.id == master_person_id)
        ).scalar()

    def persons_without_card(self, after_id: int, limit: int) -> tuple[list[PersonRow], int | None]:
        """Of the next ``limit`` master persons after ``after_id`` (id order), the active ones
        holding no electronic or temporary card that is not cancelled; and the last id looked
        at (None: no person after ``after_id``).

        The persons are taken by primary key first and filtered after, so every batch reads
        ``limit`` index entries whatever the planner knows: one query that asked for the first
        ``limit`` persons *without* a card let PostgreSQL, with stale statistics half-way
        through a million-card campaign, sort every remaining person each batch (1 s)."""
        m = master_persons.alias("m")
        window = (
            select(m.c.id, m.c.master_index_id, m.c.status, m.c.golden)
            .where(m.c.id > after_id)
            .order_by(m.c.id)
            .limit(limit)
            .subquery("window")
        )
        rows = self.conn.execute(select(window).order_by(window.c.id)).all()
        if not rows:
            return [], None
        ids = [r.id for r in rows if r.status == "active"]
        held: set[int] = set()
        if ids:
            held = set(
                self.conn.execute(
                    select(cards.c.master_person_id).where(
                        cards.c.master_person_id.in_(ids),
                        cards.c.status != CardStatus.CANCELLED.value,
                        cards.c.kind != CardKind.PHYSICAL.value,
                    )
                ).scalars()
            )
        people = [
            PersonRow(r.id, r.master_index_id, r.status, r.golden)
            for r in rows
            if r.status == "active" and r.id not in held
        ]
        return people, rows[-1].id

    # --- cards ------------------------------------------------------------------------------

    def add_cards(self, rows: Sequence[dict[str, Any]], *, bulk: bool = False) -> None:
        """Insert card rows (all with the same keys). ``bulk``: by COPY on PostgreSQL, whose
        errors are the driver's, not SQLAlchemy's ``IntegrityError`` (bulk issuance, whose
        rows violate no constraint)."""
        if bulk:
            self._insert(cards, rows)
        elif rows:
            self.conn.execute(insert(cards), list(rows))

    def add_events(self, rows: Sequence[dict[str, Any]], *, bulk: bool = False) -> None:
        """Insert card event rows (all with the same keys); ``bulk`` as in :meth:`add_cards`."""
        if bulk:
            self._insert(card_events, rows)
        elif rows:
            self.conn.execute(insert(card_events), list(rows))

    def _insert(self, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        """Insert many rows that all have the same keys: PostgreSQL's COPY (in this
        transaction; a fraction of the client CPU of an executemany INSERT), else
        executemany."""
        if not rows:
            return
        if self.conn.dialect.name != "postgresql":
            self.conn.execute(insert(table), list(rows))
            return
        columns = [table.c[name].name for name in rows[0]]  # KeyError: not a column
        statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
        driver = self.conn.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row([row[name] for name in columns])

    def get(self, card_id: str, *, lock: bool = False) -> Card | None:
        query = select(cards).where(cards.c.id == card_id)
        if lock and self.conn.dialect.name == "postgresql":
            query = query.with_for_update()
        row = self.conn.execute(query).first()
        return card_from_row(row) if row else None

    def live_by_ehc_id(self, ehc_id: str) -> Card | None:
        row = self.conn.execute(
            select(cards).where(
                cards.c.ehc_id == ehc_id, cards.c.status != CardStatus.CANCELLED.value
            )
        ).first()
        return card_from_row(row) if row else None

    def latest_by_ehc_id(self, ehc_id: str) -> Card | None:
        """The live card of an EHC ID, else its most recent cancelled one."""
        row = self.conn.execute(
            select(cards)
            .where(cards.c.ehc_id == ehc_id)
            .order_by((cards.c.status == CardStatus.CANCELLED.value), cards.c.updated_at.desc())
            .limit(1)
        ).first()
        return card_from_row(row) if row else None

    def latest_by_card_ref(self, card_ref: bytes) -> Card | None:
        row = self.conn.execute(
            select(cards)
            .where(cards.c.card_ref == card_ref)
            .order_by((cards.c.status == CardStatus.CANCELLED.value), cards.c.updated_at.desc())
            .limit(1)
        ).first()
        return card_from_row(row) if row else None

    def latest_by_ehc_ids(self, ehc_ids: Sequence[str]) -> dict[str, Card]:
        """:meth:`latest_by_ehc_id` for many EHC IDs in one query."""
        if not ehc_ids:
            return {}
        if self.conn.dialect.name == "postgresql":
            rows = self.conn.execute(_CARDS_BY_EHC_IDS, {"ehc_ids": list(ehc_ids)})
        else:
            rows = self.conn.execute(select(cards).where(cards.c.ehc_id.in_(ehc_ids)))
        return _latest(rows, "ehc_id")

    def latest_by_card_refs(self, refs: Sequence[bytes]) -> dict[bytes, Card]:
        """:meth:`latest_by_card_ref` for many card references in one query."""
        if not refs:
            return {}
        return _latest(
            self.conn.execute(select(cards).where(cards.c.card_ref.in_(refs))), "card_ref"
        )

    def goldens(self, master_person_ids: Sequence[int]) -> dict[int, Any]:
        if not master_person_ids:
            return {}
        rows = self.conn.execute(
            select(master_persons.c.id, master_persons.c.golden).where(
                master_persons.c.id.in_(master_person_ids)
            )
        )
        return {int(r.id): r.golden for r in rows}

    def by_card_no(self, card_no: str) -> Card | None:
        row = self.conn.execute(select(cards).where(cards.c.card_no == card_no)).first()
        return card_from_row(row) if row else None

    def for_master(self, master_index_id: str) -> list[Card]:
        rows = self.conn.execute(
            select(cards)
            .where(cards.c.master_index_id == master_index_id)
            .order_by(cards.c.created_at, cards.c.id)
        )
        return [card_from_row(r) for r in rows]

    def live_kinds(self, master_person_id: int) -> set[CardKind]:
        rows = self.conn.execute(
            select(cards.c.kind).where(
                cards.c.master_person_id == master_person_id,
                cards.c.status != CardStatus.CANCELLED.value,
            )
        )
        return {CardKind(r.kind) for r in rows}

    def update(self, card_id: str, expected_version: int, **values: Any) -> bool:
        """Change a card if its status version is still ``expected_version``."""
        result = self.conn.execute(
            update(cards)
            .where(cards.c.id == card_id, cards.c.status_version == expected_version)
            .values(**values)
        )
        return result.rowcount == 1

    def events(self, card_id: str) -> list[CardEvent]:
        rows = self.conn.execute(
            select(card_events).where(card_events.c.card_id == card_id).order_by(card_events.c.seq)
        )
        return [
            CardEvent(
                r.seq,
                r.card_id,
                r.occurred_at,
                r.action,
                r.from_status,
                r.to_status,
                r.status_version,
                r.client_id,
                r.institution_code,
                r.end_user,
                r.reason,
            )
            for r in rows
        ]

    def revoked(self, now: datetime) -> list[tuple[bytes, int]]:
        """(card reference, status version) of every lost, frozen or cancelled card with an
        EHC ID that has not expired."""
        rows = self.conn.execute(
            select(cards.c.card_ref, cards.c.status_version)
            .where(
                cards.c.status.in_(_REVOKED),
                cards.c.card_ref.is_not(None),
                cards.c.valid_until > now,
            )
            .order_by(cards.c.card_ref)
        )
        return [(bytes(r.card_ref), int(r.status_version)) for r in rows]

    def batch(self, batch_id: str) -> Iterator[tuple[Card, Any]]:
        """Cards of an issuance batch with their holders' golden records, in id order."""
        query = (
            select(cards, master_persons.c.golden)
            .join(master_persons, master_persons.c.id == cards.c.master_person_id)
            .where(cards.c.batch_id == batch_id)
            .order_by(cards.c.master_person_id)
        )
        for row in self.conn.execution_options(yield_per=5000).execute(query):
            yield card_from_row(row), row.golden

    def count_batch(self, batch_id: str) -> int:
        return int(
            self.conn.execute(
                select(func.count()).select_from(cards).where(cards.c.batch_id == batch_id)
            ).scalar_one()
        )

    # --- uses ---------------------------------------------------------------------------------

    def add_uses(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert card-use rows (all with the same keys)."""
        self._insert(card_uses, rows)

    def claim_codes(self, codes: Sequence[tuple[bytes, int]]) -> set[bytes]:
        """Record (code hash, expires at) pairs as used; return the hashes that were not
        recorded before (the others are replays). Concurrent transactions inserting the same
        hash wait on the primary key, so exactly one of them claims it."""
        if not codes:
            return set()
        if self.conn.dialect.name == "postgresql":
            claimed = self.conn.exec_driver_sql(
                _CLAIM_CODES_PG,
                {"hashes": [h for h, _ in codes], "expires": [e for _, e in codes]},
            )
            return {bytes(r[0]) for r in claimed}
        dialect = postgresql if self.conn.dialect.name == "postgresql" else sqlite
        statement = (
            dialect.insert(card_replays)
            .values([{"code_hash": h, "expires_at": e} for h, e in codes])
            .on_conflict_do_nothing(index_elements=[card_replays.c.code_hash])
            .returning(card_replays.c.code_hash)
        )
        return {bytes(r[0]) for r in self.conn.execute(statement)}

    def forget_codes(self, expired_before: int) -> int:
        """Delete used codes that expired before ``expired_before`` (epoch seconds)."""
        result = self.conn.execute(
            delete(card_replays).where(card_replays.c.expires_at < expired_before)
        )
        return int(result.rowcount or 0)

    def usage(self, day: str, institution: str | None) -> list[tuple[str, str, bool, int]]:
        """(institution, step, accepted, count) for one day."""
        query = (
            select(
                card_uses.c.institution_code,
                card_uses.c.step_code,
                card_uses.c.accepted,
                func.count(),
            )
            .where(card_uses.c.day == day)
            .group_by(card_uses.c.institution_code, card_uses.c.step_code, card_uses.c.accepted)
            .order_by(card_uses.c.institution_code, card_uses.c.step_code, card_uses.c.accepted)
        )
        if institution is not None:
            query = query.where(card_uses.c.institution_code == institution)
        return [(r[0], r[1], bool(r[2]), int(r[3])) for r in self.conn.execute(query)]

    # --- bulk issuance runs -------------------------------------------------------------------

    def run(self, run_id: str) -> IssueRun | None:
        row = self.conn.execute(
            select(card_issue_runs).where(card_issue_runs.c.run_id == run_id)
        ).first()
        if row is None:
            return None
        return IssueRun(
            row.run_id, row.scope, row.last_master_id, row.issued, row.skipped, row.finished
        )

    def start_run(self, run_id: str, scope: str, now: datetime) -> None:
        self.conn.execute(
            insert(card_issue_runs).values(
                run_id=run_id,
                scope=scope,
                last_master_id=0,
                issued=0,
                skipped=0,
                finished=False,
                summary={},
                started_at=now,
                updated_at=now,
            )
        )

    def advance_run(
        self,
        run_id: str,
        last_master_id: int,
        issued: int,
        skipped: int,
        now: datetime,
        *,
        finished: bool = False,
        summary: dict[str, Any] | None = None,
    ) -> None:
        values: dict[str, Any] = {
            "last_master_id": last_master_id,
            "issued": card_issue_runs.c.issued + issued,
            "skipped": card_issue_runs.c.skipped + skipped,
            "finished": finished,
            "updated_at": now,
        }
        if summary is not None:
            values["summary"] = summary
        self.conn.execute(
            update(card_issue_runs).where(card_issue_runs.c.run_id == run_id).values(**values)
        )

    def unfinished_run(self, scope: str) -> IssueRun | None:
        row = self.conn.execute(
            select(card_issue_runs.c.run_id)
            .where(card_issue_runs.c.scope == scope, card_issue_runs.c.finished.is_(False))
            .order_by(card_issue_runs.c.started_at.desc())
            .limit(1)
        ).first()
        return self.run(row.run_id) if row else None

    # --- trust lists --------------------------------------------------------------------------

    def lock_trust_lists(self) -> None:
        """Make this transaction the only one signing a trust list until it ends: two server
        processes re-signing at once would both take the next sequence number (decision
        0048). PostgreSQL: a transaction-level advisory lock; SQLite: the writer's lock
        (``BEGIN IMMEDIATE``) already serialises them."""
        if self.conn.dialect.name == "postgresql":
            self.conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": TRUST_LIST_LOCK})

    def latest_trust_list(self) -> tuple[int, int, bytes] | None:
        row = self.conn.execute(
            select(card_trust_lists).order_by(card_trust_lists.c.sequence.desc()).limit(1)
        ).first()
        return (int(row.sequence), int(row.issued_at), bytes(row.signed)) if row else None

    def add_trust_list(self, sequence: int, issued_at: int, signed: bytes, key_id: str) -> None:
        self.conn.execute(
            insert(card_trust_lists).values(
                sequence=sequence, issued_at=issued_at, signed=signed, key_id=key_id
            )
        )
