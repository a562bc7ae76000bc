"""Blocking calls of the hot FHIR routes run on a thread pool of their own, reached with
asyncio's executor hop.

anyio's ``to_thread.run_sync`` (what FastAPI uses for a sync route) looks up its capacity
limiter and backend, opens a cancel scope and hands the call to a worker through a queue and
an event: about 90 us of CPU per call on this project's host against 55 us for
``loop.run_in_executor`` (docs/benchmarks.md, session 14), for every FHIR read. The pool has
anyio's default capacity (40 threads), so at most as many blocking calls run at once as
before. A call that has started runs to its end even if the request is cancelled meanwhile
(a thread cannot be stopped; its result is then dropped): a read's audit entry is committed
all the same.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

THREADS = 40  # anyio's default thread limiter
_POOL = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="healthroam-worker")

P = ParamSpec("P")
T = TypeVar("T")


async def in_thread(call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``call(*args, **kwargs)`` on a worker thread; the event loop goes on meanwhile."""
    work = functools.partial(call, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_POOL, work)
