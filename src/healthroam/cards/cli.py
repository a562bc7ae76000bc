"""`healthroam cards`: card management commands (being built for the Health card issue)."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Resident health cards: issue, lifecycle, EHC IDs, offline checks.", no_args_is_help=True
)
