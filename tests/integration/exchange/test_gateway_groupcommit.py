"""Group commit: one transaction for many messages; a failing message loses only itself."""

from __future__ import annotations

import threading
from collections.abc import Callable

from healthroam.bootstrap import Platform
from healthroam.exchange.hl7.groupcommit import GroupCommitter, RawMessage
from healthroam.exchange.hl7.service import GatewayService, Outcome
from hl7_testkit import Running, bind, msa, observation_handler, oru


def test_one_group_one_commit_and_a_failure_rolls_back_only_its_message(
    platform: Platform,
) -> None:
    bind(platform)
    service = GatewayService(platform.db, observation_handler(platform.records))
    committer = GroupCommitter(service, threads=1, batch_max=50)
    outcomes: dict[int, Outcome | None] = {}
    done = threading.Event()
    messages = [oru(f"G-{n}", values=("5.1", "6.2")) for n in range(6)]
    messages[3] = oru("G-3", values=("5.1", ""))  # second OBX empty: AE after a write
    messages.append(oru("G-0", values=("5.1", "6.2")))  # a repeat inside the same group
    messages.append(oru("G-9", facility="H999"))  # unknown sender

    def deliver(n: int) -> Callable[[Outcome | None], None]:
        def settle(outcome: Outcome | None) -> None:
            outcomes[n] = outcome
            if len(outcomes) == len(messages):
                done.set()

        return settle

    for n, text in enumerate(messages):  # all queued before the writer starts: one group
        committer.submit(RawMessage(text.encode(), "test"), deliver(n))
    committer.start()
    assert done.wait(60)
    committer.close()
    assert committer.batches == 1
    assert committer.retries == 1  # applied optimistically, then again with savepoints
    codes = {n: msa(o.ack) for n, o in outcomes.items() if o is not None}
    assert codes == {
        0: ("AA", "G-0"),
        1: ("AA", "G-1"),
        2: ("AA", "G-2"),
        3: ("AE", "G-3"),
        4: ("AA", "G-4"),
        5: ("AA", "G-5"),
        6: ("AA", "G-0"),
        7: ("AR", "G-9"),
    }
    assert outcomes[6] is not None
    assert outcomes[0] is not None
    assert outcomes[6].ack == outcomes[0].ack
    assert outcomes[6].duplicate
    running = Running(platform, None)  # type: ignore[arg-type]
    assert running.accepted == 5
    assert len(running.observations()) == 10  # 5 messages x 2 OBX; none from G-3
    assert running.rejected == 2


def test_a_clean_group_needs_no_savepoints(platform: Platform) -> None:
    bind(platform)
    service = GatewayService(platform.db, observation_handler(platform.records))
    committer = GroupCommitter(service, threads=1, batch_max=50)
    got: list[Outcome | None] = []
    done = threading.Event()

    def settle(outcome: Outcome | None) -> None:
        got.append(outcome)
        if len(got) == 5:
            done.set()

    for n in range(5):
        committer.submit(RawMessage(oru(f"K-{n}").encode(), None), settle)
    committer.start()
    assert done.wait(60)
    committer.close()
    assert (committer.batches, committer.retries) == (1, 0)
    assert all(o is not None and msa(o.ack)[0] == "AA" for o in got)
