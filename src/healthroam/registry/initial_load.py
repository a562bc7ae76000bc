"""The initial load of an empty registry on PostgreSQL (decision 0038).

Loading the population base into an empty registry is the one time millions of persons arrive
at once. Maintaining every index and foreign key row by row is then most of the database's
work: each foreign-key check locks the referenced row (a page write and a WAL record), and the
blocking-key and master-index-ID indexes take their keys in random order. So an initial load:

1. refuses every other writer of the registry's tables until step 3 (``guard``), records, in
   its progress row, the statements that rebuild the registry tables' secondary
   indexes, the blocking-key primary key, the master-index-ID unique constraint and every
   foreign key, then drops them (the id primary keys stay: they take appends; the source-key
   unique constraint is rebuilt like the others, and the load keeps source keys unique itself);
2. writes the new persons with COPY, and keeps the rows that need the matcher (a national ID
   or source key already seen in the load, no valid national ID) in
   ``registry_load_deferred``, in the same transaction as each chunk;
3. rebuilds what it dropped (a sort per index, one validating join per foreign key), then
   matches the deferred rows in file order through the real-time matcher.

A crash in any step resumes at that step: the statements and the deferred rows are in the
database, committed with the chunk that needed them.
"""

# SQL here is built from the catalog's own definitions of our tables, never from values.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import Connection, delete, func, insert, select, text

from healthroam.db.engine import REFUSED_DURING_INITIAL_LOAD
from healthroam.db.tables_registry import (
    registry_load_deferred,
    registry_load_names,
    source_records,
)

TABLES = (
    "master_persons",
    "source_records",
    "mpi_blocking_keys",
    "mpi_events",
    "mpi_event_recipients",
)
# Constraints kept during the load: keys that only grow at the end. (The source key is
# rebuilt too: its random-order inserts slowed a 10-million-row load as the index outgrew
# the buffer cache, and the load keeps source keys unique itself: a key seen before in the
# load waits for the matcher. Rebuilding the unique constraint checks that once more.)
# The partial index of events still waiting for a feed position is kept as well: every
# event the load writes has its position, so the index takes no entry during the load, and
# rebuilding it would only read the whole events table once more (decision 0056).
KEPT = frozenset(
    {
        "pk_master_persons",
        "pk_source_records",
        "pk_mpi_events",
        "pk_mpi_event_recipients",
        "ix_mpi_events_unpositioned",
    }
)


# Tables whose dropped keys and indexes the load alone may write around: any other writer of
# them (a FHIR Patient create, an HL7 registration, a steward's merge) is refused while the
# load runs, by a statement-level trigger, so nothing it writes can break the rebuild (a
# duplicate source key) or go unmatched (no blocking-key index). The refusal's SQLSTATE is
# turned into "unavailable, retry later" by the database layer.
GUARDED = ("master_persons", "source_records", "mpi_blocking_keys")
_GUARD = "healthroam_initial_load_guard"
_LOADER_SETTING = "healthroam.initial_load"


class DeferredRow(Protocol):
    @property
    def number(self) -> int: ...
    @property
    def local_id(self) -> str | None: ...
    @property
    def system(self) -> str: ...
    @property
    def data_json(self) -> str: ...
    @property
    def normalized_json(self) -> str: ...


def registry_rows(conn: Connection) -> int:
    """How many source records the registry holds (an initial load needs none)."""
    return int(conn.execute(select(func.count()).select_from(source_records)).scalar_one())


def deferrable(conn: Connection) -> list[str]:
    """The statements that recreate what an initial load drops, in the order to run them:
    indexes, then primary and unique keys, then foreign keys."""
    names = ", ".join(f"'{t}'" for t in TABLES)
    kept = ", ".join(f"'{c}'" for c in sorted(KEPT))
    constraints = conn.execute(
        text(
            "SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid)"
            f" FROM pg_constraint WHERE conrelid::regclass::text IN ({names})"
            f" AND contype IN ('p', 'u', 'f') AND conname NOT IN ({kept})"
            " ORDER BY contype = 'f', conrelid::regclass::text, conname"
        )
    ).all()
    indexes = conn.execute(
        text(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema()"
            f" AND tablename IN ({names})"
            " AND indexname NOT IN (SELECT conname FROM pg_constraint)"
            f" AND indexname NOT IN ({kept})"
            " ORDER BY tablename, indexname"
        )
    ).scalars()
    return [
        *indexes,
        *(
            f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}"
            for table, name, _, definition in constraints
        ),
    ]


def guard(conn: Connection) -> None:
    """Refuse every other writer of the registry's tables until ``unguard`` (the transaction
    that commits this is the load's start)."""
    conn.exec_driver_sql(
        f"CREATE OR REPLACE FUNCTION {_GUARD}() RETURNS trigger LANGUAGE plpgsql AS $$"
        f" BEGIN IF coalesce(current_setting('{_LOADER_SETTING}', true), '') <> 'on' THEN"
        " RAISE EXCEPTION 'the registry''s initial load is running'"
        f" USING ERRCODE = '{REFUSED_DURING_INITIAL_LOAD}'; END IF; RETURN NULL; END $$"
    )
    for table in GUARDED:
        conn.exec_driver_sql(
            f"CREATE TRIGGER {_GUARD} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE"
            f" ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {_GUARD}()"
        )


