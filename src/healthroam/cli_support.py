"""What every `healthroam` command shares: one error handling (a one-line message and exit code
2, never a traceback), the platform built from the process's settings, and the progress bar
of a file being loaded."""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from sqlalchemy.exc import OperationalError, ProgrammingError

from healthroam.errors import HealthroamError

if TYPE_CHECKING:
    from healthroam.bootstrap import Platform

P = ParamSpec("P")
R = TypeVar("R")
err = Console(stderr=True, soft_wrap=True)


def cli_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn healthroam and database errors, and a lost worker process, into one-line messages
    and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except HealthroamError as exc:
            where = f" ({exc.expression})" if exc.expression else ""
            err.print(f"[red]error:[/red] {exc.detail}{where}", highlight=False)
        except BrokenProcessPool:  # a command that does not say more itself
            err.print(
                "[red]error:[/red] a worker process died (killed, or out of memory?); what was "
                "committed before it is kept: run the same command again",
                highlight=False,
            )
        except (OperationalError, ProgrammingError) as exc:
            err.print(
                f"[red]error:[/red] database problem ({type(exc.orig).__name__}); is it running "
                "and migrated? Try `healthroam db upgrade`.",
                highlight=False,
            )
        raise typer.Exit(2)

    return wrapper


def build_platform() -> Platform:
    """The platform from the process's settings (bootstrap imported here, when a command runs:
    `healthroam --help` stays fast)."""
    from healthroam.bootstrap import build
    from healthroam.config import get_settings

    return build(get_settings())


def file_progress(quiet: bool) -> Progress:
    """The progress bar of a file being loaded (its task's description, rows done of the
    total, time left) on stderr; it disappears when done, and ``quiet`` hides it."""
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=quiet,
        transient=True,
    )
