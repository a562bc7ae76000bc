"""Health card routes (/cards): verification for hospital terminals, the trust list, card
lifecycle, usage summaries.

Scopes (SMART v2 style, resource types ``Card`` and ``CardUsage``): ``system/Card.r`` verify,
read, trust list and dynamic codes; ``system/Card.c`` apply; ``system/Card.u`` lifecycle
actions; ``system/Card.s`` list a person's cards; ``system/CardUsage.r`` daily usage. A
verifying terminal that also holds ``system/Patient.r`` sees the holder's demographics.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from datetime import datetime
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from healthroam.api.auth import bearer_token, in_context, platform_of, scoped
from healthroam.api.errors import error_response, healthroam_error_response
from healthroam.cards.model import STEP_CODES, Card, CardAction, CardEvent
from healthroam.cards.service import CardRefused, Verification
from healthroam.errors import HealthroamError, NotAuthenticated
from healthroam.records.service import require
from healthroam.security.model import Principal
from healthroam.security.service import AuthService

router = APIRouter(prefix="/cards", tags=["cards"])

CardReader = Annotated[Principal, Depends(scoped("Card", "r"))]
VERIFY_PATH = "/cards/verify"
TEXT_MAX_LENGTH = 4096
# (bearer token, X-Purpose-Of-Use, X-End-User, client address) -> principal in that context.
_PrincipalKey = tuple[str, str | None, str | None, str | None]
_PRINCIPAL_CACHE_SIZE = 4096


async def verifying_terminal(request: Request) -> Principal:
    """The caller of ``/cards/verify``, checked on the event loop: the token's signature is
    checked once per token and the client's active state is cached briefly; the verification's
    own transaction re-checks the client (``check_client``), so nothing is served to a client
    disabled meanwhile, in this process or another."""
    return await _terminal(request, None)


class _Terminals:
    """What the fast path remembers between verifications: the principal in its request
    context per token and context headers (it depends on nothing else), and the client-state
    read in flight per client (when the cached state expires, the requests waiting at that
    moment share one read instead of each sending its own)."""

    def __init__(self) -> None:
        self.principals: dict[_PrincipalKey, Principal] = {}
        self.reads: dict[str, asyncio.Future[bool]] = {}

    async def client_active(self, auth: AuthService, client_id: str) -> bool:
        read = self.reads.get(client_id)
        if read is None:
            read = asyncio.ensure_future(anyio.to_thread.run_sync(auth.client_active, client_id))
            self.reads[client_id] = read
            read.add_done_callback(lambda _done: self.reads.pop(client_id, None))
        return await asyncio.shield(read)  # a caller that goes away leaves the read running


async def _terminal(request: Request, terminals: _Terminals | None) -> Principal:
    """:func:`verifying_terminal`, with what the fast path remembers (``terminals``). The
    token's expiry and the client's state are checked on every call all the same; the scope
    check of a remembered principal was passed when it was remembered."""
    auth = platform_of(request).auth
    bearer = bearer_token(request)
    token = auth.token(bearer)
    active = auth.cached_client_active(token.client_id)
    if active is None:
        if terminals is None:
            active = await anyio.to_thread.run_sync(auth.client_active, token.client_id)
        else:
            active = await terminals.client_active(auth, token.client_id)
    if not active:
        raise NotAuthenticated("the client that holds this token is disabled")
    if terminals is None:
        principal = in_context(request, auth.principal(token))
        require(principal, "Card", "r")
        return principal
    headers = request.headers
    key = (
        bearer,
        headers.get("x-purpose-of-use"),
        headers.get("x-end-user"),
        request.client.host if request.client else None,
    )
    known = terminals.principals.get(key)
    if known is None:
        known = in_context(request, auth.principal(token))
        require(known, "Card", "r")
        if len(terminals.principals) >= _PRINCIPAL_CACHE_SIZE:
            terminals.principals.clear()
        terminals.principals[key] = known
    return known


Terminal = Annotated[Principal, Depends(verifying_terminal)]
CardCreator = Annotated[Principal, Depends(scoped("Card", "c"))]
CardUpdater = Annotated[Principal, Depends(scoped("Card", "u"))]
CardSearcher = Annotated[Principal, Depends(scoped("Card", "s"))]
UsageReader = Annotated[Principal, Depends(scoped("CardUsage", "r"))]


class _Body(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")


class VerifyBody(_Body):
    text: str = Field(max_length=TEXT_MAX_LENGTH, description="The scanned QR text or credential.")
    step: str = Field(description="Card-use step code (用卡环节), e.g. 01 registration.")
    channel: str = Field(description="Channel code, e.g. 01 counter, 02 kiosk.")
    terminal: str = Field(description="The terminal's code within its institution.")


class ApplyBody(_Body):
    master_index_id: str = Field(alias="masterIndexId", max_length=64)
    kind: str = Field(description="physical, electronic or temporary")
    card_no: str | None = Field(default=None, alias="cardNo", max_length=32)
    region: str | None = Field(default=None, max_length=6)
    reason: str | None = Field(default=None, max_length=500)


class ActionBody(_Body):
    reason: str | None = Field(default=None, max_length=500)


class ReissueBody(ActionBody):
    card_no: str | None = Field(default=None, alias="cardNo", max_length=32)


def _time(value: datetime) -> str:
    return value.isoformat()


def card_json(card: Card) -> dict[str, Any]:
    return {
        "id": card.id,
        "kind": card.kind.value,
        "status": card.status.value,
        "statusVersion": card.status_version,
        "masterIndexId": card.master_index_id,
        "cardNo": card.card_no,
        "ehcId": card.ehc_id,
        "idType": card.id_type,
        "region": card.region,
        "issuer": card.issuer,
        "validFrom": _time(card.valid_from),
        "validUntil": _time(card.valid_until),
        "issuingKeyId": card.issuing_key_id,
        "staticCode": card.static_code,
        "credential": card.credential,
        "replaces": card.replaces,
        "replacedBy": card.replaced_by,
    }


def event_json(event: CardEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "occurredAt": _time(event.occurred_at),
        "action": event.action,
        "from": event.from_status,
        "to": event.to_status,
        "statusVersion": event.status_version,
        "client": event.client_id,
        "institution": event.institution_code,
        "endUser": event.end_user,
        "reason": event.reason,
    }


def verification_json(result: Verification, step: str) -> dict[str, Any]:
    card = result.card
    body: dict[str, Any] = {
        "accepted": True,
        "codeKind": result.code_kind,
        "step": {"code": step, "name": STEP_CODES[step][0]},
        "card": {
            "id": card.id,
            "kind": card.kind.value,
            "status": card.status.value,
            "statusVersion": card.status_version,
            "validUntil": _time(card.valid_until),
            "masterIndexId": card.master_index_id,
        },
    }
    if result.holder is not None:
        holder = result.holder
        body["patient"] = {
            "name": holder.name,
            "sex": holder.sex,
            "birthDate": holder.birth_date.isoformat() if holder.birth_date else None,
            "maskedIdNumber": result.masked_id_number,
        }
    return body


class _Json(JSONResponse):
    """A JSONResponse rendered by one shared encoder (the same bytes as JSONResponse's)."""

    def render(self, content: Any) -> bytes:
        return _ENCODE(content).encode("utf-8")


_ENCODE = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
).encode


