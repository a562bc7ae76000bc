"""POST /auth/token: OAuth 2.0 client credentials (client_secret_basic, private_key_jwt)."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import parse_qs, unquote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from healthroam.api.auth import platform_of
from healthroam.errors import OAuthError
from healthroam.security.audit import Action, Outcome
from healthroam.security.model import Principal

router = APIRouter(tags=["auth"])


def _basic(header: str | None) -> tuple[str, str] | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise OAuthError("invalid_client", "Authorization must use the Basic scheme", status=401)
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthError("invalid_client", "malformed Basic credentials", status=401) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthError("invalid_client", "malformed Basic credentials", status=401)
    # RFC 6749 2.3.1: both parts are form-urlencoded before Basic encoding.
    return unquote(client_id), unquote(secret)


@router.post("/auth/token")
async def token(request: Request) -> JSONResponse:
    """Issue a short-lived access token to an authenticated client."""
    if request.headers.get("content-type", "").split(";")[0].strip() != (
        "application/x-www-form-urlencoded"
    ):
        raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
    form = {
        k: v[0]
        for k, v in parse_qs(
            (await request.body()).decode("utf-8", "replace"), keep_blank_values=True
        ).items()
    }
    platform = platform_of(request)
    try:
        grant = platform.auth.grant(
            grant_type=form.get("grant_type"),
            scope=form.get("scope"),
            basic=_basic(request.headers.get("authorization")),
            assertion_type=form.get("client_assertion_type"),
            assertion=form.get("client_assertion"),
        )
    except OAuthError as exc:
        platform.audit.record(
            [
                platform.audit.event(
                    None,
                    action=Action.EXECUTE,
                    event_type="auth",
                    subtype="token",
                    outcome=Outcome.MINOR_FAILURE,
                    detail=exc.oauth_error,
                )
            ]
        )
        raise
    who = Principal(
        grant.client_id,
        grant.institution_code,
        grant.scopes,
        source_address=request.client.host if request.client else None,
    )
    platform.audit.record(
        [platform.audit.event(who, action=Action.EXECUTE, event_type="auth", subtype="token")]
    )
    return JSONResponse(
        {
            "access_token": grant.access_token,
            "token_type": "Bearer",
            "expires_in": grant.expires_in,
            "scope": str(grant.scopes),
        },
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )
