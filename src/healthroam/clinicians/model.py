"""Clinicians, their sessions and the lockout rule: plain data, no framework imports."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from healthroam.errors import InvalidInput

# Lower-case letters, digits and . _ @ - : also a valid X-End-User, so audit records, card use
# logs and API calls name a clinician the same way.
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{1,63}$")
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 256


def check_username(username: str) -> str:
    if not _USERNAME.match(username):
        raise InvalidInput(
            "username must be 2-64 lower-case letters, digits, '.', '_', '@' or '-'",
            expression="username",
        )
    return username


def check_password(password: str) -> str:
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InvalidInput(
            f"password must be {MIN_PASSWORD_LENGTH}-{MAX_PASSWORD_LENGTH} characters",
            expression="password",
        )
    return password


@dataclass(frozen=True, slots=True)
class Clinician:
    """A doctor or nurse who signs in to the clinician page on behalf of one institution."""

    username: str
    display_name: str
    institution_code: str
    active: bool
    created_at: datetime

    def __post_init__(self) -> None:
        check_username(self.username)
        if not self.display_name.strip() or len(self.display_name) > 200:
            raise InvalidInput("display name must be 1-200 characters", expression="display_name")


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    """After ``max_failures`` wrong passwords in a row an account is locked for ``lockout``."""

    max_failures: int
    lockout: timedelta

    def after_failure(self, failures: int, now: datetime) -> tuple[int, datetime | None]:
        """The new failure count and lock end after one more wrong password."""
        failures += 1
        if failures >= self.max_failures:
            return 0, now + self.lockout
        return failures, None


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """A session ends after ``idle`` without a request, and at the latest after ``absolute``."""

    idle: timedelta
    absolute: timedelta


@dataclass(frozen=True, slots=True)
class ClinicianSession:
    """A signed-in clinician: who, for which institution, and the session's CSRF token."""

    clinician: Clinician
    institution_name: str
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class AddressThrottle:
    """Wrong passwords per source address in a sliding window, so one machine cannot try many
    accounts a few times each (password spraying). The rule only: the failure times (seconds)
    of an address are stored in the database, shared by every server process (decision 0052).
    """

    max_failures: int
    window: float  # seconds

    def recent(self, times: Sequence[float], now: float) -> list[float]:
        return [t for t in times if now - t < self.window]

    def blocked(self, times: Sequence[float], now: float) -> bool:
        return len(self.recent(times, now)) >= self.max_failures

    def after_failure(self, times: Sequence[float], now: float) -> list[float]:
        """The times to keep after one more failure: the newest ``max_failures`` in the window
        (older ones cannot change the answer of :meth:`blocked`)."""
        return [*self.recent(times, now), now][-self.max_failures :]
