"""API-level fixtures: an in-process app and a Province to set up callers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from healthroam.api.app import create_app
from healthroam.bootstrap import Platform

from helpers import Province


@pytest.fixture
def http(platform: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(platform), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def province(platform: Platform, http: TestClient) -> Province:
    return Province(platform, http)
