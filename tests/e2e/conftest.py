from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from healthroam.config import Settings

from servers import running_server


@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Iterator[str]:
    """The real server on a free port; its log must hold no personal data afterwards."""
    log = tmp_path / "server.log"
    with running_server(settings, log) as base:
        yield base
    server_log = log.read_text()
    assert "460106" not in server_log
    assert "黎" not in server_log
