"""Browser tests of the clinician page: a real `healthroam serve` on an ephemeral port (over
SQLite and PostgreSQL through the `settings` fixture) driven by Debian's headless chromium
through Playwright. Playwright's own browser downloads are never used."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from healthroam.bootstrap import Platform
from healthroam.config import Settings

CHROMIUM = Path(os.environ.get("HEALTHROAM_TEST_CHROMIUM", "/usr/bin/chromium"))
PASSWORD = "correct horse 7"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        raise pytest.UsageError(
            f"{CHROMIUM} is missing: run scripts/system-deps (installs Debian's chromium)"
        )
    launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
    yield launched
    launched.close()


@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Iterator[str]:
    """`python -m healthroam serve` on a free port, sharing the test's database."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHROAM_")}
    env.update(
        HEALTHROAM_DATABASE_URL=settings.database_url,
        HEALTHROAM_DATA_DIR=str(settings.data_dir),
        HEALTHROAM_TOKEN_SIGNING_KEY_FILE=str(settings.signing_key_path),
        HEALTHROAM_PUBLIC_BASE_URL=base,
    )
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            # One process, as before decision 0048 (the page is under test, not the processes).
            [sys.executable, "-m", "healthroam", "serve", "--port", str(port), "--workers", "1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or process.poll() is not None:
                    raise AssertionError(log_path.read_text())
                time.sleep(0.1)
            yield base
        finally:
            process.terminate()
            process.wait(timeout=10)
    server_log = log_path.read_text()
    # Personal data and secrets never reach the application log.
    assert PASSWORD not in server_log
    assert not re.search(r"[\u4e00-\u9fff]", server_log), "a Chinese name reached the log"
    assert "Traceback" not in server_log


@pytest.fixture
def context(browser: Browser, server: str) -> Iterator[BrowserContext]:
    ctx = browser.new_context(base_url=server, locale="zh-CN")
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


@pytest.fixture
def hospitals(platform: Platform) -> Platform:
    """Two hospitals and a clinician, dr.li, at the first."""
    platform.institutions.add(
        code="H001", name="海南省人民医院", kind="hospital", region="460106", level=3
    )
    platform.institutions.add(
        code="H002", name="三亚市人民医院", kind="hospital", region="460202", level=3
    )
    platform.clinicians.add(
        username="dr.li", display_name="李医生", institution_code="H001", password=PASSWORD
    )
    return platform


def sign_in(page: Page, password: str = PASSWORD) -> None:
    page.goto("/clinician/")
    page.fill("#username", "dr.li")
    page.fill("#password", password)
    page.click("#login")
