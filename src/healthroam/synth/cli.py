"""`healthroam synth`: generate a synthetic province (implementation in progress)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Generate a synthetic province for demos, tests and benchmarks.")