def unguard(conn: Connection) -> None:
    for table in GUARDED:
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {_GUARD} ON {table}")
    conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {_GUARD}()")


def as_loader(conn: Connection) -> None:
    """This transaction is the initial load's own: the guard lets it write."""
    conn.exec_driver_sql(f"SET LOCAL {_LOADER_SETTING} = 'on'")


def defer(conn: Connection) -> list[str]:
    """Refuse other writers (``guard``), drop the deferrable indexes and constraints; return
    the statements that rebuild them."""
    guard(conn)
    statements = deferrable(conn)
    for statement in reversed(statements):
        if statement.startswith("ALTER TABLE"):
            table, name = statement.split()[2], statement.split()[5]
            conn.exec_driver_sql(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
        else:
            words = statement.split()  # CREATE [UNIQUE] INDEX name ON ...
            conn.exec_driver_sql(f"DROP INDEX {words[words.index('INDEX') + 1]}")
    return statements


def restore(conn: Connection, statements: Sequence[str]) -> None:
    """Rebuild what ``defer`` dropped: each index by one sort, each foreign key validated by
    one join (with the memory for it, in this transaction only).

    The loaded tables are analysed before the first foreign key: the validating joins are
    then planned on the loaded rows' statistics (a column the load left all NULL, such as
    ``merged_into``, is checked through its new index instead of a scan of the whole table),
    and the load needs the statistics afterwards anyway (decision 0056)."""
    # Other writers wait for this transaction's table locks, then find the guard gone.
    unguard(conn)
    conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '1GB'")
    conn.exec_driver_sql("SET LOCAL work_mem = '256MB'")
    # The validating joins over millions of rows keep the server's JIT setting: the
    # platform's connections turn it off for their short statements (decision 0062).
    conn.exec_driver_sql("SET LOCAL jit TO DEFAULT")
    analysed = False
    for statement in statements:
        if not analysed and " FOREIGN KEY " in statement:
            conn.exec_driver_sql(f"ANALYZE {', '.join(TABLES)}")
            analysed = True
        conn.exec_driver_sql(statement)
    if not analysed:  # nothing to validate: the statistics are still the load's to take
        conn.exec_driver_sql(f"ANALYZE {', '.join(TABLES)}")


def start_names(conn: Connection) -> None:
    """A new initial load's staged name counts start empty (the load's first transaction)."""
    conn.execute(delete(registry_load_names))


def merge_names(conn: Connection) -> None:
    """Add the name counts that the load's chunks staged into ``mpi_name_counts``, once, and
    empty the staging table (in the rebuild's transaction, before the deferred rows are
    matched: the matcher reads and updates the counts). The same sums as the chunks' own
    upserts gave, one name at a time in name order (the total row, "", first)."""
    conn.exec_driver_sql(
        "INSERT INTO mpi_name_counts (name, count)"
        " SELECT name, sum(count) FROM registry_load_names GROUP BY name ORDER BY name"
        " ON CONFLICT (name) DO UPDATE SET count = mpi_name_counts.count + excluded.count"
    )
    conn.exec_driver_sql("TRUNCATE registry_load_names")


def defer_rows(conn: Connection, digest: str, source: str, rows: Sequence[DeferredRow]) -> None:
    """Keep rows that need the matcher until the indexes are back (in the chunk's
    transaction)."""
    if rows:
        conn.execute(
            insert(registry_load_deferred),
            [
                {
                    "file_hash": digest,
                    "source": source,
                    "row_number": p.number,
                    "local_id": p.local_id,
                    "id_system": p.system,
                    "record_data": p.data_json,
                    "normalized": p.normalized_json,
                }
                for p in rows
            ],
        )


def deferred_rows(
    conn: Connection, digest: str, source: str, limit: int
) -> list[tuple[int, str | None, str, str, str]]:
    """The next deferred rows in file order."""
    d = registry_load_deferred.c
    found = conn.execute(
        select(d.row_number, d.local_id, d.id_system, d.record_data, d.normalized)
        .where(d.file_hash == digest, d.source == source)
        .order_by(d.row_number)
        .limit(limit)
    ).all()
    return [(int(r[0]), r[1], str(r[2]), str(r[3]), str(r[4])) for r in found]


def forget_deferred(conn: Connection, digest: str, source: str, numbers: Sequence[int]) -> None:
    d = registry_load_deferred.c
    conn.execute(
        delete(registry_load_deferred).where(
            d.file_hash == digest, d.source == source, d.row_number.in_(list(numbers))
        )
    )


def written_keys(conn: Connection, source: str) -> tuple[list[str], list[tuple[str, str]]]:
    """National-ID blocking keys and source keys already in the registry (to resume)."""
    ids = (
        conn.execute(text("SELECT key FROM mpi_blocking_keys WHERE key LIKE 'id:%'"))
        .scalars()
        .all()
    )
    keys = conn.execute(
        select(source_records.c.id_system, source_records.c.local_id).where(
            source_records.c.institution_code == source
        )
    ).all()
    return [str(k) for k in ids], [(str(a), str(b)) for a, b in keys]
