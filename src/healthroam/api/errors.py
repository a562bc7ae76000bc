"""The only place errors become HTTP: OperationOutcome under /fhir, problem JSON elsewhere."""

from __future__ import annotations

import logging
import traceback
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from healthroam.errors import HealthroamError, NotAuthenticated, OAuthError

log = logging.getLogger("healthroam.api")

FHIR_JSON = "application/fhir+json; charset=utf-8"
PROBLEM_JSON = "application/problem+json"
_HTTP_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    410: "deleted",
    412: "conflict",
    413: "too-long",
    415: "not-supported",
    422: "processing",
    429: "throttled",
}


def is_fhir(request: Request) -> bool:
    return request.url.path == "/fhir" or request.url.path.startswith("/fhir/")


def operation_outcome(
    status: int, code: str, diagnostics: str, expression: str | None = None
) -> dict[str, Any]:
    issue: dict[str, Any] = {
        "severity": "error" if status < 500 else "fatal",
        "code": code,
        "diagnostics": diagnostics,
    }
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def error_response(
    request: Request,
    status: int,
    code: str,
    title: str,
    detail: str,
    expression: str | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    if is_fhir(request):
        return JSONResponse(
            operation_outcome(status, code, detail, expression),
            status_code=status,
            media_type=FHIR_JSON,
            headers=headers,
        )
    body: dict[str, Any] = {
        "type": f"urn:healthroam:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    if expression:
        body["field"] = expression
    body.update(extra or {})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


async def _healthroam_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HealthroamError)
    extra = None
    if isinstance(exc, OAuthError):
        # RFC 6749 section 5.2 fields, beside the problem fields.
        extra = {"error": exc.oauth_error, "error_description": exc.detail}
    response = error_response(
        request, exc.status, exc.code, exc.title, exc.detail, exc.expression, extra
    )
    if isinstance(exc, OAuthError) and exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="healthroam"'
    if isinstance(exc, NotAuthenticated):
        response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return response


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "exception")
    detail = exc.detail if isinstance(exc.detail, str) else "request refused"
    response = error_response(request, exc.status_code, code, detail, detail)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    location = ".".join(str(part) for part in first.get("loc", ()))
    return error_response(
        request, 400, "invalid", "Invalid request", f"{location}: {first.get('msg')}", location
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Log where it failed, never the message: driver errors can quote personal data.
    frames = traceback.extract_tb(exc.__traceback__)
    where = "; ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in frames[-5:])
    log.error(
        "unhandled %s on %s %s at %s", type(exc).__name__, request.method, request.url.path, where
    )
    return error_response(
        request, 500, "exception", "Internal error", "internal error; the incident was logged"
    )


# The answer to a HealthroamError, for code that handles a request outside the routes (the
# card verification fast path in api/cards.py).
healthroam_error_response = _healthroam_error


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HealthroamError, _healthroam_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
