"""Card fixtures: keys initialised, and master persons inserted straight into the registry's
table (the registry's own service is not needed to hold a card)."""

from __future__ import annotations

import itertools
import secrets
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert

from healthroam.bootstrap import Platform
from healthroam.db.tables_registry import master_persons
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet

_N = itertools.count(1)


def add_person(platform: Platform, **golden: Any) -> str:
    """Insert an active master person; returns the master index ID."""
    n = next(_N)
    data: dict[str, Any] = {
        "name": "张三",
        "sex": "1",
        "birth_date": "1990-01-01",
        "national_id": f"460106199001{n:04d}1X"[:18],
        "region": "460106",
    }
    data.update(golden)
    data = {k: v for k, v in data.items() if v is not None}
    mid = secrets.token_hex(32).upper()
    now = datetime.now(UTC)
    with platform.db.transaction() as conn:
        conn.execute(
            insert(master_persons).values(
                master_index_id=mid,
                status="active",
                golden=data,
                version=1,
                created_at=now,
                updated_at=now,
            )
        )
    return mid


def principal(
    scope: str = "system/Card.cruds system/Patient.r", institution: str = "H001"
) -> Principal:
    return Principal("client-1", institution, ScopeSet.parse(scope), end_user="nurse-7")


@pytest.fixture
def keyed(platform: Platform) -> Platform:
    platform.keys.init()
    return platform
