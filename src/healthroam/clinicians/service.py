"""Use cases of clinician accounts: add, list, disable, sign in (with lockout), sessions.

A signed-in clinician acts as a :class:`Principal` of their institution whose ``end_user`` is
the clinician's username, so every audit record and card-use entry names the person.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection

from healthroam.clinicians.model import (
    AddressThrottle,
    Clinician,
    ClinicianSession,
    LockoutPolicy,
    SessionPolicy,
    check_password,
    check_username,
)
from healthroam.clinicians.repository import (
    ClinicianRepository,
    LoginFailureRepository,
    SessionRepository,
)
from healthroam.db.engine import Database
from healthroam.errors import Conflict, HealthroamError, InvalidInput, NotAuthenticated, NotFound
from healthroam.security.audit import Action, Outcome
from healthroam.security.model import Principal
from healthroam.security.passwords import hash_secret, verify_secret
from healthroam.security.repository import InstitutionRepository
from healthroam.security.scopes import ScopeSet
from healthroam.security.service import AuditTrail

Clock = Callable[[], datetime]
# The client id under which the platform's own clinician page acts (audit `client_id`).
WEB_CLIENT_ID = "clinician-page"
# A session's last-seen time is written at most this often (not on every page).
TOUCH_EVERY = timedelta(seconds=60)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class LoginRefused(NotAuthenticated):
    """Wrong username or password, a locked or disabled account, or too many attempts."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason  # wrong-credentials | locked | throttled


@dataclass(frozen=True, slots=True)
class SignedIn:
    token: str  # goes into the session cookie; never stored
    session: ClinicianSession


