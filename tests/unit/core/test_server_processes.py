"""How many processes `healthroam serve` starts by default (decision 0048)."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from healthroam.config import Settings

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/x"


def test_sqlite_serves_from_one_process_whatever_is_set() -> None:
    assert Settings(database_url="sqlite:///x.db").serve_processes == 1
    assert Settings(database_url="sqlite:///x.db", server_workers=4).serve_processes == 1


def test_postgresql_defaults_to_the_usable_cpus_and_takes_the_setting() -> None:
    assert Settings(database_url=POSTGRES).serve_processes == len(os.sched_getaffinity(0))
    assert Settings(database_url=POSTGRES, server_workers=3).serve_processes == 3


def test_zero_processes_is_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(database_url=POSTGRES, server_workers=0)
