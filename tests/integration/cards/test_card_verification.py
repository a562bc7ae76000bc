"""Verification in group-committed batches, on SQLite and PostgreSQL: dynamic codes spent in
the database (shared by every service instance and process), concurrent uses of one code,
the client re-check at commit, and the cached token path of POST /cards/verify."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from healthroam.bootstrap import Platform, build
from healthroam.cards.model import CardAction
from healthroam.cards.qr import make_dynamic_code
from healthroam.cards.repository import CardRepository
from healthroam.cards.service import CardRefused
from healthroam.config import Settings
from healthroam.db.tables_cards import card_replays, card_uses
from healthroam.errors import NotAuthenticated
from healthroam.keys.model import KeyPurpose
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet

from .conftest import add_person, principal
from helpers import Province


def active_card(platform: Platform) -> str:
    who = principal()
    card = platform.cards.apply(who, master_index_id=add_person(platform), kind="electronic")
    platform.cards.act(who, card.id, CardAction.ISSUE)
    return platform.cards.act(who, card.id, CardAction.ACTIVATE).id


def code_made(platform: Platform, card_id: str, at: int) -> str:
    """The card's dynamic code made at ``at`` (codes of one card made in the same second are
    identical, so tests that need several give distinct seconds)."""
    key_id, key = platform.keys.symmetric(KeyPurpose.QR)
    ehc_id = platform.cards.get(principal(), card_id).ehc_id or ""
    return make_dynamic_code(ehc_id, key_id, key, at)


def uses(platform: Platform) -> list[tuple[bool, str | None]]:
    with platform.db.transaction(readonly=True) as conn:
        rows = conn.execute(
            select(card_uses.c.accepted, card_uses.c.reason).order_by(card_uses.c.seq)
        )
        return [(bool(r.accepted), r.reason) for r in rows]


def test_a_code_spent_by_one_service_instance_is_refused_by_another(
    keyed: Platform, settings: Settings
) -> None:
    # A second platform on the same database stands for a second server process: its own
    # engine, caches and writer threads; only the database is shared.
    card_id = active_card(keyed)
    now = int(time.time())
    code = code_made(keyed, card_id, now)
    with build(settings) as other:
        accepted = other.cards.verify(principal(), text=code, step="01", channel="02", terminal="A")
        assert accepted.card.id == card_id
        with pytest.raises(CardRefused) as caught:
            keyed.cards.verify(principal(), text=code, step="01", channel="02", terminal="B")
        assert caught.value.reason == "replayed"
        fresh = code_made(keyed, card_id, now - 1)
        keyed.cards.verify(principal(), text=fresh, step="01", channel="02", terminal="B")
        with pytest.raises(CardRefused, match="already used"):
            other.cards.verify(principal(), text=fresh, step="01", channel="02", terminal="A")
    assert uses(keyed) == [(True, None), (False, "replayed"), (True, None), (False, "replayed")]
    assert keyed.audit.verify().ok


def test_concurrent_uses_of_one_code_accept_exactly_one(keyed: Platform) -> None:
    card_id = active_card(keyed)
    codes = [keyed.cards.dynamic_code(principal(), card_id)]
    codes.append(keyed.cards.get(principal(), card_id).static_code or "")

    def attempt(text: str) -> str:
        try:
            keyed.cards.verify(principal(), text=text, step="01", channel="01", terminal="T")
        except CardRefused as exc:
            return exc.reason
        return "ok"

    with ThreadPoolExecutor(16) as pool:
        dynamic = list(pool.map(attempt, [codes[0]] * 24))
        static = list(pool.map(attempt, [codes[1]] * 8))
    assert sorted(dynamic) == ["ok"] + ["replayed"] * 23
    assert static == ["ok"] * 8  # static codes are not spent (their second factor is the PIN)
    assert len(uses(keyed)) == 32
    with keyed.db.transaction(readonly=True) as conn:
        assert conn.execute(select(func.count()).select_from(card_replays)).scalar_one() == 1


def test_lost_card_refused_in_the_same_batch_path_and_logged_with_the_card(
    keyed: Platform,
) -> None:
    card_id = active_card(keyed)
    keyed.cards.act(principal(), card_id, CardAction.REPORT_LOST)
    static = keyed.cards.get(principal(), card_id).static_code or ""
    with pytest.raises(CardRefused) as caught:
        keyed.cards.verify(principal(), text=static, step="01", channel="02", terminal="K")
    assert (caught.value.reason, caught.value.status) == ("card-lost", 409)
    with keyed.db.transaction(readonly=True) as conn:
        row = conn.execute(select(card_uses)).one()
    assert (row.card_id, row.accepted, row.reason) == (card_id, False, "card-lost")


def test_the_client_is_checked_again_when_the_use_is_written(
    keyed: Platform, province: Province
) -> None:
    card_id = active_card(keyed)
    client = province.client("system/Card.r")
    who = Principal(client.client_id, client.institution, ScopeSet.parse("system/Card.r"))
    code = keyed.cards.dynamic_code(principal(), card_id)
    keyed.clients.set_active(client.client_id, False)
    with pytest.raises(NotAuthenticated):
        keyed.cards.verify(who, text=code, step="01", channel="02", terminal="K", check_client=True)
    assert uses(keyed) == []  # nothing served, nothing logged, the code is not spent
    keyed.clients.set_active(client.client_id, True)
    done = keyed.cards.verify(
        who, text=code, step="01", channel="02", terminal="K", check_client=True
    )
    assert done.card.id == card_id


def _body(text: str) -> dict[str, str]:
    return {"text": text, "step": "01", "channel": "02", "terminal": "KIOSK-1"}


def test_disabling_a_client_refuses_its_next_verification_despite_the_cache(
    http: TestClient, keyed: Platform, province: Province, settings: Settings
) -> None:
    keyed.auth.client_state_ttl = 600  # the cache must not expire by itself during the test
    card_id = active_card(keyed)
    client = province.client("system/Card.r")
    headers = {"Authorization": f"Bearer {province.token(client)}"}
    now = int(time.time())
    code = code_made(keyed, card_id, now)
    assert http.post("/cards/verify", json=_body(code), headers=headers).status_code == 200
    # Same process: ClientService.set_active drops the cached state at once.
    keyed.clients.set_active(client.client_id, False)
    code = code_made(keyed, card_id, now - 1)
    refused = http.post("/cards/verify", json=_body(code), headers=headers)
    assert refused.status_code == 401
    keyed.clients.set_active(client.client_id, True)
    assert http.post("/cards/verify", json=_body(code), headers=headers).status_code == 200
    # Another process (here: another platform) disables it; this server's cache still holds
    # "active" for a second, and the batch's own check refuses the request.
    assert keyed.auth.cached_client_active(client.client_id) is True
    with build(settings) as other:
        other.clients.set_active(client.client_id, False)
    assert keyed.auth.cached_client_active(client.client_id) is True
    code = code_made(keyed, card_id, now - 2)
    late = http.post("/cards/verify", json=_body(code), headers=headers)
    assert late.status_code == 401
    assert "disabled" in late.text
    assert [accepted for accepted, _ in uses(keyed)] == [True, True]


def test_tokens_are_checked_once_but_expiry_every_time(keyed: Platform, province: Province) -> None:
    client = province.client("system/Card.r")
    token = province.token(client)
    first = keyed.auth.token(token)
    assert keyed.auth.token(token) is first
    with pytest.raises(NotAuthenticated):
        keyed.auth.token(token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))
    object.__setattr__(first, "expires_at", first.expires_at.replace(year=2000))
    with pytest.raises(NotAuthenticated, match="expired"):
        keyed.auth.token(token)


def test_spent_codes_are_claimed_once_and_forgotten_after_expiry(keyed: Platform) -> None:
    now = int(time.time())
    with keyed.db.transaction() as conn:
        repo = CardRepository(conn)
        assert repo.claim_codes([(b"a" * 16, now - 100), (b"b" * 16, now + 100)]) == {
            b"a" * 16,
            b"b" * 16,
        }
        assert repo.claim_codes([(b"b" * 16, now + 100), (b"c" * 16, now + 100)]) == {b"c" * 16}
        assert repo.forget_codes(now) == 1
        assert repo.claim_codes([(b"a" * 16, now + 100)]) == {b"a" * 16}
