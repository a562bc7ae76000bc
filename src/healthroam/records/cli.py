"""`healthroam records`: operator commands on the shared health record (bulk import)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    TaskID,
)

from healthroam.cli_support import build_platform, cli_errors, file_progress
from healthroam.errors import InvalidInput, NotFound
from healthroam.records.bulk_import import BulkImporter, ImportReport
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet

app = typer.Typer(help="The shared health record (FHIR store).", no_args_is_help=True)
out = Console()
err = Console(stderr=True, soft_wrap=True)


@app.command("import")
def import_ndjson(
    files: Annotated[list[Path], typer.Argument(help="NDJSON files, one resource per line.")],
    institution: Annotated[
        str, typer.Option(help="Institution code the records come from (their owner).")
    ],
    operator: Annotated[str, typer.Option(help="Who runs the import (recorded in the audit).")],
    chunk_size: Annotated[
        int, typer.Option(min=1, max=50_000, help="Resources per committed chunk.")
    ] = 1000,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Load a hospital's history or a health-archive migration: validated, indexed, Patients
    matched in the master patient index, each chunk committed before the next is read."""

    @cli_errors
    def run() -> None:
        for file in files:
            if not file.is_file():
                raise InvalidInput(f"{file} is not a file", expression="FILES")
        with build_platform() as platform:
            try:
                platform.institutions.get(institution)
            except NotFound:
                raise InvalidInput(
                    f"no institution {institution}", expression="--institution"
                ) from None
            principal = Principal(
                client_id="cli:import",
                institution_code=institution,
                scopes=ScopeSet.parse("system/*.cu"),
                end_user=operator,
                purpose_of_use="HOPERAT",
            )
            importer = BulkImporter(
                platform.db,
                platform.audit,
                platform.records,
                chunk_size=chunk_size,
                processes=platform.settings.bulk_import_processes,
            )
            total = ImportReport()
            for file in files:
                with (
                    file.open("rb") as lines,
                    file_progress(quiet) as bar,
                ):
                    task = bar.add_task(f"importing {file.name}", total=_count_lines(file))

                    def advance(done: ImportReport, task: TaskID = task) -> None:
                        bar.update(task, completed=done.lines)

                    try:
                        report = importer.import_lines(principal, lines, progress=advance)
                    finally:
                        importer.close()
                for error in report.errors:
                    where = f" ({error.expression})" if error.expression else ""
                    err.print(f"{file.name} line {error.line}: {error.detail}{where}")
                total.created += report.created
                total.updated += report.updated
                total.unchanged += report.unchanged
                total.failed += report.failed
            out.print(
                f"created: {total.created}  updated: {total.updated}  "
                f"unchanged: {total.unchanged}  failed: {total.failed}"
            )
            if total.failed:
                raise typer.Exit(1)

    run()


def _count_lines(file: Path) -> int:
    with file.open("rb") as handle:
        return sum(1 for line in handle if line.strip())
