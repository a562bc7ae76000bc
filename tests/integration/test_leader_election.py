"""The leader election of the server processes (db/leader.py, decision 0048): one holder of
the PostgreSQL advisory lock runs the once-only jobs; another takes over when it stops or its
session dies. On SQLite the one process leads at once."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from sqlalchemy import text

from healthroam.bootstrap import Platform
from healthroam.db.leader import APPLICATION_NAME_PREFIX, LeaderElection


class Recorded:
    """A job that records whether it runs."""

    def __init__(self) -> None:
        self.running = False
        self.starts = 0

    def start(self) -> None:
        assert not self.running
        self.running = True
        self.starts += 1

    def stop(self) -> None:
        self.running = False


def _eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_one_of_two_leads_and_the_other_takes_over(platform: Platform) -> None:
    jobs = Recorded(), Recorded()
    first = LeaderElection(platform.db, [jobs[0]], poll_seconds=0.05)
    second = LeaderElection(platform.db, [jobs[1]], poll_seconds=0.05)
    first.start()
    _eventually(lambda: first.leading, "the first to lead")
    second.start()
    try:
        time.sleep(0.3)  # several polls of the second
        assert jobs[0].running
        if platform.db.dialect == "sqlite":
            # One process serves SQLite: whoever runs there leads (no lock to take).
            assert second.leading
            assert jobs[1].running
            return
        assert not second.leading
        assert not jobs[1].running
        first.stop()  # shutdown: the lock is given up with the session
        assert not jobs[0].running
        _eventually(lambda: second.leading and jobs[1].running, "the second to take over")
    finally:
        first.stop()
        second.stop()
    assert not jobs[1].running


def test_a_leader_whose_session_dies_stops_its_jobs_and_another_leads(
    platform: Platform,
) -> None:
    if platform.db.dialect != "postgresql":
        pytest.skip("no database session to lose on SQLite")
    jobs = Recorded(), Recorded()
    first = LeaderElection(platform.db, [jobs[0]], poll_seconds=0.05)
    first.start()
    _eventually(lambda: first.leading, "the first to lead")
    second = LeaderElection(platform.db, [jobs[1]], poll_seconds=0.05)
    second.start()
    try:
        with platform.db.transaction() as conn:
            killed = conn.execute(
                text(
                    "SELECT pg_terminate_backend(a.pid) FROM pg_locks l "
                    "JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory' "
                    "AND l.granted AND a.application_name LIKE :p "
                    # (only this test's database: other tests lead in theirs meanwhile)
                    "AND a.datname = current_database()"
                ),
                {"p": APPLICATION_NAME_PREFIX + "%"},
            ).all()
        assert len(killed) == 1  # one holder
        _eventually(lambda: second.leading and jobs[1].running, "the second to take over")
        # The first found its session gone and stopped its jobs; it keeps trying to lead.
        _eventually(lambda: not first.leading and not jobs[0].running, "the first to stop")
        second.stop()
        _eventually(lambda: first.leading and jobs[0].running, "the first to lead again")
        assert jobs[0].starts == 2
    finally:
        first.stop()
        second.stop()
