"""`healthroam registry`: load feeds, and the stewards' commands (reviews, merge, split)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from healthroam.cli_support import build_platform, cli_errors, file_progress
from healthroam.registry import linkage_cli
from healthroam.registry.bulk import BulkLoader
from healthroam.registry.loader import FeedLoader, Mapping
from healthroam.registry.model import Decision
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet

app = typer.Typer(help="Population registry and master patient index.", no_args_is_help=True)
# `healthroam registry train` and `healthroam registry link`: Splink model training and batch
# linkage (registry/linkage_cli.py).
app.registered_commands.extend(linkage_cli.app.registered_commands)
out = Console()
err = Console(stderr=True, soft_wrap=True)

Agency = Annotated[str, typer.Option(help="Your agency's institution code (a co-owner).")]
User = Annotated[str, typer.Option(help="Your steward user id (recorded with every change).")]
Reason = Annotated[str, typer.Option(help="Why (recorded with the change).")]


def _steward(agency: str, user: str) -> Principal:
    return Principal(
        client_id="cli",
        institution_code=agency,
        scopes=ScopeSet.parse("system/MasterPerson.cruds"),
        end_user=user,
        purpose_of_use="HOPERAT",
    )


@app.command("load")
def load(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet feed.")],
    source: Annotated[str, typer.Option(help="Institution code of the feed's source.")],
    mapping: Annotated[
        str, typer.Option(help="Column mapping: a TOML file, or population / insurer / hospital.")
    ] = "population",
    reject_file: Annotated[
        Path | None, typer.Option(help="Where rejected rows go (default: FILE.rejects.csv).")
    ] = None,
    chunk_size: Annotated[
        int, typer.Option(min=1, max=100_000, help="Rows per committed chunk.")
    ] = 1000,
    operator: Annotated[str | None, typer.Option(help="Who runs the load.")] = None,
    bulk: Annotated[
        bool,
        typer.Option(
            "--bulk",
            help="Fast path for large feeds: rows with a national ID new to the "
            "registry are inserted set-wise (COPY); the rest are matched one by one.",
        ),
    ] = False,
    initial: Annotated[
        bool,
        typer.Option(
            "--initial",
            help="First load into an empty registry (implies --bulk; PostgreSQL): indexes and "
            "foreign keys are rebuilt after the rows, and rows needing the matcher wait until "
            "then. Run it before the registry takes registrations.",
        ),
    ] = False,
    workers: Annotated[int, typer.Option(min=1, max=32, help="Worker processes (--bulk).")] = 2,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Stream a feed into the registry: idempotent, resumable, with a reject file."""

    @cli_errors
    def run() -> None:
        spec = Mapping.load(mapping)
        rejects = reject_file or file.with_suffix(".rejects.csv")
        total = _count_rows(file)
        with (
            build_platform() as platform,
            file_progress(quiet) as bar,
        ):
            task = bar.add_task(f"loading {file.name}", total=total)
            if bulk or initial:
                summary = BulkLoader(platform.db, platform.registry, workers=workers).load(
                    file,
                    source=source,
                    mapping=spec,
                    reject_file=rejects,
                    chunk_size=max(chunk_size, 5000),
                    operator=operator,
                    progress=lambda n: bar.advance(task, n),
                    initial=initial,
                )
            else:
                summary = FeedLoader(platform.db, platform.registry).load(
                    file,
                    source=source,
                    mapping=spec,
                    reject_file=rejects,
                    chunk_size=chunk_size,
                    operator=operator,
                    progress=lambda n: bar.advance(task, n),
                )
        if summary.already_loaded:
            err.print("this file was already loaded; nothing changed")
        print(json.dumps(summary.as_dict()))
        if summary.rejected:
            err.print(f"rejected rows: {rejects}", highlight=False)

    run()


def _count_rows(file: Path) -> int | None:
    if file.suffix.lower() == ".parquet" and file.is_file():
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(file).metadata.num_rows)
    return None


@app.command("reviews")
def reviews(
    agency: Agency,
    user: User,
    status: Annotated[str, typer.Option(help="open, same, different or all")] = "open",
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
) -> None:
    """List possible matches waiting for a steward."""

    @cli_errors
    def run() -> None:
        with build_platform() as platform:
            items = platform.registry.reviews(
                _steward(agency, user), None if status == "all" else status, limit, None
            )
        table = Table("review", "weight", "record", "candidate", "levels")
        for item in items:
            levels = ", ".join(f"{k}={v}" for k, v in item["details"]["levels"].items() if v)
            table.add_row(
                str(item["id"]),
                f"{item['weight']:.1f}",
                f"{item['record']['institution']}/{item['record']['local_id']}",
                f"{item['candidate']['institution']}/{item['candidate']['local_id']}",
                levels,
            )
        out.print(table)

    run()


@app.command("decide")
def decide(review: int, decision: Decision, agency: Agency, user: User, reason: Reason) -> None:
    """Decide a review: same (merge) or different (never link automatically)."""

    @cli_errors
    def run() -> None:
        with build_platform() as platform:
            result = platform.registry.decide_review(
                _steward(agency, user), review, decision, reason
            )
        out.print(json.dumps(result))

    run()


@app.command("merge")
def merge(survivor: str, merged: str, agency: Agency, user: User, reason: Reason) -> None:
    """Merge MERGED into SURVIVOR (both master index IDs)."""

    @cli_errors
    def run() -> None:
        with build_platform() as platform:
            platform.registry.merge(_steward(agency, user), survivor, merged, reason)
        out.print(f"merged {merged} into {survivor}")

    run()


@app.command("unmerge")
def unmerge(merged: str, agency: Agency, user: User, reason: Reason) -> None:
    """Undo the merge of MERGED (a merged-away master index ID)."""

    @cli_errors
    def run() -> None:
        with build_platform() as platform:
            platform.registry.unmerge(_steward(agency, user), merged, reason)
        out.print(f"restored {merged}")

    run()


@app.command("split")
def split(
    person: str,
    source_records: Annotated[
        list[int], typer.Argument(help="Source record ids to move to a new person.")
    ],
    agency: Agency,
    user: User,
    reason: Reason,
) -> None:
    """Move source records of PERSON to a new person."""

    @cli_errors
    def run() -> None:
        with build_platform() as platform:
            new = platform.registry.split(_steward(agency, user), person, source_records, reason)
        out.print(f"new person {new}")

    run()


@app.command("show")
def show(person: str, agency: Agency, user: User) -> None:
    """Show a person's golden record, source records and history."""

    @cli_errors
    def run() -> None:
        from healthroam.api.registry import person_json

        with build_platform() as platform:
            steward = _steward(agency, user)
            view = platform.registry.person(steward, person)
            history = platform.registry.history(steward, person)
        data = person_json(view)
        data["history"] = history
        print(json.dumps(data, ensure_ascii=False, indent=2, default=str))

    run()
