"""The clinician page's HTTP behaviour in process, on SQLite and PostgreSQL: sign-in, cookie
flags, CSRF, security headers, no-store, language switch, logout."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from healthroam.bootstrap import Platform

PASSWORD = "correct horse 7"


@pytest.fixture
def clinician(platform: Platform) -> str:
    platform.institutions.add(
        code="H001", name="海南省人民医院", kind="hospital", region="460106", level=3
    )
    platform.clinicians.add(
        username="dr.li", display_name="李医生", institution_code="H001", password=PASSWORD
    )
    return "dr.li"


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def _sign_in(http: TestClient, password: str = PASSWORD) -> tuple[int, str]:
    form = http.get("/clinician/login")
    response = http.post(
        "/clinician/login",
        data={"csrf": _csrf(form.text), "username": "dr.li", "password": password},
        follow_redirects=False,
    )
    return response.status_code, response.headers.get("set-cookie", "")


def test_pages_need_a_session(http: TestClient) -> None:
    for path in ("/clinician/", "/clinician/patients/" + "A" * 64):
        response = http.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/clinician/login")
    for path in ("/clinician/scan", "/clinician/open", "/clinician/logout"):
        response = http.post(path, data={"csrf": "x"}, follow_redirects=False)
        assert response.status_code == 303


def test_login_page_headers_and_labels(http: TestClient) -> None:
    page = http.get("/clinician/login")
    assert page.status_code == 200
    assert "用户名" in page.text
    assert "English" in page.text
    headers = page.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["cache-control"] == "no-store"
    assert "<script>" not in page.text  # no inline script
    english = http.get("/clinician/login?lang=en")
    assert "Username" in english.text
    assert "lang=en" in english.headers["set-cookie"]
    assert "Username" in http.get("/clinician/login").text  # the cookie keeps the choice


def test_wrong_password_is_refused_and_right_one_opens_a_session(
    http: TestClient, clinician: str
) -> None:
    status, cookie = _sign_in(http, "wrong password")
    assert status == 401
    assert "hr_session" not in cookie
    status, cookie = _sign_in(http)
    assert status == 303
    session_cookie = next(c for c in cookie.split(", hr_") if "hr_session=" in c)
    assert "HttpOnly" in session_cookie
    assert "SameSite=strict" in session_cookie or "samesite=strict" in session_cookie.lower()
    assert "Secure" not in session_cookie  # plain http here; https sets Secure
    home = http.get("/clinician/")
    assert home.status_code == 200
    assert "李医生" in home.text
    assert "海南省人民医院" in home.text
    assert home.headers["cache-control"] == "no-store"


def test_login_form_needs_its_csrf_token(http: TestClient, clinician: str) -> None:
    http.get("/clinician/login")
    response = http.post(
        "/clinician/login",
        data={"csrf": "forged", "username": "dr.li", "password": PASSWORD},
        follow_redirects=False,
    )
    assert response.status_code == 403
    foreign = http.post(
        "/clinician/login",
        data={
            "csrf": _csrf(http.get("/clinician/login").text),
            "username": "dr.li",
            "password": PASSWORD,
        },
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert foreign.status_code == 403


def test_posts_need_the_session_csrf_token_and_logout_ends_the_session(
    http: TestClient, clinician: str
) -> None:
    _sign_in(http)
    token = _csrf(http.get("/clinician/").text)
    forged = http.post("/clinician/logout", data={"csrf": "forged"}, follow_redirects=False)
    assert forged.status_code == 403
    assert http.get("/clinician/", follow_redirects=False).status_code == 200
    out = http.post("/clinician/logout", data={"csrf": token}, follow_redirects=False)
    assert out.status_code == 303
    assert http.get("/clinician/", follow_redirects=False).status_code == 303


def test_lookup_by_id_checks_the_id(http: TestClient, clinician: str) -> None:
    _sign_in(http)
    token = _csrf(http.get("/clinician/").text)
    bad = http.post("/clinician/open", data={"csrf": token, "mid": "12; drop"})
    assert bad.status_code == 400
    good = http.post(
        "/clinician/open", data={"csrf": token, "mid": "ab" * 32}, follow_redirects=False
    )
    assert good.headers["location"] == "/clinician/patients/" + "AB" * 32


def test_static_files(http: TestClient) -> None:
    css = http.get("/clinician/static/app.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert http.get("/clinician/static/app.js").status_code == 200
    for name in ("..%2Fmessages.py", "missing.css", "messages.py"):
        assert http.get(f"/clinician/static/{name}").status_code == 404


def test_oversized_forms_are_refused(http: TestClient, clinician: str) -> None:
    page = http.get("/clinician/login")
    response = http.post(
        "/clinician/login",
        data={"csrf": _csrf(page.text), "username": "dr.li", "password": "x" * 20_000},
        follow_redirects=False,
    )
    assert response.status_code == 400
    assert "hr_session" not in response.headers.get("set-cookie", "")
