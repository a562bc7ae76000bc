"""A FHIR read's audit entry is committed by group commit (decision 0042), on SQLite and
PostgreSQL: one entry per read, concurrent reads share a transaction, the answer waits for
the commit, and a failed commit fails every read of its group without showing data."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, select

from healthroam.bootstrap import Platform
from healthroam.db.schema import audit_events
from healthroam.security.audit import AuditRecord
from healthroam.security.group_commit import AuditGroupCommit, AuditNotRecorded
from healthroam.security.model import Principal

from helpers import Province, make_observation


def read_entries(platform: Platform, resource_id: str) -> list[dict[str, Any]]:
    platform.audit.seal()
    with platform.db.transaction(readonly=True) as conn:
        rows = conn.execute(
            select(audit_events)
            .where(audit_events.c.resource_id == resource_id, audit_events.c.action == "R")
            .order_by(audit_events.c.seq)
        ).mappings()
        return [dict(r) for r in rows]


class Gate:
    """Wraps the group commit: holds the first group after its commit, before the others are
    told (a commit in progress, so reads arriving meanwhile queue), counts the entries per
    group, and fails the write on demand."""

    def __init__(self, group: AuditGroupCommit) -> None:
        self.group, self.inner, self.finish = group, group.write, group._finish
        self.held = threading.Event()
        self.release = threading.Event()
        self.sizes: list[int] = []
        self.fail = False
        self.first = True

    def hold(self, tickets: Any, error: BaseException | None) -> None:
        if self.first:
            self.first = False
            self.held.set()
            assert self.release.wait(30)
        self.finish(tickets, error)

    def __call__(self, conn: Connection, records: list[AuditRecord]) -> None:
        # A failed write is its insert failing: when the insert is the transaction's only
        # statement it commits on its own (db/raw.py statements_alone), so a failure after
        # it would no longer take the entries back (over-audited, never under-audited).
        self.sizes.append(len(records))
        if self.fail:
            raise RuntimeError("disk full")
        self.inner(conn, records)


@contextmanager
def gated(platform: Platform) -> Iterator[Gate]:
    group = platform.audit.group_commit
    gate = Gate(group)
    group.write = gate
    group._finish = gate.hold  # type: ignore[method-assign,assignment]
    try:
        yield gate
    finally:
        group.write = gate.inner
        del group._finish


def waiting(group: AuditGroupCommit, count: int) -> None:
    deadline = time.monotonic() + 30
    while len(group._waiting) < count:
        assert time.monotonic() < deadline, "callers did not queue"
        time.sleep(0.01)


def run_all(calls: list[Callable[[], Any]]) -> list[Any]:
    results: list[Any] = [None] * len(calls)

    def one(n: int) -> None:
        try:
            results[n] = calls[n]()
        except Exception as exc:
            results[n] = exc

    threads = [threading.Thread(target=one, args=(n,)) for n in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_each_read_is_audited_once_and_concurrent_reads_share_a_commit(
    http: TestClient, platform: Platform, province: Province
) -> None:
    headers = province.headers("system/*.cruds")
    pid, obs = make_observation(http, headers)
    group = platform.audit.group_commit
    before_groups, before_callers = group.groups, group.callers
    with gated(platform) as gate:
        gate.first = False
        first = run_all([lambda: http.get(f"/fhir/Observation/{obs}", headers=headers)])
        assert first[0].status_code == 200  # a lone read commits its own group at once
        gate.first = True
        responses: list[Any] = []
        leader = threading.Thread(
            target=lambda: responses.append(http.get(f"/fhir/Observation/{obs}", headers=headers))
        )
        leader.start()
        assert gate.held.wait(30)
        # While the first group's commit is held, six more reads queue behind it.
        others = threading.Thread(
            target=lambda: responses.extend(
                run_all([lambda: http.get(f"/fhir/Observation/{obs}", headers=headers)] * 6)
            )
        )
        others.start()
        waiting(group, 6)
        assert responses == []  # nobody answered: the commit holding their entries waits
        gate.release.set()
        leader.join(60)
        others.join(60)
    assert [r.status_code for r in responses] == [200] * 7
    assert gate.sizes == [1, 1, 6]  # the lone read, the held one, the six that queued
    assert group.groups - before_groups == 3
    assert group.callers - before_callers == 8
    entries = read_entries(platform, obs)
    assert len(entries) == 8
    assert {(e["subtype"], e["outcome"], e["resource_type"]) for e in entries} == {
        ("read", "0", "Observation")
    }
    assert {e["patient_ref"] for e in entries} == {f"Patient/{pid}"}
    assert {e["client_id"] for e in entries} == {entries[0]["client_id"]}


def test_a_failed_audit_commit_fails_every_read_of_its_group(
    http: TestClient, platform: Platform, province: Province
) -> None:
    headers = province.headers("system/*.cruds")
    _pid, obs = make_observation(http, headers)
    with gated(platform) as gate:
        gate.first = False
        gate.fail = True
        refused = http.get(f"/fhir/Observation/{obs}", headers=headers)
        assert refused.status_code == 503
        outcome = refused.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "transient"
        assert "audit" in outcome["issue"][0]["diagnostics"]
        assert "pulse" not in refused.text  # nothing of the resource

        # A group: five reads queue while a commit is in progress; their group's commit
        # fails, so all five fail (the read whose commit was in progress had succeeded).
        gate.first, gate.fail = True, False
        principal: Principal = platform.auth.principal(
            platform.auth.token(headers["Authorization"].split()[1])
        )
        group = platform.audit.group_commit
        # (two lists: the threads may finish in either order)
        led: list[Any] = []
        results: list[Any] = []
        leader = threading.Thread(
            target=lambda: led.extend(
                run_all([lambda: platform.records.read(principal, "Observation", obs)])
            )
        )
        leader.start()
        assert gate.held.wait(30)
        others = threading.Thread(
            target=lambda: results.extend(
                run_all([lambda: platform.records.read(principal, "Observation", obs)] * 5)
            )
        )
        others.start()
        waiting(group, 5)
        gate.fail = True
        gate.release.set()
        leader.join(60)
        others.join(60)
        assert (len(led), len(results)) == (1, 5)
        assert led[0].id == obs  # the leader's own commit had succeeded
        assert all(isinstance(r, AuditNotRecorded) for r in results), results
        assert gate.sizes == [1, 1, 5]
        gate.fail = False
        assert http.get(f"/fhir/Observation/{obs}", headers=headers).status_code == 200
    # Only the reads that were answered left entries.
    assert len(read_entries(platform, obs)) == 2


def test_a_lone_caller_leads_and_a_read_without_access_is_still_audited(
    http: TestClient, platform: Platform, province: Province
) -> None:
    headers = province.headers("system/*.cruds")
    assert http.get("/fhir/Observation/nothere", headers=headers).status_code == 404
    entries = read_entries(platform, "nothere")
    assert [(e["outcome"], e["detail"]) for e in entries] == [("4", "not found")]


@pytest.mark.parametrize("max_group", [1, 3])
def test_groups_never_exceed_their_limit(
    http: TestClient, platform: Platform, province: Province, max_group: int
) -> None:
    headers = province.headers("system/*.cruds")
    _pid, obs = make_observation(http, headers)
    group = platform.audit.group_commit
    group.max_group = max_group
    with gated(platform) as gate:
        results: list[Any] = []
        leader = threading.Thread(
            target=lambda: results.extend(
                run_all([lambda: http.get(f"/fhir/Observation/{obs}", headers=headers)])
            )
        )
        leader.start()
        assert gate.held.wait(30)
        others = threading.Thread(
            target=lambda: results.extend(
                run_all([lambda: http.get(f"/fhir/Observation/{obs}", headers=headers)] * 5)
            )
        )
        others.start()
        waiting(group, 5)
        gate.release.set()
        leader.join(60)
        others.join(60)
    assert [r.status_code for r in results] == [200] * 6
    assert max(gate.sizes) <= max_group
    assert sum(gate.sizes) == 6
    assert len(read_entries(platform, obs)) == 6