class ClinicianService:
    def __init__(
        self,
        db: Database,
        audit: AuditTrail,
        *,
        scopes: str,
        lockout: LockoutPolicy,
        sessions: SessionPolicy,
        throttle: AddressThrottle,
        clock: Clock = utcnow,
    ) -> None:
        self.db, self.audit, self.clock = db, audit, clock
        self.scopes = ScopeSet.parse(scopes)
        self.lockout, self.sessions, self.throttle = lockout, sessions, throttle

    # --- accounts ------------------------------------------------------------------------------

    def add(
        self, *, username: str, display_name: str, institution_code: str, password: str
    ) -> Clinician:
        clinician = Clinician(
            username=check_username(username),
            display_name=display_name.strip(),
            institution_code=institution_code,
            active=True,
            created_at=self.clock(),
        )
        hashed = hash_secret(check_password(password))
        with self.db.transaction() as conn:
            institution = InstitutionRepository(conn).get(institution_code)
            if institution is None:
                raise NotFound(
                    f"no institution with code {institution_code}", expression="institution"
                )
            if not ClinicianRepository(conn).add(clinician, hashed):
                raise Conflict(f"clinician {username} already exists", expression="username")
            self.audit.append(
                conn,
                [
                    self.audit.event(
                        None,
                        action=Action.CREATE,
                        event_type="admin",
                        subtype="clinician-add",
                        resource_type="Clinician",
                        resource_id=username,
                        detail=f"institution={institution_code}",
                    )
                ],
            )
        return clinician

    def get(self, username: str) -> Clinician:
        with self.db.transaction(readonly=True) as conn:
            clinician = ClinicianRepository(conn).get(username)
        if clinician is None:
            raise NotFound(f"no clinician {username}", expression="username")
        return clinician

    def list(self, institution_code: str | None = None) -> list[Clinician]:
        with self.db.transaction(readonly=True) as conn:
            return ClinicianRepository(conn).list(institution_code)

    def set_active(self, username: str, active: bool) -> None:
        """Disable (ending every open session at once) or enable an account."""
        now = self.clock()
        with self.db.transaction() as conn:
            if not ClinicianRepository(conn).set_active(username, active, now):
                raise NotFound(f"no clinician {username}", expression="username")
            if not active:
                SessionRepository(conn).remove_for(username)
            self.audit.append(
                conn,
                [
                    self.audit.event(
                        None,
                        action=Action.UPDATE,
                        event_type="admin",
                        subtype="clinician-enable" if active else "clinician-disable",
                        resource_type="Clinician",
                        resource_id=username,
                    )
                ],
            )

    def set_password(self, username: str, password: str) -> None:
        hashed = hash_secret(check_password(password))
        with self.db.transaction() as conn:
            if not ClinicianRepository(conn).set_password(username, hashed):
                raise NotFound(f"no clinician {username}", expression="username")
            SessionRepository(conn).remove_for(username)

    # --- signing in ----------------------------------------------------------------------------

    def principal(self, session: ClinicianSession, source_address: str | None) -> Principal:
        """The clinician acting for their institution: audit records name them."""
        return Principal(
            client_id=WEB_CLIENT_ID,
            institution_code=session.clinician.institution_code,
            scopes=self.scopes,
            end_user=session.clinician.username,
            purpose_of_use="TREAT",
            source_address=source_address,
        )

    def _login_event(
        self, username: str, institution: str | None, address: str | None, failure: str | None
    ) -> None:
        who = Principal(
            client_id=WEB_CLIENT_ID,
            institution_code=institution or "",
            scopes=self.scopes,
            end_user=username,
            purpose_of_use="HOPERAT",
            source_address=address,
        )
        record = self.audit.event(
            who if institution else None,
            action=Action.EXECUTE,
            event_type="auth",
            subtype="login",
            outcome=Outcome.SUCCESS if failure is None else Outcome.MINOR_FAILURE,
            resource_type="Clinician",
            resource_id=username if institution else None,
            detail=None if failure is None else f"refused={failure}",
        )
        self.audit.record([record])

    def login(self, username: str, password: str, *, source_address: str | None) -> SignedIn:
        """Check the password (Argon2id) under the lockout rules; open a session."""
        address = hashlib.sha256((source_address or "unknown").encode()).digest()
        try:
            check_username(username)
            valid_name = True
        except InvalidInput:
            valid_name = False
        now = self.clock()
        refused: LoginRefused | None = None
        institution: str | None = None
        with self.db.transaction() as conn:
            # Per source address, in the database: the same limit whichever server process
            # answers (decision 0052).
            by_address = LoginFailureRepository(conn)
            if self.throttle.blocked(by_address.times(address), now.timestamp()):
                raise LoginRefused(
                    "throttled", "too many failed sign-ins from this computer; try again later"
                )
            repo = ClinicianRepository(conn)
            state = repo.login_state(username) if valid_name else None
            locked = (
                state is not None
                and state.locked_until is not None
                and _aware(state.locked_until) > now
            )
            # Always one Argon2 verification, so timing does not tell which usernames exist.
            password_ok = verify_secret(state.password_hash if state else None, password)
            if state is None or not (state.active and state.institution_active):
                refused = LoginRefused("wrong-credentials", "wrong username or password")
            elif locked:
                refused = LoginRefused(
                    "locked", "account locked after repeated wrong passwords; try again later"
                )
            elif not password_ok:
                failures, until = self.lockout.after_failure(state.failed_logins, now)
                repo.set_failures(username, failures, until)
                refused = LoginRefused("wrong-credentials", "wrong username or password")
            else:
                if state.failed_logins or state.locked_until is not None:
                    repo.set_failures(username, 0, None)
            clinician = repo.get(username) if state is not None else None
            if clinician is not None:
                institution = clinician.institution_code
            signed_in: SignedIn | None = None
            if refused is None and clinician is not None:
                signed_in = self._open_session(conn, clinician, now)
            if refused is not None:
                by_address.failed(address, self.throttle, now)
        if refused is not None:
            self._login_event(
                username if valid_name else "-", institution, source_address, refused.reason
            )
            raise refused
        assert signed_in is not None
        self._login_event(username, institution, source_address, None)
        return signed_in

    def _open_session(self, conn: Connection, clinician: Clinician, now: datetime) -> SignedIn:
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        expires = now + self.sessions.absolute
        sessions = SessionRepository(conn)
        sessions.remove_expired(now)
        sessions.add(token_hash(token), clinician.username, csrf, now, expires)
        institution = InstitutionRepository(conn).get(clinician.institution_code)
        name = institution.name if institution else clinician.institution_code
        return SignedIn(token, ClinicianSession(clinician, name, csrf, expires))

    def session(self, token: str | None) -> ClinicianSession:
        """The open session of a cookie's token; NotAuthenticated when none is valid."""
        if not token or len(token) > 100:
            raise NotAuthenticated("sign in first")
        key = token_hash(token)
        now = self.clock()
        with self.db.transaction(readonly=True) as conn:
            row = SessionRepository(conn).find(key)
        if row is None:
            raise NotAuthenticated("sign in first")
        expired = (
            _aware(row.expires_at) <= now or _aware(row.last_seen_at) + self.sessions.idle <= now
        )
        if expired or not (row.active and row.institution_active):
            with self.db.transaction() as conn:
                SessionRepository(conn).remove(key)
            raise NotAuthenticated("the session has ended; sign in again")
        if now - _aware(row.last_seen_at) >= TOUCH_EVERY:
            with self.db.transaction() as conn:
                SessionRepository(conn).touch(key, now)
        clinician = Clinician(
            username=row.username,
            display_name=row.display_name,
            institution_code=row.institution_code,
            active=row.active,
            created_at=row.created_at,
        )
        return ClinicianSession(clinician, row.institution_name, row.csrf_token, row.expires_at)

    def logout(self, token: str | None, *, source_address: str | None) -> None:
        """End the session (idempotent) and audit it."""
        if not token or len(token) > 100:
            return
        try:
            session = self.session(token)
        except HealthroamError:
            return
        with self.db.transaction() as conn:
            SessionRepository(conn).remove(token_hash(token))
            self.audit.append(
                conn,
                [
                    self.audit.event(
                        self.principal(session, source_address),
                        action=Action.EXECUTE,
                        event_type="auth",
                        subtype="logout",
                        resource_type="Clinician",
                        resource_id=session.clinician.username,
                    )
                ],
            )

    @staticmethod
    def csrf_ok(session: ClinicianSession, submitted: str | None) -> bool:
        return submitted is not None and hmac.compare_digest(
            session.csrf_token.encode(), submitted.encode()
        )
