"""POST /cards/verify through the lean ASGI handler (``VerifyFastPath``) answers exactly as the
FastAPI route does, on SQLite and PostgreSQL: accepted uses, refusals, auth and scope errors,
header errors and bodies the handler passes on to the route; every use is logged either way."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from healthroam.api.app import create_app
from healthroam.api.cards import VerifyFastPath, _Terminals, verify_fields
from healthroam.bootstrap import Platform, build
from healthroam.config import Settings
from healthroam.db.tables_cards import card_uses

from .test_card_verification import active_card, code_made
from helpers import Province


@pytest.fixture
def slow(settings: Settings, keyed: Platform) -> Iterator[TestClient]:
    """A second server on the same database with the fast path turned off."""
    off = settings.model_copy(update={"card_verify_fast_path": False})
    with build(off) as other, TestClient(create_app(other), raise_server_exceptions=False) as c:
        yield c


def fast_path_of(http: TestClient) -> VerifyFastPath:
    app: Any = http.app
    layer = app.middleware_stack
    while not isinstance(layer, VerifyFastPath):
        layer = layer.app
    return layer


def answer(response: Any) -> tuple[int, str | None, str | None, Any]:
    return (
        response.status_code,
        response.headers.get("content-type"),
        response.headers.get("www-authenticate"),
        response.json(),
    )


def body(text: Any, **more: Any) -> dict[str, Any]:
    return {"text": text, "step": "01", "channel": "02", "terminal": "KIOSK-9", **more}


def test_fast_path_answers_exactly_like_the_route(
    http: TestClient, slow: TestClient, keyed: Platform, province: Province
) -> None:
    card_id = active_card(keyed)
    now = int(time.time())
    terminal = {"Authorization": f"Bearer {province.token(province.client('system/Card.r'))}"}
    clerk = province.headers("system/Card.r system/Patient.r")
    codes = iter(code_made(keyed, card_id, now - s) for s in range(20))
    spent = next(codes)
    assert http.post("/cards/verify", json=body(spent), headers=terminal).status_code == 200
    cases: list[tuple[dict[str, str], Any]] = [
        (terminal, lambda: {"json": body(next(codes))}),  # accepted, no demographics
        (clerk, lambda: {"json": body(next(codes))}),  # accepted with the holder
        (terminal, lambda: {"json": body(spent)}),  # replayed
        (terminal, lambda: {"json": body("hello")}),  # not a card code
        (terminal, lambda: {"json": body(next(codes), step="77")}),  # unknown step code
        ({}, lambda: {"json": body(next(codes))}),  # no token
        ({"Authorization": "Bearer nonsense"}, lambda: {"json": body(next(codes))}),
        (province.headers("system/Patient.r"), lambda: {"json": body(next(codes))}),  # scope
        ({**terminal, "X-Purpose-Of-Use": "SHOPPING"}, lambda: {"json": body(next(codes))}),
        (terminal, lambda: {"json": body(next(codes), extra="x")}),  # passed to the route
        (terminal, lambda: {"json": body(12345)}),
        (terminal, lambda: {"json": {"text": next(codes)}}),
        (terminal, lambda: {"json": body("A" * 5000)}),
        (
            terminal,
            lambda: {"content": b'{"text": "', "headers": {"content-type": "application/json"}},
        ),
        (terminal, lambda: {"content": b"text", "headers": {"content-type": "text/plain"}}),
    ]
    for headers, make in cases:
        fast_kwargs, slow_kwargs = make(), make()
        fast_kwargs["headers"] = {**headers, **fast_kwargs.get("headers", {})}
        slow_kwargs["headers"] = {**headers, **slow_kwargs.get("headers", {})}
        fast = http.post("/cards/verify", **fast_kwargs)
        route = slow.post("/cards/verify", **slow_kwargs)
        assert answer(fast) == answer(route), (fast.text, route.text)
    assert fast_path_of(http).terminals.principals  # the fast path did answer
    assert not fast_path_of(slow).terminals.principals  # turned off: everything went to the route
    with keyed.db.transaction(readonly=True) as conn:
        logged = conn.execute(select(func.count()).select_from(card_uses)).scalar_one()
    # 1 first use + per server: 2 accepted, 1 replayed, 1 bad prefix (logged refusals); the
    # unknown step, auth, scope, header and body errors are refused before any use exists.
    assert logged == 1 + 2 * 4


def test_fields_the_fast_path_takes() -> None:
    ok = b'{"text":"x","step":"01","channel":"02","terminal":"T"}'
    assert verify_fields("application/json", ok) == ("x", "01", "02", "T")
    assert verify_fields("Application/JSON; charset=utf-8", ok) == ("x", "01", "02", "T")
    assert verify_fields("text/plain", ok) is None
    assert verify_fields(None, ok) is None
    assert verify_fields("application/json", b"") is None
    assert verify_fields("application/json", b"[1, 2]") is None
    assert verify_fields("application/json", b'{"text":"x"}') is None
    assert verify_fields("application/json", ok[:-1] + b',"more":1}') is None
    assert verify_fields("application/json", ok.replace(b'"01"', b"1")) is None
    assert verify_fields("application/json", b"\xff") is None


def test_waiting_requests_share_one_read_of_the_client_state() -> None:
    class Auth:
        reads = 0

        def client_active(self, client_id: str) -> bool:
            Auth.reads += 1
            time.sleep(0.05)  # a database round trip
            return client_id == "on"

    terminals = _Terminals()

    async def many() -> list[bool]:
        auth: Any = Auth()
        return await asyncio.gather(
            *(terminals.client_active(auth, c) for c in ["on"] * 10 + ["off"] * 5)
        )

    # On a thread of its own: an earlier test in this worker (Playwright's sync API) may have
    # left an event loop running on this one, and asyncio.run refuses to nest.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert pool.submit(asyncio.run, many()).result() == [True] * 10 + [False] * 5
    assert Auth.reads == 2  # one per client
    assert terminals.reads == {}  # nothing left in flight
