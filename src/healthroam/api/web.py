"""The clinician page (/clinician): sign in, find a patient by card scan or master index ID,
read the record summary from every hospital, break the glass with a stated reason.

Server-rendered HTML (``web/``), a session cookie whose token is stored only as a hash, a CSRF
token in every POST form, strict security headers and ``no-store`` on every page. The routes
authenticate by that session, not by a bearer token, so they are not in ``app.ROUTERS``.
Handlers that read a form are async; their database and Argon2 work runs in the thread pool so
it never blocks the event loop.
"""

from __future__ import annotations

import re
import secrets
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from healthroam.api.auth import platform_of
from healthroam.clinicians.model import ClinicianSession
from healthroam.clinicians.service import LoginRefused
from healthroam.errors import (
    Forbidden,
    HealthroamError,
    InvalidInput,
    NotAuthenticated,
    NotFound,
)
from healthroam.security.model import Principal
from healthroam.web.messages import language, translator
from healthroam.web.render import render, static_file
from healthroam.web.views import SummaryLike, summary_view

ROOT = "/clinician"
SESSION_COOKIE = "hr_session"
LOGIN_COOKIE = "hr_login"  # double-submit CSRF token of the sign-in form
LANG_COOKIE = "lang"
PURPOSES = ("outpatient", "emergency", "inpatient", "examination", "public-health")
TERMINAL = "WEB"  # card-use terminal code of the clinician page
_MID = re.compile(r"^[0-9A-Fa-f]{64}$")
MAX_FORM_BYTES = 16_384

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make Origin "null"
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}

router = APIRouter(prefix=ROOT, include_in_schema=False)


# --- helpers -----------------------------------------------------------------------------------


def _lang(request: Request) -> tuple[str, bool]:
    """The page language and whether the query asked to change it (then set the cookie)."""
    asked = request.query_params.get("lang")
    if asked is not None:
        return language(asked), True
    return language(request.cookies.get(LANG_COOKIE)), False


def _secure(request: Request) -> bool:
    return request.url.scheme == "https" or platform_of(
        request
    ).settings.public_base_url.startswith("https:")


def _finish(request: Request, response: Response, *, cache: bool = False) -> Response:
    response.headers.update(SECURITY_HEADERS)
    if not cache:
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
    lang, changed = _lang(request)
    if changed:
        response.set_cookie(
            LANG_COOKIE,
            lang,
            max_age=365 * 86_400,
            path=ROOT,
            secure=_secure(request),
            httponly=True,
            samesite="strict",
        )
    return response


def _page(
    request: Request,
    template: str,
    *,
    status: int = 200,
    session: ClinicianSession | None = None,
    switch_path: str | None = None,
    **context: Any,
) -> Response:
    """Render a page. The language switch links to this page again, or, for an answer to a
    POST, to ``switch_path`` (a page that can be fetched again)."""
    lang, _ = _lang(request)
    here = request.url.path if request.method == "GET" else (switch_path or ROOT + "/")
    html = render(template, lang, root=ROOT, session=session, here=here, **context)
    return _finish(request, HTMLResponse(html, status_code=status))


def _redirect(request: Request, path: str) -> Response:
    return _finish(request, RedirectResponse(ROOT + path, status_code=303))


def _to_login(request: Request, expired: bool) -> Response:
    response = _redirect(request, "/login" + ("?expired=1" if expired else ""))
    if expired:
        response.delete_cookie(SESSION_COOKIE, path=ROOT)
    return response


def _session(request: Request) -> ClinicianSession:
    return platform_of(request).clinicians.session(request.cookies.get(SESSION_COOKIE))


def _address(request: Request) -> str | None:
    return request.client.host if request.client else None


def _principal(request: Request, session: ClinicianSession) -> Principal:
    return platform_of(request).clinicians.principal(session, _address(request))


