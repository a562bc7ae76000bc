"""Worker processes of this test process, found through /proc (Linux), to kill them for real:
a worker pool must survive a worker that the kernel's OOM killer or an operator ends."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses.
        parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    return parents


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def descendants() -> dict[int, int]:
    """Every process below this one: pid -> parent pid."""
    parents = _parents()
    found: dict[int, int] = {}
    frontier = [os.getpid()]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = ppid
                frontier.append(pid)
    return found


def kill_new_workers(before: set[int]) -> int:
    """SIGKILL the pool workers started since ``before`` was taken (not the forkserver nor the
    resource tracker, which multiprocessing keeps for the whole test process); how many."""
    me = os.getpid()
    killed = 0
    for pid, ppid in descendants().items():
        if pid in before:
            continue
        command = _cmdline(pid)
        if "resource_tracker" in command or ("forkserver" in command and ppid == me):
            continue
        os.kill(pid, signal.SIGKILL)
        killed += 1
    return killed


def within(seconds: float, fn: Callable[[], Any]) -> dict[str, Any]:
    """Run ``fn`` in a thread; its ``value`` or ``error``. Fails the test if it has not
    returned in ``seconds`` (a pool waiting for a dead worker's task never returns)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as error:  # handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: hung"
    return outcome
