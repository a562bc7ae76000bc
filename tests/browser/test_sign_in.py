"""Signing in and out of the clinician page in headless chromium against a real server."""

from __future__ import annotations

from playwright.sync_api import Page, expect
from sqlalchemy import select

from healthroam.bootstrap import Platform
from healthroam.db.schema import audit_events

from .conftest import sign_in


def test_wrong_password_is_refused_then_sign_in_and_out(
    hospitals: Platform, page: Page, server: str
) -> None:
    sign_in(page, "not the password")
    expect(page.locator("#message")).to_have_text("用户名或密码错误。")
    assert page.url.endswith("/clinician/login")
    sign_in(page)
    expect(page.locator("h1")).to_have_text("查找患者")
    expect(page.locator("#clinician")).to_have_text("李医生")
    expect(page.locator("#institution")).to_have_text("海南省人民医院")
    expect(page.locator("#code")).to_be_focused()  # the scanner types here at once
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["hr_session"]["httpOnly"]
    assert cookies["hr_session"]["sameSite"] == "Strict"

    page.click("#lang-switch")
    expect(page.locator("h1")).to_have_text("Find a patient")
    expect(page.locator("#logout")).to_have_text("Sign out")
    page.goto("/clinician/")  # the choice is kept in a cookie
    expect(page.locator("h1")).to_have_text("Find a patient")

    page.click("#logout")
    expect(page.locator("h1")).to_have_text("Sign in")
    page.goto("/clinician/")
    assert "/clinician/login" in page.url  # the session is gone
    hospitals.audit.seal()
    with hospitals.db.transaction(readonly=True) as conn:
        subtypes = (
            conn.execute(
                select(audit_events.c.subtype)
                .where(audit_events.c.end_user == "dr.li", audit_events.c.event_type == "auth")
                .order_by(audit_events.c.seq)
            )
            .scalars()
            .all()
        )
    assert subtypes == ["login", "login", "logout"]


def test_no_inline_script_runs_and_pages_are_not_framed(
    hospitals: Platform, page: Page, server: str
) -> None:
    response = page.goto("/clinician/login")
    assert response is not None
    headers = response.headers
    assert headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["cache-control"] == "no-store"
    # The CSP refuses a script injected inline.
    page.evaluate(
        "() => { const s = document.createElement('script');"
        " s.textContent = 'window.injected = 1'; document.body.appendChild(s); }"
    )
    assert page.evaluate("() => window.injected === undefined")
