"""SQL storage of the audit trail: append under the head lock, stream for verification."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from healthroam.db.raw import dbapi, insert_many, sqlalchemy_errors
from healthroam.db.schema import audit_events, audit_head, audit_inbox
from healthroam.security.audit import (
    ACTION_CODES,
    FIELD_NAMES,
    GENESIS_HASH,
    OUTCOME_CODES,
    Action,
    AuditRecord,
    ChainProblem,
    Outcome,
    VerifyReport,
    canonical_row_bytes,
    chain_hash,
    record_dict,
    row_hash,
)

_HEAD_ID = 1
COPY_ROWS = 16  # from this many rows a seal writes them by COPY on PostgreSQL


def _record(row: Any) -> AuditRecord:
    return AuditRecord(
        recorded_at=row.recorded_at,
        action=Action(row.action),
        event_type=row.event_type,
        subtype=row.subtype,
        outcome=Outcome(row.outcome),
        purpose_of_use=row.purpose_of_use,
        client_id=row.client_id,
        institution_code=row.institution_code,
        end_user=row.end_user,
        resource_type=row.resource_type,
        resource_id=row.resource_id,
        patient_ref=row.patient_ref,
        query=row.query,
        source_address=row.source_address,
        detail=row.detail,
    )


def _record_of(row: Sequence[Any]) -> AuditRecord:
    """A record from a :data:`_PG_INBOX` row (id, then the fields in the record's order)."""
    values = dict(zip(FIELD_NAMES, row[1:], strict=True))
    values["action"] = Action(values["action"])
    values["outcome"] = Outcome(values["outcome"])
    return AuditRecord(**values)


# The sealer's statements on PostgreSQL (AuditRepository._seal_postgres), over psycopg.
_INBOX_COLUMNS = ", ".join(audit_inbox.c[n].name for n in FIELD_NAMES)  # our own names
_PG_INBOX = f"SELECT id, {_INBOX_COLUMNS} FROM audit_inbox ORDER BY id LIMIT %s"  # noqa: S608
_PG_INBOX_DELETE = "DELETE FROM audit_inbox WHERE id = ANY(%s)"
_PG_COPY_EVENTS = (
    "COPY audit_events (seq, "
    + ", ".join(f'"{audit_events.c[n].name}"' for n in FIELD_NAMES)
    + ", prev_hash, hash) FROM STDIN"
)


class AuditRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def _lock_head(self) -> tuple[int, bytes]:
        query = select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == _HEAD_ID)
        if self.conn.dialect.name == "postgresql":
            query = query.with_for_update()
        row = self.conn.execute(query).first()
        if row is None:
            # First entry ever. Concurrent first writers collide on the primary key and one
            # transaction fails rather than forking the chain.
            self.conn.execute(insert(audit_head).values(id=_HEAD_ID, seq=0, hash=GENESIS_HASH))
            return 0, GENESIS_HASH
        return int(row.seq), bytes(row.hash)

    def enqueue(self, records: Sequence[AuditRecord]) -> None:
        """Write records to the inbox inside the caller's transaction (no lock taken)."""
        if records:  # on PostgreSQL in one statement (a group's entries: one, not one per row)
            insert_many(
                self.conn,
                audit_inbox,
                [
                    {**record_dict(r), "action": str(r.action), "outcome": str(r.outcome)}
                    for r in records
                ],
                single=True,
            )

    def seal(self, limit: int = 10_000) -> int:
        """Move up to ``limit`` inbox entries, oldest first, into the chain. Holding the head
        lock makes this the only sealer; the caller commits."""
        if self.conn.dialect.name == "postgresql":
            return self._seal_postgres(limit)
        self._lock_head()
        rows = self.conn.execute(select(audit_inbox).order_by(audit_inbox.c.id).limit(limit)).all()
        if not rows:
            return 0
        self.append([_record(row) for row in rows])
        self.conn.execute(delete(audit_inbox).where(audit_inbox.c.id.in_([r.id for r in rows])))
        return len(rows)

    def _seal_postgres(self, limit: int) -> int:
        """:meth:`seal` on PostgreSQL: the inbox's rows read, chained and written by COPY over
        psycopg, hashed from the rows as they come (:func:`canonical_row_bytes`) without a
        record object per entry. The same rows and hashes as :meth:`append` writes (every
        audited read and search returns through this: about a fifth of an audited search's
        server CPU was sealing, a third of it building records and SQLAlchemy's rows)."""
        seq, prev = self._lock_head()
        raw = dbapi(self.conn)
        with sqlalchemy_errors("SELECT the audit inbox"):
            rows = raw.execute(_PG_INBOX, (limit,)).fetchall()
        if not rows:
            return 0
        if len(rows) < COPY_ROWS:  # a few: the general path's insert
            self.append([_record_of(row) for row in rows])
        else:
            chained: list[list[Any]] = []
            for row in rows:
                values = dict(zip(FIELD_NAMES, row[1:], strict=True))
                if values["action"] not in ACTION_CODES or values["outcome"] not in OUTCOME_CODES:
                    raise ValueError(f"audit inbox entry {row[0]}: unknown action or outcome")
                seq += 1
                digest = row_hash(prev, canonical_row_bytes(seq, values))
                chained.append([seq, *row[1:], prev, digest])
                prev = digest
            with (
                sqlalchemy_errors("COPY audit_events"),
                raw.cursor() as cursor,
                cursor.copy(_PG_COPY_EVENTS) as copy,
            ):
                for values_row in chained:
                    copy.write_row(values_row)
            self.conn.execute(
                update(audit_head).where(audit_head.c.id == _HEAD_ID).values(seq=seq, hash=prev)
            )
        with sqlalchemy_errors("DELETE sealed inbox entries"):
            raw.execute(_PG_INBOX_DELETE, ([row[0] for row in rows],))
        return len(rows)

    def pending(self) -> int:
        return int(self.conn.execute(select(func.count()).select_from(audit_inbox)).scalar_one())

    def append(self, records: Sequence[AuditRecord]) -> list[int]:
        """Append records in order inside the caller's transaction; return their seq numbers."""
        if not records:
            return []
        seq, prev = self._lock_head()
        rows: list[dict[str, Any]] = []
        for record in records:
            seq += 1
            digest = chain_hash(prev, seq, record)
            row = record_dict(record)
            row.update(
                seq=seq,
                action=str(record.action),
                outcome=str(record.outcome),
                prev_hash=prev,
                hash=digest,
            )
            rows.append(row)
            prev = digest
        if self.conn.dialect.name == "postgresql" and len(rows) >= COPY_ROWS:
            self._copy(rows)
        else:
            self.conn.execute(insert(audit_events), rows)
        self.conn.execute(
            update(audit_head).where(audit_head.c.id == _HEAD_ID).values(seq=seq, hash=prev)
        )
        return [r["seq"] for r in rows]

    def _copy(self, rows: list[dict[str, Any]]) -> None:
        """The sealed rows by COPY (PostgreSQL): the pipelined insert spent most of a seal's
        CPU in the driver's per-row statement handling (bind, dump, send) - about 20 of the
        70-110 µs an entry took, the sealer's work for every audited read."""
        columns = list(rows[0])
        names = ", ".join(f'"{audit_events.c[c].name}"' for c in columns)  # KeyError: no column
        driver = self.conn.connection.driver_connection
        assert driver is not None
        with (
            driver.cursor() as cursor,
            cursor.copy(f"COPY audit_events ({names}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row([row[c] for c in columns])

    def stream(self, batch: int = 5000) -> Iterator[tuple[int, bytes, bytes, AuditRecord]]:
        last = 0
        while True:
            rows = self.conn.execute(
                select(audit_events)
                .where(audit_events.c.seq > last)
                .order_by(audit_events.c.seq)
                .limit(batch)
            ).all()
            if not rows:
                return
            for row in rows:
                yield int(row.seq), bytes(row.prev_hash), bytes(row.hash), _record(row)
            last = int(rows[-1].seq)

    def verify(self) -> VerifyReport:
        """Recompute the chain; report every entry that was edited, inserted or deleted."""
        problems: list[ChainProblem] = []
        expected_seq, prev, count = 1, GENESIS_HASH, 0
        for seq, stored_prev, stored_hash, record in self.stream():
            count += 1
            if seq != expected_seq:
                problems.append(
                    ChainProblem(seq, f"sequence gap: expected {expected_seq} (entries deleted)")
                )
            if stored_prev != prev:
                problems.append(
                    ChainProblem(seq, "previous-hash link broken (entry removed or inserted)")
                )
            if chain_hash(stored_prev, seq, record) != stored_hash:
                problems.append(ChainProblem(seq, "content does not match its hash (entry edited)"))
            prev, expected_seq = stored_hash, seq + 1
        head = self.conn.execute(
            select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == _HEAD_ID)
        ).first()
        head_seq, head_hash = (int(head.seq), bytes(head.hash)) if head else (0, GENESIS_HASH)
        if head_seq != expected_seq - 1 or head_hash != prev:
            problems.append(
                ChainProblem(
                    head_seq,
                    "chain head does not match the last entry (newest entries deleted or added)",
                )
            )
        return VerifyReport(entries=count, problems=tuple(problems))

    def search(
        self,
        *,
        patient_ref: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        client_id: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> tuple[list[tuple[int, AuditRecord]], int]:
        """Newest first. ``before`` is a keyset cursor (a seq), so pages stay stable while the
        trail grows; ``total`` counts all matches regardless of the cursor."""
        conditions = []
        if patient_ref:
            conditions.append(audit_events.c.patient_ref == patient_ref)
        if since:
            conditions.append(audit_events.c.recorded_at >= since)
        if until:
            conditions.append(audit_events.c.recorded_at < until)
        if client_id:
            conditions.append(audit_events.c.client_id == client_id)
        total = self.conn.execute(
            select(func.count()).select_from(audit_events).where(*conditions)
        ).scalar_one()
        if before is not None:
            conditions.append(audit_events.c.seq < before)
        rows = self.conn.execute(
            select(audit_events).where(*conditions).order_by(audit_events.c.seq.desc()).limit(limit)
        )
        return [(int(r.seq), _record(r)) for r in rows], int(total)

    def get(self, seq: int) -> AuditRecord | None:
        row = self.conn.execute(select(audit_events).where(audit_events.c.seq == seq)).first()
        return _record(row) if row else None
