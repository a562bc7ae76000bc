"""Every route except the token endpoint, health checks and discovery requires the right token.

The routes are enumerated from the app itself, so a new route is covered without editing this.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from healthroam.api.app import ROUTERS, create_app
from healthroam.bootstrap import Platform
from healthroam.security.scopes import ScopeSet

from helpers import Province

PUBLIC = {
    ("POST", "/auth/token"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    # Discovery documents (no personal data) stay public so standard FHIR/SMART clients can
    # find the token endpoint: docs/decisions/0002-public-discovery.md.
    ("GET", "/fhir/metadata"),
    ("GET", "/fhir/.well-known/smart-configuration"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
}
# A scope that no protected route accepts.
UNRELATED_SCOPE = "system/Device.r"


def _protected_routes() -> list[tuple[str, str]]:
    routes = []
    for route in create_app_routes():
        for method in sorted(route.methods or ()):
            if method == "HEAD":
                continue
            if (method, route.path) not in PUBLIC:
                path = re.sub(r"\{[^}:]+:mii\}", "A" * 64, route.path)
                # Generic FHIR store routes: a real type, so the scope (not the type) is refused.
                path = path.replace("{resource_type}", "Observation")
                routes.append((method, re.sub(r"\{[^}]+\}", "1", path)))
    return routes


def create_app_routes() -> list[APIRoute]:
    return [r for router in ROUTERS for r in router.routes if isinstance(r, APIRoute)]


def test_the_app_serves_no_route_outside_the_enumerated_routers(platform: Platform) -> None:
    app = create_app(platform)
    served = {(m.upper(), path) for path, item in app.openapi()["paths"].items() for m in item}
    # OpenAPI drops path convertors ({id:mii} -> {id}).
    enumerated = {
        (m, re.sub(r":\w+\}", "}", r.path)) for r in create_app_routes() for m in (r.methods or ())
    }
    assert served == enumerated
    assert len(_protected_routes()) >= 4


@pytest.mark.parametrize(("method", "path"), _protected_routes())
def test_missing_token_is_401(http: TestClient, method: str, path: str) -> None:
    response = http.request(method, path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path"), _protected_routes())
def test_malformed_and_expired_tokens_are_401(
    http: TestClient, platform: Platform, province: Province, method: str, path: str
) -> None:
    client = province.client("system/*.cruds")
    expired, _ = platform.auth.tokens.issue(
        client.client_id,
        client.institution,
        ScopeSet.parse("system/*.cruds"),
        now=datetime.now(UTC) - timedelta(hours=1),
    )
    for token in ("not-a-jwt", expired, province.token(client) + "x"):
        response = http.request(method, path, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, (token[:10], response.text)


@pytest.mark.parametrize(("method", "path"), _protected_routes())
def test_wrong_scope_is_403(http: TestClient, province: Province, method: str, path: str) -> None:
    response = http.request(method, path, headers=province.headers(UNRELATED_SCOPE))
    assert response.status_code == 403
    body = response.json()
    if path.startswith("/fhir"):
        assert body["issue"][0]["code"] == "forbidden"
    else:
        assert body["type"] == "urn:healthroam:problem:forbidden"


@pytest.mark.parametrize(("method", "path"), _protected_routes())
def test_disabled_client_is_401(
    http: TestClient, platform: Platform, province: Province, method: str, path: str
) -> None:
    client = province.client("system/*.cruds")
    headers = {"Authorization": f"Bearer {province.token(client)}"}
    platform.clients.set_active(client.client_id, False)
    assert http.request(method, path, headers=headers).status_code == 401


def test_public_routes_answer_without_token(http: TestClient) -> None:
    assert http.get("/healthz").status_code == 200
    ready = http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert http.get("/fhir/metadata").json()["resourceType"] == "CapabilityStatement"
    assert http.get("/fhir/.well-known/smart-configuration").json()["token_endpoint"] == (
        "http://testserver/auth/token"
    )
