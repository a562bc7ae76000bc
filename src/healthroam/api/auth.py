"""Request authentication: bearer token -> Principal, with purpose of use and end user."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import replace

import anyio
from fastapi import Depends, Request

from healthroam.bootstrap import Platform
from healthroam.errors import InvalidInput, NotAuthenticated
from healthroam.records.service import require
from healthroam.security.model import Principal

# HL7 v3 PurposeOfUse codes a caller may state (X-Purpose-Of-Use header).
PURPOSES = frozenset(
    {
        "TREAT",
        "ETREAT",
        "HPAYMT",
        "HOPERAT",
        "PUBHLTH",
        "HRESCH",
        "PATRQT",
        "HMARKT",
        "SYSDEV",
        "COVERAGE",
        "HSYSADMIN",
        "LEGAL",
        "PATADMIN",
        "CAREMGT",
        "TRANSRCH",
        "BTG",
    }
)
END_USER = re.compile(r"^[\w.@:/-]{1,200}$")


def platform_of(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthenticated("a bearer access token is required (POST /auth/token)")
    return token.strip()


def current_principal(request: Request) -> Principal:
    """FastAPI dependency: every protected route takes the caller from here."""
    principal = platform_of(request).auth.authenticate(bearer_token(request))
    return in_context(request, principal)


def in_context(request: Request, principal: Principal) -> Principal:
    """The principal with the request's purpose of use, end user and source address."""
    purpose = request.headers.get("x-purpose-of-use")
    if purpose is not None and purpose not in PURPOSES:
        raise InvalidInput(
            "X-Purpose-Of-Use must be an HL7 v3 PurposeOfUse code such as TREAT",
            expression="X-Purpose-Of-Use",
        )
    end_user = request.headers.get("x-end-user")
    if end_user is not None and not END_USER.match(end_user):
        raise InvalidInput(
            "X-End-User must be an identifier of the person acting", expression="X-End-User"
        )
    return replace(
        principal,
        purpose_of_use=purpose or platform_of(request).settings.default_purpose_of_use,
        end_user=end_user,
        source_address=request.client.host if request.client else None,
        break_glass_reason=request.headers.get("x-break-glass-reason"),
    )


def scoped(resource_type: str, interaction: str) -> Callable[[Principal], Principal]:
    """A dependency that authenticates and checks a scope before the body is even read."""

    def dependency(principal: Principal = Depends(current_principal)) -> Principal:  # noqa: B008
        require(principal, resource_type, interaction)
        return principal

    return dependency


async def cached_principal(request: Request) -> Principal:
    """Like :func:`current_principal`, on the event loop and without a database transaction
    per request (the FHIR routes): the token's signature is checked once per token and the
    client's active state is read at most once per ``client_state_ttl`` (1 s) per process, as
    on the card verification route. Disabling a client in this process takes effect at once
    (``AuthService.forget_client``); in another server process within that second."""
    auth = platform_of(request).auth
    token = auth.token(bearer_token(request))
    active = auth.cached_client_active(token.client_id)
    if active is None:
        active = await anyio.to_thread.run_sync(auth.client_active, token.client_id)
    if not active:
        raise NotAuthenticated("the client that holds this token is disabled")
    return in_context(request, auth.principal(token))


def cached_scoped(resource_type: str, interaction: str) -> Callable[..., Awaitable[Principal]]:
    """:func:`scoped` over :func:`cached_principal`."""

    async def dependency(principal: Principal = Depends(cached_principal)) -> Principal:  # noqa: B008
        require(principal, resource_type, interaction)
        return principal

    return dependency
