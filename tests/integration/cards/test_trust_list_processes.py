"""Trust lists signed by several server processes at once (decision 0048): each process has
its own CardService; two re-signing together must not both take the next sequence number."""

from __future__ import annotations

import threading

from sqlalchemy import select

from healthroam.bootstrap import Platform, build_cards
from healthroam.cards.service import CardService
from healthroam.db.tables_cards import card_trust_lists


def test_two_processes_signing_at_once_take_distinct_sequence_numbers(keyed: Platform) -> None:
    # A second CardService over the same database stands for a second server process.
    other = build_cards(keyed.settings, keyed.db, keyed.audit, keyed.keys)
    services = (keyed.cards, other)
    try:
        for _round in range(8):
            barrier = threading.Barrier(2)
            failures: list[BaseException] = []

            def sign(service: CardService, barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                try:
                    service.trust_list()
                except BaseException as error:  # handed to the test
                    failures.append(error)

            for service in services:
                service._trust_dirty = True  # a status change seen by each process
            threads = [threading.Thread(target=sign, args=(s,)) for s in services]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert failures == []
    finally:
        other.close()
    with keyed.db.transaction(readonly=True) as conn:
        sequences = conn.execute(select(card_trust_lists.c.sequence)).scalars().all()
    assert sorted(sequences) == list(range(1, 17))  # every re-sign kept, none collided
