"""A real gateway on an ephemeral port (its own event loop thread), a bound sender, and a
small real handler that writes Observations through the RecordService."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from healthroam.bootstrap import Platform
from hl7_testkit import Running, bind, start


@pytest.fixture
def running(platform: Platform) -> Iterator[Running]:
    bind(platform)
    with start(platform, idle_timeout_seconds=30) as gateway:
        yield Running(platform, gateway)