@router.post("/verify", summary="Verify a scanned card code at a terminal (用卡验证)")
async def verify(body: VerifyBody, request: Request, principal: Terminal) -> JSONResponse:
    outcome = await _verified(request, principal, body.text, body.step, body.channel, body.terminal)
    if isinstance(outcome, JSONResponse):
        return outcome
    return _Json(verification_json(outcome, body.step))


async def _verified(
    request: Request, principal: Principal, text: str, step: str, channel: str, terminal: str
) -> Verification | JSONResponse:
    """The accepted verification, or the answer refusing it."""
    try:
        return await platform_of(request).cards.verify_async(
            principal,
            text=text,
            step=step,
            channel=channel,
            terminal=terminal,
            check_client=True,
        )
    except CardRefused as exc:
        return card_refused_response(request, exc)


def card_refused_response(request: Request, exc: CardRefused) -> JSONResponse:
    """The answer to a refused card: the error shape with the machine-readable ``reason``."""
    return error_response(
        request, exc.status, exc.code, exc.title, exc.detail, exc.expression, {"reason": exc.reason}
    )


class VerifyFastPath:
    """ASGI middleware answering ``POST /cards/verify`` without FastAPI's routing, dependency
    solving and body model: terminals call it at the highest rate of any route, and that
    machinery cost several times the verification itself (docs/benchmarks.md).

    It runs the route's own code (:func:`verifying_terminal`'s checks in the same order, the
    same service call, the same answers and error handler), so callers see no difference. A
    request it cannot take as is (not ``application/json``, not a JSON object of exactly the
    four string fields, a text too long) is handed to the FastAPI route unchanged, which
    answers it as before (its validation errors included). ``card_verify_fast_path=false``
    turns it off."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.terminals = _Terminals()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != VERIFY_PATH
            or scope["method"] != "POST"
            or scope.get("root_path")
            or not scope["app"].state.platform.settings.card_verify_fast_path
        ):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before its body arrived: nobody to answer
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        request = Request(scope)
        fields = verify_fields(request.headers.get("content-type"), body)
        if fields is None:
            await self.app(scope, _replay(body, receive), send)
            return
        outcome: Verification | Response
        try:
            principal = await _terminal(request, self.terminals)
            outcome = await _verified(request, principal, *fields)
        except HealthroamError as exc:
            outcome = await healthroam_error_response(request, exc)
        if isinstance(outcome, Response):
            await outcome(scope, receive, send)
            return
        # What _Json(...) sends, without building the response object.
        payload = _ENCODE(verification_json(outcome, fields[1])).encode("utf-8")
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(payload)).encode("latin-1")),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def verify_fields(content_type: str | None, body: bytes) -> tuple[str, str, str, str] | None:
    """(text, step, channel, terminal) of a verification body :class:`VerifyBody` accepts
    as is, else None."""
    if not body or content_type is None:
        return None
    if content_type.partition(";")[0].strip().lower() != "application/json":
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if type(data) is not dict or len(data) != 4:
        return None
    text, step = data.get("text"), data.get("step")
    channel, terminal = data.get("channel"), data.get("terminal")
    if (
        type(text) is not str
        or type(step) is not str
        or type(channel) is not str
        or type(terminal) is not str
        or len(text) > TEXT_MAX_LENGTH
    ):
        return None
    return text, step, channel, terminal


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` with the already read body given back first."""
    given = False

    async def replay() -> MutableMapping[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


@router.get("/trust-list", summary="The current signed trust list (COSE_Sign1 bytes)")
def trust_list(request: Request, _principal: CardReader) -> Response:
    return Response(
        platform_of(request).cards.trust_list(),
        media_type='application/cose; cose-type="cose-sign1"',
        headers={"Cache-Control": "no-cache"},
    )


@router.get("/trust-anchors", summary="Root key and certified trust-list keys for terminals")
def trust_anchors(request: Request, _principal: CardReader) -> JSONResponse:
    return JSONResponse(platform_of(request).keys.anchor_bundle())


@router.get("/usage", summary="Card uses per institution and step on one day (用卡监控)")
def usage(
    request: Request,
    principal: UsageReader,
    date: Annotated[str, Query(description="Beijing-time day, YYYY-MM-DD")],
) -> JSONResponse:
    rows = platform_of(request).cards.usage(principal, date)
    return JSONResponse(
        {
            "date": date,
            "rows": [
                {
                    "institution": r.institution_code,
                    "step": r.step_code,
                    "accepted": r.accepted,
                    "refused": r.refused,
                }
                for r in rows
            ],
        }
    )


@router.post("", status_code=201, summary="Apply for a card (申请)")
def apply(body: ApplyBody, request: Request, principal: CardCreator) -> JSONResponse:
    card = platform_of(request).cards.apply(
        principal,
        master_index_id=body.master_index_id,
        kind=body.kind,
        card_no=body.card_no,
        region=body.region,
        reason=body.reason,
    )
    return JSONResponse(card_json(card), status_code=201)


@router.get("", summary="A master person's cards")
def list_cards(
    request: Request,
    principal: CardSearcher,
    master_index_id: Annotated[str, Query(max_length=64)],
) -> JSONResponse:
    found = platform_of(request).cards.list_for(principal, master_index_id)
    return JSONResponse({"cards": [card_json(c) for c in found]})


@router.get("/{card_id}", summary="One card")
def get_card(card_id: str, request: Request, principal: CardReader) -> JSONResponse:
    return JSONResponse(card_json(platform_of(request).cards.get(principal, card_id)))


@router.get("/{card_id}/history", summary="A card's lifecycle events")
def history(card_id: str, request: Request, principal: CardReader) -> JSONResponse:
    events = platform_of(request).cards.history(principal, card_id)
    return JSONResponse({"events": [event_json(e) for e in events]})


@router.post("/{card_id}/$dynamic-code", summary="A fresh dynamic QR code (动态码)")
def dynamic_code(card_id: str, request: Request, principal: CardReader) -> JSONResponse:
    text = platform_of(request).cards.dynamic_code(principal, card_id)
    return JSONResponse({"text": text})


def _action_route(action: CardAction) -> None:
    def handler(
        card_id: str,
        request: Request,
        principal: CardUpdater,
        body: ActionBody | None = None,
    ) -> JSONResponse:
        card = platform_of(request).cards.act(
            principal, card_id, action, body.reason if body else None
        )
        return JSONResponse(card_json(card))

    handler.__name__ = f"card_{action.value.replace('-', '_')}"
    router.add_api_route(
        f"/{{card_id}}/${action.value}",
        handler,
        methods=["POST"],
        summary=f"Card lifecycle: {action.value}",
    )


for _action in CardAction:
    if _action is not CardAction.REISSUE:
        _action_route(_action)


@router.post("/{card_id}/$reissue", status_code=201, summary="Re-issue a card (补卡)")
def reissue(
    card_id: str, request: Request, principal: CardUpdater, body: ReissueBody | None = None
) -> JSONResponse:
    card = platform_of(request).cards.reissue(
        principal,
        card_id,
        reason=body.reason if body else None,
        card_no=body.card_no if body else None,
    )
    return JSONResponse(card_json(card), status_code=201)
