"""POST /auth/token: client_secret_basic and private_key_jwt (SMART Backend Services)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient

from healthroam.bootstrap import Platform

from helpers import Province, patient

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
AUD = "http://testserver/auth/token"


def test_basic_grant_returns_short_lived_bearer_token(province: Province, http: TestClient) -> None:
    client = province.client("system/Patient.cruds system/Observation.rs")
    response = http.post(
        "/auth/token",
        data={"grant_type": "client_credentials"},
        auth=(client.client_id, client.secret),
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["scope"] == "system/Observation.rs system/Patient.cruds"
    assert response.headers["cache-control"] == "no-store"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == client.client_id
    assert claims["institution"] == client.institution
    assert claims["exp"] - claims["iat"] == 300


def test_requested_scope_is_narrowed_but_never_widened(
    province: Province, http: TestClient
) -> None:
    client = province.client("system/Patient.cruds")
    narrowed = http.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/Patient.rs"},
        auth=(client.client_id, client.secret),
    )
    assert narrowed.json()["scope"] == "system/Patient.rs"
    widened = http.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/Observation.rs"},
        auth=(client.client_id, client.secret),
    )
    assert widened.status_code == 400
    assert widened.json()["error"] == "invalid_scope"


@pytest.mark.parametrize(
    ("data", "auth", "status", "error"),
    [
        ({"grant_type": "client_credentials"}, ("nobody", "x"), 401, "invalid_client"),
        ({"grant_type": "password"}, None, 400, "unsupported_grant_type"),
        ({"grant_type": "client_credentials"}, None, 401, "invalid_client"),
        ({"grant_type": "client_credentials", "scope": "Patient.read"}, "ok", 400, "invalid_scope"),
    ],
)
def test_bad_token_requests_get_oauth_errors(
    province: Province, http: TestClient, data: dict[str, str], auth: Any, status: int, error: str
) -> None:
    client = province.client()
    credentials = (client.client_id, client.secret) if auth == "ok" else auth
    response = http.post("/auth/token", data=data, auth=credentials)
    assert response.status_code == status
    body = response.json()
    assert body["error"] == error
    assert body["status"] == status
    assert body["error_description"]


def test_wrong_secret_is_refused(province: Province, http: TestClient) -> None:
    client = province.client()
    response = http.post(
        "/auth/token",
        data={"grant_type": "client_credentials"},
        auth=(client.client_id, client.secret + "x"),
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_json_body_is_refused(province: Province, http: TestClient) -> None:
    client = province.client()
    response = http.post(
        "/auth/token",
        content=json.dumps({"grant_type": "client_credentials"}),
        headers={"Content-Type": "application/json"},
        auth=(client.client_id, client.secret),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def _keypair(kind: str) -> tuple[Any, dict[str, Any], str]:
    if kind == "ES384":
        private: Any = ec.generate_private_key(ec.SECP384R1())
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    jwk["kid"] = uuid.uuid4().hex
    return private, jwk, kind


def _assertion(private: Any, kid: str, alg: str, client_id: str, **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": AUD,
        "exp": now + 240,
        "jti": uuid.uuid4().hex,
        **overrides,
    }
    return jwt.encode(claims, private, algorithm=alg, headers={"kid": kid})


@pytest.fixture(params=["ES384", "RS384"])
def jwt_client(
    request: pytest.FixtureRequest, platform: Platform, province: Province
) -> tuple[str, Any, dict[str, Any], str]:
    private, jwk, alg = _keypair(request.param)
    created = platform.clients.add(
        institution_code=province.institution(),
        scopes="system/Patient.rs",
        jwks={"keys": [jwk]},
        with_secret=False,
    )
    assert created.client_secret is None
    return created.client.client_id, private, jwk, alg


def test_private_key_jwt_grant(
    http: TestClient, jwt_client: tuple[str, Any, dict[str, Any], str]
) -> None:
    client_id, private, jwk, alg = jwt_client
    assertion = _assertion(private, jwk["kid"], alg, client_id)
    form = {
        "grant_type": "client_credentials",
        "scope": "system/Patient.rs",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    response = http.post("/auth/token", data=form)
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "system/Patient.rs"
    # The same assertion (same jti) cannot be used twice.
    replay = http.post("/auth/token", data=form)
    assert replay.status_code == 401
    assert "already used" in replay.json()["error_description"]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"aud": "https://elsewhere/token"}, "audience"),
        ({"exp": int(time.time()) - 120}, "expired"),
        ({"exp": int(time.time()) + 3600}, "too far"),
        ({"sub": "someone-else"}, "sub must equal iss"),
    ],
)
def test_private_key_jwt_refusals(
    http: TestClient,
    jwt_client: tuple[str, Any, dict[str, Any], str],
    overrides: dict[str, Any],
    reason: str,
) -> None:
    client_id, private, jwk, alg = jwt_client
    assertion = _assertion(private, jwk["kid"], alg, client_id, **overrides)
    response = http.post(
        "/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        },
    )
    assert response.status_code == 401
    assert reason in response.json()["error_description"].lower()


def test_private_key_jwt_signed_by_another_key_is_refused(
    http: TestClient, jwt_client: tuple[str, Any, dict[str, Any], str]
) -> None:
    client_id, _private, jwk, alg = jwt_client
    other, _, _ = _keypair(alg)
    assertion = _assertion(other, jwk["kid"], alg, client_id)
    response = http.post(
        "/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        },
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_disabling_a_client_stops_its_tokens_at_once(
    platform: Platform, province: Province, http: TestClient
) -> None:
    client = province.client()
    headers = {"Authorization": f"Bearer {province.token(client)}"}
    created = http.post("/fhir/Patient", json=patient(), headers=headers)
    assert created.status_code == 201
    platform.clients.set_active(client.client_id, False)
    response = http.get(created.headers["location"].split("/_history")[0], headers=headers)
    assert response.status_code == 401
    assert "disabled" in response.json()["issue"][0]["diagnostics"]
    refused = http.post(
        "/auth/token",
        data={"grant_type": "client_credentials"},
        auth=(client.client_id, client.secret),
    )
    assert refused.status_code == 401
    platform.clients.set_active(client.client_id, True)
    assert (
        http.get(created.headers["location"].split("/_history")[0], headers=headers).status_code
        == 200
    )
