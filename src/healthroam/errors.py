"""The one error hierarchy. Each error knows its HTTP status and FHIR issue code.

Entry points (``api/errors.py`` for HTTP, the HL7 gateway, the CLI) turn these into their
protocol's shape; domain code only raises them.
"""

from __future__ import annotations


class HealthroamError(Exception):
    """Base of every error healthroam reports to a caller."""

    status: int = 500
    code: str = "exception"  # FHIR IssueType
    title: str = "Internal error"

    def __init__(self, detail: str, *, expression: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.expression = expression  # the offending field, FHIRPath-like (e.g. Patient.birthDate)


class InvalidInput(HealthroamError):
    status, code, title = 400, "invalid", "Invalid input"


class Unprocessable(HealthroamError):
    status, code, title = 422, "processing", "Unprocessable entity"


class NotAuthenticated(HealthroamError):
    status, code, title = 401, "login", "Not authenticated"


class Forbidden(HealthroamError):
    status, code, title = 403, "forbidden", "Forbidden"


class NotFound(HealthroamError):
    status, code, title = 404, "not-found", "Not found"


class Gone(HealthroamError):
    status, code, title = 410, "deleted", "Gone"


class Conflict(HealthroamError):
    status, code, title = 409, "conflict", "Conflict"


class PreconditionFailed(HealthroamError):
    status, code, title = 412, "conflict", "Precondition failed"


class Unavailable(HealthroamError):
    """The platform cannot take this request now; the same request later can succeed."""

    status, code, title = 503, "transient", "Service unavailable"


class OAuthError(HealthroamError):
    """An error at the token endpoint, carrying the RFC 6749 ``error`` code."""

    status, code, title = 400, "security", "Token request refused"

    def __init__(self, oauth_error: str, detail: str, *, status: int = 400) -> None:
        super().__init__(detail)
        self.oauth_error = oauth_error
        self.status = status
