"""Clinician accounts through the service on SQLite and PostgreSQL: Argon2id passwords,
lockout, per-address throttle, sessions stored as hashes, disable ends sessions, audit."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from healthroam.bootstrap import Platform, build
from healthroam.clinicians.service import WEB_CLIENT_ID, LoginRefused, token_hash
from healthroam.db.schema import audit_events
from healthroam.db.tables_clinicians import (
    clinician_login_failures,
    clinician_sessions,
    clinicians,
)
from healthroam.errors import Conflict, InvalidInput, NotAuthenticated, NotFound

PASSWORD = "correct horse 7"


@pytest.fixture
def hospital(platform: Platform) -> Platform:
    platform.institutions.add(
        code="H001", name="海南省人民医院", kind="hospital", region="460106", level=3
    )
    platform.clinicians.add(
        username="dr.li", display_name="李医生", institution_code="H001", password=PASSWORD
    )
    return platform


def test_password_is_stored_as_argon2id_and_checked(hospital: Platform) -> None:
    with hospital.db.transaction(readonly=True) as conn:
        stored = conn.execute(select(clinicians.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    signed_in = hospital.clinicians.login("dr.li", PASSWORD, source_address="10.0.0.1")
    assert signed_in.session.clinician.display_name == "李医生"
    assert signed_in.session.institution_name == "海南省人民医院"
    with pytest.raises(LoginRefused) as refused:
        hospital.clinicians.login("dr.li", "wrong password!", source_address="10.0.0.1")
    assert refused.value.reason == "wrong-credentials"
    with pytest.raises(LoginRefused):
        hospital.clinicians.login("nobody", PASSWORD, source_address="10.0.0.1")


def test_account_checks(hospital: Platform) -> None:
    with pytest.raises(Conflict):
        hospital.clinicians.add(
            username="dr.li", display_name="x", institution_code="H001", password=PASSWORD
        )
    with pytest.raises(NotFound):
        hospital.clinicians.add(
            username="dr.wu", display_name="吴医生", institution_code="NOPE", password=PASSWORD
        )
    with pytest.raises(InvalidInput, match="password"):
        hospital.clinicians.add(
            username="dr.wu", display_name="吴医生", institution_code="H001", password="short"
        )
    with pytest.raises(InvalidInput, match="username"):
        hospital.clinicians.add(
            username="Dr Wu", display_name="吴医生", institution_code="H001", password=PASSWORD
        )
    assert [c.username for c in hospital.clinicians.list("H001")] == ["dr.li"]


def test_lockout_after_repeated_wrong_passwords(hospital: Platform) -> None:
    limit = hospital.settings.clinician_login_max_failures
    for _ in range(limit):
        with pytest.raises(LoginRefused):
            hospital.clinicians.login("dr.li", "not the password", source_address="10.0.0.2")
    # Locked: even the right password is refused until the lock ends.
    with pytest.raises(LoginRefused) as locked:
        hospital.clinicians.login("dr.li", PASSWORD, source_address="10.0.0.3")
    assert locked.value.reason == "locked"
    service = hospital.clinicians
    later = service.clock() + timedelta(minutes=hospital.settings.clinician_lockout_minutes + 1)
    service.clock = lambda: later
    assert service.login("dr.li", PASSWORD, source_address="10.0.0.3").token


def test_one_address_cannot_spray_many_accounts(hospital: Platform) -> None:
    limit = hospital.settings.clinician_login_max_failures_per_address
    for n in range(limit):
        with pytest.raises(LoginRefused):
            hospital.clinicians.login(f"user{n}", "guess guess", source_address="10.9.9.9")
    with pytest.raises(LoginRefused) as throttled:
        hospital.clinicians.login("dr.li", PASSWORD, source_address="10.9.9.9")
    assert throttled.value.reason == "throttled"
    assert hospital.clinicians.login("dr.li", PASSWORD, source_address="10.0.0.4").token


def test_the_address_throttle_is_shared_by_every_server_process(hospital: Platform) -> None:
    # Two platforms on one database: two server processes (decision 0048).
    other = build(hospital.settings)
    try:
        processes = [hospital.clinicians, other.clinicians]
        limit = hospital.settings.clinician_login_max_failures_per_address
        for n in range(limit):  # the failures alternate between the processes
            with pytest.raises(LoginRefused) as refused:
                processes[n % 2].login(f"user{n}", "guess guess", source_address="10.9.9.8")
            assert refused.value.reason == "wrong-credentials"
        for service in processes:  # each refuses the address, not only the one it saw fail
            with pytest.raises(LoginRefused) as throttled:
                service.login("dr.li", PASSWORD, source_address="10.9.9.8")
            assert throttled.value.reason == "throttled"
        with hospital.db.transaction(readonly=True) as conn:
            stored = conn.execute(select(clinician_login_failures)).all()
        assert len(stored) == 1  # one row per address, the address only as a hash
        assert b"10.9.9.8" not in stored[0].address_hash
        assert len(stored[0].failures) == limit
        # The failures age out: the address may try again, and its row is deleted once a
        # later failure (of any address) finds it past its window.
        later = hospital.clinicians.clock() + timedelta(
            minutes=hospital.settings.clinician_lockout_minutes, seconds=1
        )
        for service in processes:
            service.clock = lambda: later
        assert other.clinicians.login("dr.li", PASSWORD, source_address="10.9.9.8").token
        with pytest.raises(LoginRefused):
            hospital.clinicians.login("dr.li", "wrong password!", source_address="10.1.1.1")
        with hospital.db.transaction(readonly=True) as conn:
            left = conn.execute(select(clinician_login_failures.c.failures)).scalars().all()
        assert left == [[later.timestamp()]]  # only the new address's one failure
    finally:
        other.close()


def test_sessions_are_stored_hashed_and_end(hospital: Platform) -> None:
    service = hospital.clinicians
    signed_in = service.login("dr.li", PASSWORD, source_address="10.0.0.1")
    with hospital.db.transaction(readonly=True) as conn:
        stored = conn.execute(select(clinician_sessions.c.token_hash)).scalars().all()
    assert stored == [token_hash(signed_in.token)]
    assert signed_in.token.encode() not in stored[0]
    assert service.session(signed_in.token).clinician.username == "dr.li"
    with pytest.raises(NotAuthenticated):
        service.session("forged-token")
    # Idle timeout.
    now = service.clock()
    service.clock = lambda: (
        now + timedelta(minutes=hospital.settings.clinician_session_idle_minutes + 1)
    )
    with pytest.raises(NotAuthenticated):
        service.session(signed_in.token)
    service.clock = lambda: now
    with pytest.raises(NotAuthenticated):  # ended sessions are deleted, not revived
        service.session(signed_in.token)


def test_disabling_ends_sessions_and_refuses_login(hospital: Platform) -> None:
    service = hospital.clinicians
    signed_in = service.login("dr.li", PASSWORD, source_address="10.0.0.1")
    service.set_active("dr.li", False)
    with pytest.raises(NotAuthenticated):
        service.session(signed_in.token)
    with pytest.raises(LoginRefused):
        service.login("dr.li", PASSWORD, source_address="10.0.0.1")
    service.set_active("dr.li", True)
    assert service.login("dr.li", PASSWORD, source_address="10.0.0.1").token


def test_principal_and_audit_name_the_clinician(hospital: Platform) -> None:
    service = hospital.clinicians
    signed_in = service.login("dr.li", PASSWORD, source_address="10.0.0.1")
    who = service.principal(signed_in.session, "10.0.0.1")
    assert (who.client_id, who.institution_code, who.end_user) == (
        WEB_CLIENT_ID,
        "H001",
        "dr.li",
    )
    with pytest.raises(LoginRefused):
        service.login("dr.li", "wrong password", source_address="10.0.0.1")
    service.logout(signed_in.token, source_address="10.0.0.1")
    hospital.audit.seal()
    with hospital.db.transaction(readonly=True) as conn:
        rows = conn.execute(
            select(
                audit_events.c.subtype,
                audit_events.c.outcome,
                audit_events.c.end_user,
                audit_events.c.institution_code,
            )
            .where(audit_events.c.event_type == "auth")
            .order_by(audit_events.c.seq)
        ).all()
    assert [tuple(r) for r in rows] == [
        ("login", "0", "dr.li", "H001"),
        ("login", "4", "dr.li", "H001"),
        ("logout", "0", "dr.li", "H001"),
    ]
    assert hospital.audit.verify().ok