async def _form(request: Request) -> dict[str, str]:
    length = request.headers.get("content-length")  # browsers always send it for a form
    if length is None or not length.isdigit() or int(length) > MAX_FORM_BYTES:
        raise InvalidInput("a form of at most 16 KiB with a Content-Length", expression="form")
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("application/x-www-form-urlencoded"):
        raise InvalidInput("expected a form", expression="form")
    form = await request.form(max_files=0, max_fields=20)
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _same_origin(request: Request) -> bool:
    """Browsers send Origin on POST; when present it must be this server."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    parts = urlsplit(origin)
    return parts.netloc == request.headers.get("host", "")


def _error(request: Request, exc: HealthroamError, session: ClinicianSession | None) -> Response:
    message = {
        404: "error.not_found",
        403: "error.forbidden",
    }.get(exc.status, "error.invalid")
    detail = exc.detail if message == "error.invalid" else ""
    status = exc.status if 400 <= exc.status < 600 else 400
    return _page(
        request, "error.html", status=status, session=session, message=message, detail=detail
    )


def _render_summary(
    request: Request,
    session: ClinicianSession,
    summary: SummaryLike,
    switch_path: str | None = None,
) -> Response:
    return _page(
        request,
        "summary.html",
        session=session,
        switch_path=switch_path,
        view=summary_view(summary),
    )


# --- routes ------------------------------------------------------------------------------------


@router.get("/static/{name}")
def static(name: str, request: Request) -> Response:
    found = static_file(name)
    if found is None:
        return _finish(request, Response(status_code=404))
    body, media_type = found
    response = Response(body, media_type=media_type)
    response.headers["Cache-Control"] = "public, max-age=3600"
    return _finish(request, response, cache=True)


@router.get("/")
def home(request: Request) -> Response:
    try:
        session = _session(request)
    except NotAuthenticated:
        return _to_login(request, expired=False)
    return _page(
        request, "lookup.html", session=session, message=None, detail="", purposes=PURPOSES
    )


@router.get("/login")
def login_form(request: Request) -> Response:
    message = "login.expired" if request.query_params.get("expired") else None
    return _login_page(request, message, 200)


def _login_page(request: Request, message: str | None, status: int) -> Response:
    token = secrets.token_urlsafe(32)
    response = _page(
        request,
        "login.html",
        status=status,
        switch_path=ROOT + "/login",
        message=message,
        login_csrf=token,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=3600,
        path=ROOT,
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    try:
        form = await _form(request)
    except InvalidInput:
        return _login_page(request, "login.bad_form", 400)
    expected = request.cookies.get(LOGIN_COOKIE)
    submitted = form.get("csrf", "")
    if (
        not expected
        or not secrets.compare_digest(expected.encode(), submitted.encode())
        or not _same_origin(request)
    ):
        return _login_page(request, "login.bad_form", 403)
    clinicians = platform_of(request).clinicians
    try:
        signed_in = await run_in_threadpool(
            clinicians.login,
            form.get("username", "")[:200],
            form.get("password", "")[:1024],
            source_address=_address(request),
        )
    except LoginRefused as exc:
        message = {"locked": "login.locked", "throttled": "login.throttled"}.get(
            exc.reason, "login.refused"
        )
        return _login_page(request, message, 429 if exc.reason == "throttled" else 401)
    response = _redirect(request, "/")
    response.set_cookie(
        SESSION_COOKIE,
        signed_in.token,
        path=ROOT,
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )
    response.delete_cookie(LOGIN_COOKIE, path=ROOT)
    return response


async def _checked_post(request: Request) -> tuple[ClinicianSession, dict[str, str]]:
    """The session and form of a POST whose CSRF token and origin are right."""
    session = await run_in_threadpool(_session, request)
    form = await _form(request)
    if not _same_origin(request) or not platform_of(request).clinicians.csrf_ok(
        session, form.get("csrf")
    ):
        raise Forbidden("the form's CSRF token does not match this session", expression="csrf")
    return session, form


@router.post("/logout")
async def logout(request: Request) -> Response:
    try:
        await _checked_post(request)
    except NotAuthenticated:
        return _to_login(request, expired=False)
    except HealthroamError as exc:
        return _error(request, exc, None)
    await run_in_threadpool(
        platform_of(request).clinicians.logout,
        request.cookies.get(SESSION_COOKIE),
        source_address=_address(request),
    )
    response = _redirect(request, "/login")
    response.delete_cookie(SESSION_COOKIE, path=ROOT)
    return response


@router.post("/scan")
async def scan(request: Request) -> Response:
    session: ClinicianSession | None = None
    try:
        session, form = await _checked_post(request)
        purpose = form.get("purpose", "outpatient")
        if purpose not in PURPOSES:
            raise InvalidInput("unknown visit type", expression="purpose")
        _verification, checked_in = await run_in_threadpool(
            platform_of(request).care.check_in,
            _principal(request, session),
            text=form.get("code", "").strip(),
            purpose=purpose,
            terminal=TERMINAL,
        )
    except NotAuthenticated:
        return _to_login(request, expired=True)
    except HealthroamError as exc:
        if session is None:
            return _error(request, exc, session)
        reason = getattr(exc, "reason", None)
        if reason is None:
            detail = exc.detail
        else:
            texts = translator(_lang(request)[0])
            detail = f"{texts.get(f'scan.reason.{reason}', texts['scan.reason.invalid'])} "
            detail += f"({reason})"
        return _page(
            request,
            "lookup.html",
            status=exc.status,
            session=session,
            message="scan.refused",
            detail=detail,
            purposes=PURPOSES,
        )
    return _redirect(request, f"/patients/{checked_in.master_index_id}")


@router.post("/open")
async def open_patient(request: Request) -> Response:
    try:
        _session_checked, form = await _checked_post(request)
        mid = form.get("mid", "").strip().upper()
        if not _MID.match(mid):
            raise InvalidInput("a master index ID is 64 hexadecimal characters", expression="mid")
    except NotAuthenticated:
        return _to_login(request, expired=True)
    except HealthroamError as exc:
        return _error(request, exc, None)
    return _redirect(request, f"/patients/{mid}")


@router.get("/patients/{mid}")
def patient(mid: str, request: Request) -> Response:
    try:
        session = _session(request)
    except NotAuthenticated:
        return _to_login(request, expired=True)
    try:
        if not _MID.match(mid):
            raise NotFound("no such patient", expression="mid")
        summary = platform_of(request).care.summary(_principal(request, session), mid)
    except Forbidden:
        return _page(
            request, "break_glass.html", status=403, session=session, mid=mid, message=None
        )
    except HealthroamError as exc:
        return _error(request, exc, session)
    return _render_summary(request, session, summary)


@router.post("/patients/{mid}/break-glass")
async def break_glass(mid: str, request: Request) -> Response:
    session: ClinicianSession | None = None
    try:
        session, form = await _checked_post(request)
        if not _MID.match(mid):
            raise NotFound("no such patient", expression="mid")
        reason = " ".join(form.get("reason", "").split())
        if not 5 <= len(reason) <= 500:
            return _page(
                request,
                "break_glass.html",
                status=400,
                session=session,
                switch_path=f"{ROOT}/patients/{mid}",
                mid=mid,
                message="btg.reason_required",
            )
        summary = await run_in_threadpool(
            platform_of(request).care.summary,
            _principal(request, session),
            mid,
            break_glass_reason=reason,
        )
    except NotAuthenticated:
        return _to_login(request, expired=True)
    except HealthroamError as exc:
        return _error(request, exc, session)
    return _render_summary(request, session, summary, switch_path=f"{ROOT}/patients/{mid}")
