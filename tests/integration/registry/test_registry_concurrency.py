"""Concurrent writers of the registry's shared rows queue instead of deadlocking."""

from __future__ import annotations

import threading

from sqlalchemy import select

from healthroam.bootstrap import Platform
from healthroam.db.tables_registry import mpi_name_counts
from healthroam.registry.repository import TOTAL, RegistryRepository


def test_two_transactions_counting_names_in_opposite_orders_both_commit(
    platform: Platform,
) -> None:
    first_counted = threading.Event()
    second_counted = threading.Event()
    errors: list[BaseException] = []

    def one() -> None:
        try:
            with platform.db.transaction() as conn:
                RegistryRepository(conn).count_name("黎阿妹", 1)
                first_counted.set()
                # The other transaction waits on the total row, so this times out, then goes on.
                second_counted.wait(timeout=1.5)
                RegistryRepository(conn).count_name("王大明", 1)
        except BaseException as error:  # reported below
            errors.append(error)

    def two() -> None:
        first_counted.wait(timeout=10)
        try:
            with platform.db.transaction() as conn:
                RegistryRepository(conn).count_name("王大明", 1)
                second_counted.set()
                RegistryRepository(conn).count_name("黎阿妹", 1)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=one), threading.Thread(target=two)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    with platform.db.transaction(readonly=True) as conn:
        counts = dict(conn.execute(select(mpi_name_counts.c.name, mpi_name_counts.c.count)).all())
    assert counts == {TOTAL: 4, "黎阿妹": 2, "王大明": 2}
