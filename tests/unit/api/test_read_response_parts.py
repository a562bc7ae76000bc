"""The FHIR read's cheaper parts answer as the general ones did: the Last-Modified date as
``strftime`` wrote it, and the worker-thread hop returns and raises like the call."""

from __future__ import annotations

import asyncio
import random
import threading
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from healthroam.api.fhir import http_date
from healthroam.api.worker_threads import in_thread


def _strftime(moment: datetime) -> str:  # the code it replaces
    return (
        moment.replace(tzinfo=moment.tzinfo or UTC)
        .astimezone(UTC)
        .strftime("%a, %d %b %Y %H:%M:%S GMT")
    )


def test_http_date_is_what_strftime_wrote() -> None:
    rng = random.Random(5)
    zones = [
        None,
        UTC,
        ZoneInfo("Etc/UTC"),
        ZoneInfo("Asia/Shanghai"),
        timezone(-timedelta(hours=5)),
    ]
    start = datetime(1999, 12, 31, 23, 59, 59)
    for _ in range(3000):
        moment = start + timedelta(
            seconds=rng.randrange(0, 40 * 365 * 86400), microseconds=rng.randrange(10**6)
        )
        moment = moment.replace(tzinfo=rng.choice(zones))
        assert http_date(moment) == _strftime(moment), moment
    assert http_date(datetime(2026, 12, 1, 8, 5, 9, tzinfo=UTC)) == "Tue, 01 Dec 2026 08:05:09 GMT"


def test_in_thread_runs_the_call_on_a_worker_and_raises_its_error() -> None:
    def where(value: int, *, plus: int) -> tuple[str, int]:
        return threading.current_thread().name, value + plus

    def fails() -> None:
        raise LookupError("gone")

    async def main() -> None:
        name, total = await in_thread(where, 1, plus=2)
        assert total == 3
        assert name != threading.current_thread().name
        with pytest.raises(LookupError, match="gone"):
            await in_thread(fails)

    asyncio.run(main())
