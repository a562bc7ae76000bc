"""`healthroam synth`: generate a synthetic province for demos, tests and benchmarks."""

from __future__ import annotations

import enum
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from healthroam.errors import HealthroamError
from healthroam.synth.clinical import write_clinical
from healthroam.synth.population import DEFAULT_CHUNK_SIZE
from healthroam.synth.writer import write_province

T = TypeVar("T")

app = typer.Typer(
    help="Generate a synthetic province (Hainan model) for demos, tests and benchmarks.",
    no_args_is_help=False,
)


class FileFormat(enum.StrEnum):
    parquet = "parquet"
    csv = "csv"


class ClinicalFormat(enum.StrEnum):
    ndjson = "ndjson"
    bundles = "bundles"


# The options both commands take (each gives its own default).
People = Annotated[
    int, typer.Option("--people", "-n", min=1, help="How many true people to generate.")
]
OutDir = Annotated[
    Path, typer.Option("--out", "-o", file_okay=False, help="Directory to write the files into.")
]
Seed = Annotated[int, typer.Option("--seed", help="Random seed; same seed, same files.")]
ChunkSize = Annotated[
    int, typer.Option("--chunk-size", min=1, help="People per chunk (memory vs speed).")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


@app.callback(invoke_without_command=True)
def synth(
    ctx: typer.Context,
    people: People = 100_000,
    out: OutDir = Path("synth-out"),
    fmt: Annotated[
        FileFormat, typer.Option("--format", "-f", help="File format.", case_sensitive=False)
    ] = FileFormat.parquet,
    seed: Seed = 42,
    chunk_size: ChunkSize = DEFAULT_CHUNK_SIZE,
    quiet: Quiet = False,
) -> None:
    """Write the population base, hospitals, insurer, institutions and the ground truth."""
    if ctx.invoked_subcommand is not None:
        return
    summary = _with_progress(
        "synth",
        people,
        out,
        quiet,
        lambda report: write_province(out, people, fmt.value, seed, report, chunk_size=chunk_size),
    )
    typer.echo(
        f"wrote {summary.people} people and {summary.records} source records "
        f"({len(summary.rows)} files) to {summary.out_dir}"
    )


@app.command("clinical")
def clinical(
    people: People = 10_000,
    out: OutDir = Path("synth-clinical"),
    fmt: Annotated[
        ClinicalFormat,
        typer.Option(
            "--format",
            "-f",
            help="ndjson: one resource a line; bundles: one transaction Bundle a line.",
            case_sensitive=False,
        ),
    ] = ClinicalFormat.ndjson,
    seed: Seed = 42,
    chunk_size: ChunkSize = DEFAULT_CHUNK_SIZE,
    quiet: Quiet = False,
) -> None:
    """Write FHIR R4 clinical histories (visits, diagnoses, results, prescriptions,
    vaccinations) of the province's people at its hospitals, one file per hospital."""
    summary = _with_progress(
        "clinical",
        people,
        out,
        quiet,
        lambda report: write_clinical(out, people, fmt.value, seed, report, chunk_size=chunk_size),
    )
    typer.echo(
        f"wrote {summary.total} resources ({summary.patients} patients at "
        f"{len(summary.per_hospital)} hospitals) for {summary.people} people to "
        f"{Path(summary.out_dir) / summary.format}"
    )


def _with_progress(
    label: str, people: int, out: Path, quiet: bool, write: Callable[[Callable[[int], None]], T]
) -> T:
    """Run ``write`` (given a callback taking the number of people done) under a progress
    bar on stderr; its errors end the command with a message (exit 2 bad input, 1 cannot
    write)."""
    console = Console(stderr=True)
    progress = Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=quiet,
    )
    try:
        with progress:
            task = progress.add_task("people", total=people)
            return write(lambda done: progress.update(task, completed=done))
    except HealthroamError as error:
        console.print(f"[red]error:[/red] {error.detail}")
        raise typer.Exit(2) from None
    except OSError as error:
        console.print(f"[red]error:[/red] cannot write to {out}: {error.strerror}")
        raise typer.Exit(1) from None
