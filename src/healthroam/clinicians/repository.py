"""SQL storage for clinician accounts and their sessions."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from healthroam.clinicians.model import AddressThrottle, Clinician
from healthroam.db.schema import institutions
from healthroam.db.tables_clinicians import (
    clinician_login_failures,
    clinician_sessions,
    clinicians,
)

_f = clinician_login_failures.c
# Take the address's row, creating it if need be, and hold it (PostgreSQL: the upsert locks the
# row until commit, so failures from several server processes at once are all counted); its
# stored failure times come back.
_TAKE_ADDRESS = {
    dialect: upsert(clinician_login_failures)
    .on_conflict_do_update(index_elements=[_f.address_hash], set_={"failures": _f.failures})
    .returning(_f.failures)
    for dialect, upsert in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}


def _clinician(row: Any) -> Clinician:
    return Clinician(
        username=row.username,
        display_name=row.display_name,
        institution_code=row.institution_code,
        active=row.active,
        created_at=row.created_at,
    )


class ClinicianRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, clinician: Clinician, password_hash: str) -> bool:
        """Insert; False when the username is taken."""
        try:
            with self.conn.begin_nested():
                self.conn.execute(
                    insert(clinicians).values(
                        username=clinician.username,
                        display_name=clinician.display_name,
                        institution_code=clinician.institution_code,
                        password_hash=password_hash,
                        active=clinician.active,
                        failed_logins=0,
                        locked_until=None,
                        created_at=clinician.created_at,
                    )
                )
        except IntegrityError:
            return False
        return True

    def get(self, username: str) -> Clinician | None:
        row = self.conn.execute(select(clinicians).where(clinicians.c.username == username)).first()
        return _clinician(row) if row else None

    def login_state(self, username: str) -> Any:
        """Password hash, failure count, lock end and whether account and institution are
        active; locks the row on PostgreSQL so concurrent wrong passwords all count."""
        query = (
            select(
                clinicians.c.password_hash,
                clinicians.c.failed_logins,
                clinicians.c.locked_until,
                clinicians.c.active,
                institutions.c.active.label("institution_active"),
            )
            .join(institutions, institutions.c.code == clinicians.c.institution_code)
            .where(clinicians.c.username == username)
        )
        if self.conn.dialect.name == "postgresql":
            query = query.with_for_update(of=clinicians)
        return self.conn.execute(query).first()

    def set_failures(self, username: str, failures: int, locked_until: datetime | None) -> None:
        self.conn.execute(
            update(clinicians)
            .where(clinicians.c.username == username)
            .values(failed_logins=failures, locked_until=locked_until)
        )

    def set_active(self, username: str, active: bool, now: datetime) -> bool:
        result = self.conn.execute(
            update(clinicians)
            .where(clinicians.c.username == username)
            .values(active=active, disabled_at=None if active else now)
        )
        return result.rowcount == 1

    def set_password(self, username: str, password_hash: str) -> bool:
        result = self.conn.execute(
            update(clinicians)
            .where(clinicians.c.username == username)
            .values(password_hash=password_hash, failed_logins=0, locked_until=None)
        )
        return result.rowcount == 1

    def list(self, institution_code: str | None = None) -> list[Clinician]:
        query = select(clinicians).order_by(clinicians.c.institution_code, clinicians.c.username)
        if institution_code:
            query = query.where(clinicians.c.institution_code == institution_code)
        return [_clinician(r) for r in self.conn.execute(query)]


class LoginFailureRepository:
    """Failed sign-ins per source address (hash), for :class:`AddressThrottle`."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def times(self, address_hash: bytes) -> list[float]:
        stored = self.conn.execute(
            select(_f.failures).where(_f.address_hash == address_hash)
        ).scalar()
        return list(stored or ())

    def failed(self, address_hash: bytes, throttle: AddressThrottle, now: datetime) -> None:
        """Count one more failure of the address; forget addresses whose failures all left the
        window."""
        window = timedelta(seconds=throttle.window)
        stored = self.conn.execute(
            _TAKE_ADDRESS[self.conn.dialect.name],
            {"address_hash": address_hash, "failures": [], "expires_at": now},
        ).scalar_one()
        times = throttle.after_failure(stored, now.timestamp())
        self.conn.execute(
            update(clinician_login_failures)
            .where(_f.address_hash == address_hash)
            .values(failures=times, expires_at=now + window)
        )
        # Rows another sign-in holds are left for a later one (SKIP LOCKED): waiting for them
        # while holding this address's row could deadlock with a sign-in doing the same.
        expired = select(_f.address_hash).where(_f.expires_at < now)
        self.conn.execute(
            delete(clinician_login_failures).where(
                _f.address_hash.in_(expired.with_for_update(skip_locked=True))
            )
        )


class SessionRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(
        self, token_hash: bytes, username: str, csrf_token: str, now: datetime, expires: datetime
    ) -> None:
        self.conn.execute(
            insert(clinician_sessions).values(
                token_hash=token_hash,
                username=username,
                csrf_token=csrf_token,
                created_at=now,
                last_seen_at=now,
                expires_at=expires,
            )
        )

    def find(self, token_hash: bytes) -> Any:
        """The session with its clinician and institution, or None."""
        s, c = clinician_sessions.c, clinicians.c
        return self.conn.execute(
            select(
                s.username,
                s.csrf_token,
                s.last_seen_at,
                s.expires_at,
                c.display_name,
                c.institution_code,
                c.active,
                c.created_at,
                institutions.c.name.label("institution_name"),
                institutions.c.active.label("institution_active"),
            )
            .join(clinicians, clinicians.c.username == s.username)
            .join(institutions, institutions.c.code == c.institution_code)
            .where(s.token_hash == token_hash)
        ).first()

    def touch(self, token_hash: bytes, now: datetime) -> None:
        self.conn.execute(
            update(clinician_sessions)
            .where(clinician_sessions.c.token_hash == token_hash)
            .values(last_seen_at=now)
        )

    def remove(self, token_hash: bytes) -> bool:
        result = self.conn.execute(
            delete(clinician_sessions).where(clinician_sessions.c.token_hash == token_hash)
        )
        return result.rowcount == 1

    def remove_for(self, username: str) -> int:
        result = self.conn.execute(
            delete(clinician_sessions).where(clinician_sessions.c.username == username)
        )
        return result.rowcount

    def remove_expired(self, now: datetime) -> int:
        result = self.conn.execute(
            delete(clinician_sessions).where(clinician_sessions.c.expires_at <= now)
        )
        return result.rowcount
