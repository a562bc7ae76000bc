"""The order in which institutions read the registry's events (decision 0044).

An event's ``seq`` is taken from the table's sequence when the event is written, so two
transactions can commit their events out of ``seq`` order: a reader that polled
``seq > after`` could see 11, move its cursor past 10, and never see 10 when its transaction
committed a moment later. The feed is therefore read by ``position``, which is handed out only
to events already committed (``assign_positions``, run by the reader before it reads) or by a
bulk load to its own rows inside its transaction (``take_positions``). Both lock the one row of
``mpi_event_head`` until their transaction ends, so positions become visible in the order they
were handed out: whatever a reader sees is a prefix of the feed.
"""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, insert, select, update

from healthroam.db.tables_registry import mpi_event_head, mpi_events

_HEAD_ID = 1


def _lock_head(conn: Connection) -> int:
    """The last position handed out, with the head row locked until the transaction ends
    (SQLite: the write transaction already holds the database's write lock)."""
    query = select(mpi_event_head.c.position).where(mpi_event_head.c.id == _HEAD_ID)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    last = conn.execute(query).scalar()
    if last is None:
        # The first positions ever: concurrent first callers collide on the primary key and
        # all but one transaction fail (a reader retries on its next poll).
        conn.execute(insert(mpi_event_head).values(id=_HEAD_ID, position=0))
        return 0
    return int(last)


def take_positions(conn: Connection, count: int) -> int:
    """Reserve ``count`` positions for events this transaction writes; the first of them.
    Holds the head's lock until the transaction ends: call it late in the transaction."""
    last = _lock_head(conn)
    if count:
        conn.execute(
            update(mpi_event_head)
            .where(mpi_event_head.c.id == _HEAD_ID)
            .values(position=last + count)
        )
    return last + 1


def pending(conn: Connection) -> bool:
    """Whether committed events wait for a position (a cheap check without the lock)."""
    found = conn.execute(
        select(mpi_events.c.seq).where(mpi_events.c.position.is_(None)).limit(1)
    ).first()
    return found is not None


def assign_positions(conn: Connection, limit: int) -> int:
    """Give the committed events without a position the next positions, in ``seq`` order, at
    most ``limit`` of them; how many were given. Run in its own write transaction: the events
    it can see are read after the head's lock is taken, so any event committed later gets a
    later position."""
    last = _lock_head(conn)
    seqs = list(
        conn.execute(
            select(mpi_events.c.seq)
            .where(mpi_events.c.position.is_(None))
            .order_by(mpi_events.c.seq)
            .limit(limit)
        ).scalars()
    )
    if not seqs:
        return 0
    conn.execute(
        update(mpi_events)
        .where(mpi_events.c.seq == bindparam("event_seq"))
        .values(position=bindparam("event_position")),
        [{"event_seq": seq, "event_position": last + i} for i, seq in enumerate(seqs, start=1)],
    )
    conn.execute(
        update(mpi_event_head)
        .where(mpi_event_head.c.id == _HEAD_ID)
        .values(position=last + len(seqs))
    )
    return len(seqs)
