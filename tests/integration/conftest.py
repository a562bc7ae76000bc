"""API-level fixtures: an in-process app and a Province to set up callers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from healthroam.api.app import create_app
from healthroam.bootstrap import Platform
from healthroam.records import repository

from helpers import Province


@pytest.fixture
def http(platform: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(platform), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def province(platform: Platform, http: TestClient) -> Province:
    return Province(platform, http)


@pytest.fixture
def fresh_search_shapes() -> Iterator[None]:
    """No search-shape statement kept from another test, and none left for the next one
    (decision 0054: they are kept per process)."""
    repository._SHAPES.clear()
    yield
    repository._SHAPES.clear()
