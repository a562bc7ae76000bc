"""The /cards API through TestClient on SQLite and PostgreSQL: verification (tamper, replay,
expiry, lost, cancelled), what each scope may see, lifecycle endpoints, trust list, usage."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient

from healthroam.bootstrap import Platform
from healthroam.cards.qr import BEIJING
from healthroam.cards.trustlist import load_trust_list
from healthroam.keys.service import trust_list_anchors

from .conftest import add_person
from helpers import Province

TERMINAL = "system/Card.r"
CLERK = "system/Card.cruds system/Patient.r"


def card_for(http: TestClient, headers: dict[str, str], platform: Platform) -> dict[str, Any]:
    mid = add_person(platform)
    created = http.post(
        "/cards", json={"masterIndexId": mid, "kind": "electronic"}, headers=headers
    )
    assert created.status_code == 201, created.text
    card_id = created.json()["id"]
    assert http.post(f"/cards/{card_id}/$issue", headers=headers).status_code == 200
    active = http.post(
        f"/cards/{card_id}/$activate", json={"reason": "resident bound the card"}, headers=headers
    )
    assert active.json()["status"] == "active"
    body: dict[str, Any] = active.json()
    return body


def verify(http: TestClient, headers: dict[str, str], text: str, step: str = "01") -> Any:
    return http.post(
        "/cards/verify",
        json={"text": text, "step": step, "channel": "02", "terminal": "KIOSK-3"},
        headers=headers,
    )


def dynamic(http: TestClient, headers: dict[str, str], card_id: str) -> str:
    response = http.post(f"/cards/{card_id}/$dynamic-code", headers=headers)
    assert response.status_code == 200, response.text
    text: str = response.json()["text"]
    return text


def test_verify_dynamic_code_with_and_without_demographics(
    http: TestClient, keyed: Platform, province: Province
) -> None:
    clerk = province.headers(CLERK)
    card = card_for(http, clerk, keyed)
    terminal = province.headers(TERMINAL)
    ok = verify(http, terminal, dynamic(http, clerk, card["id"]))
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["accepted"] is True
    assert body["card"]["status"] == "active"
    assert body["card"]["masterIndexId"] == card["masterIndexId"]
    assert body["step"] == {"code": "01", "name": "registration"}
    assert "patient" not in body  # no system/Patient.r: status and master index id only
    full = verify(http, province.headers(TERMINAL + " system/Patient.r"), card["credential"])
    assert full.status_code == 200, full.text
    assert full.json()["patient"]["name"] == "张三"
    assert full.json()["patient"]["maskedIdNumber"].startswith("4601")
    assert full.json()["codeKind"] == "credential"


def test_tampered_replayed_and_expired_codes_are_refused_with_reasons(
    http: TestClient, keyed: Platform, province: Province
) -> None:
    clerk, terminal = province.headers(CLERK), province.headers(TERMINAL)
    card = card_for(http, clerk, keyed)
    text = dynamic(http, clerk, card["id"])
    assert verify(http, terminal, text).status_code == 200
    replay = verify(http, terminal, text)
    assert replay.status_code == 400
    assert replay.headers["content-type"].startswith("application/problem+json")
    assert replay.json()["reason"] == "replayed"
    fresh = dynamic(http, clerk, card["id"])
    last = "0" if fresh[-1] != "0" else "1"
    tampered = verify(http, terminal, fresh[:-1] + last)
    assert (tampered.status_code, tampered.json()["reason"]) == (400, "bad-check")
    credential = card["credential"]
    middle = len(credential) // 2
    forged = (
        credential[:middle] + ("A" if credential[middle] != "A" else "B") + credential[middle + 1 :]
    )
    assert verify(http, terminal, forged).json()["reason"] in {
        "bad-signature",
        "bad-cbor",
        "bad-base45",
        "bad-structure",
    }
    old = dynamic(http, clerk, card["id"])
    real_clock = keyed.cards.clock
    keyed.cards.clock = lambda: real_clock() + 3600
    try:
        expired = verify(http, terminal, old)
    finally:
        keyed.cards.clock = real_clock
    assert (expired.status_code, expired.json()["reason"]) == (400, "expired")
    garbage = verify(http, terminal, "hello")
    assert garbage.json()["reason"] == "bad-prefix"


def test_lost_and_cancelled_cards_are_refused(
    http: TestClient, keyed: Platform, province: Province
) -> None:
    clerk, terminal = province.headers(CLERK), province.headers(TERMINAL)
    card = card_for(http, clerk, keyed)
    assert http.post(f"/cards/{card['id']}/$report-lost", headers=clerk).json()["status"] == "lost"
    lost = verify(http, terminal, card["staticCode"])
    assert (lost.status_code, lost.json()["reason"]) == (409, "card-lost")
    refused = http.post(f"/cards/{card['id']}/$activate", headers=clerk)
    assert refused.status_code == 409
    assert "recover" in refused.json()["detail"]
    assert refused.json()["field"] == "Card.status"
    assert http.post(f"/cards/{card['id']}/$cancel", headers=clerk).json()["status"] == "cancelled"
    cancelled = verify(http, terminal, card["credential"])
    assert (cancelled.status_code, cancelled.json()["reason"]) == (409, "card-cancelled")
    history = http.get(f"/cards/{card['id']}/history", headers=clerk).json()["events"]
    assert [e["action"] for e in history] == ["apply", "issue", "activate", "report-lost", "cancel"]
    assert history[2]["reason"] == "resident bound the card"


def test_reissue_and_listing(http: TestClient, keyed: Platform, province: Province) -> None:
    clerk = province.headers(CLERK)
    card = card_for(http, clerk, keyed)
    assert http.post(f"/cards/{card['id']}/$report-lost", headers=clerk).status_code == 200
    new = http.post(f"/cards/{card['id']}/$reissue", json={"reason": "lost"}, headers=clerk)
    assert new.status_code == 201, new.text
    assert new.json()["replaces"] == card["id"]
    assert new.json()["ehcId"] == card["ehcId"]
    listed = http.get(
        "/cards", params={"master_index_id": card["masterIndexId"]}, headers=clerk
    ).json()["cards"]
    assert [(c["id"], c["status"]) for c in listed] == [
        (card["id"], "cancelled"),
        (new.json()["id"], "pending-activation"),
    ]
    assert http.get("/cards/nope", headers=clerk).status_code == 404


def test_trust_list_endpoint_serves_a_list_terminals_can_load(
    http: TestClient, keyed: Platform, province: Province
) -> None:
    terminal = province.headers(TERMINAL)
    response = http.get("/cards/trust-list", headers=terminal)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/cose")
    anchors = http.get("/cards/trust-anchors", headers=terminal).json()
    trust = load_trust_list(response.content, trust_list_anchors(anchors), datetime.now(UTC))
    assert trust.keys


def test_usage_per_institution_and_day(
    http: TestClient, keyed: Platform, province: Province
) -> None:
    clerk = province.headers(CLERK)
    card = card_for(http, clerk, keyed)
    hospital = province.client(TERMINAL)
    hospital_headers = {"Authorization": f"Bearer {province.token(hospital)}"}
    assert verify(http, hospital_headers, dynamic(http, clerk, card["id"]), "03").status_code == 200
    assert verify(http, hospital_headers, "EHCID:D1:bad", "03").status_code == 400
    day = datetime.now(UTC).astimezone(BEIJING).date().isoformat()
    agency = province.client(
        "system/CardUsage.r", province.institution("WJW", kind="agency", level=None)
    )
    seen = http.get(
        "/cards/usage",
        params={"date": day},
        headers={"Authorization": f"Bearer {province.token(agency)}"},
    )
    assert seen.status_code == 200, seen.text
    assert {"institution": hospital.institution, "step": "03", "accepted": 1, "refused": 1} in (
        seen.json()["rows"]
    )
    own = province.client("system/CardUsage.r system/Card.r", hospital.institution)
    mine = http.get(
        "/cards/usage",
        params={"date": day},
        headers={"Authorization": f"Bearer {province.token(own)}"},
    ).json()["rows"]
    assert {r["institution"] for r in mine} == {hospital.institution}
    bad = http.get("/cards/usage", params={"date": "yesterday"}, headers=hospital_headers)
    assert bad.status_code == 403  # no CardUsage scope: refused before the date is read


def test_card_scopes_are_enforced(http: TestClient, keyed: Platform, province: Province) -> None:
    reader = province.headers(TERMINAL)
    mid = add_person(keyed)
    created = http.post("/cards", json={"masterIndexId": mid, "kind": "electronic"}, headers=reader)
    assert created.status_code == 403
    assert created.json()["detail"].startswith("token scopes do not allow 'c' on Card")
