"""``healthroam recognition``: the effective recognition table and the avoided-duplicate
counts. Mount with ``app.add_typer(recognition_cli.app, name="recognition")``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from healthroam.cli_support import build_platform, cli_errors
from healthroam.exchange.recognition.model import parse_day

app = typer.Typer(
    help="Result recognition (检查检验结果互认): the table and the counts.", no_args_is_help=True
)
out = Console()


@app.command("counts")
@cli_errors
def counts(
    since: Annotated[str, typer.Option(help="first day of alerts counted (YYYY-MM-DD)")],
    until: Annotated[str | None, typer.Option(help="last day counted (default: today)")] = None,
    by: Annotated[str, typer.Option(help="group by the ordering or the result institution")] = (
        "ordering"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="print JSON lines")] = False,
) -> None:
    """Alerts, recognised alerts and avoided duplicates per test and institution."""
    first = parse_day(since, "since")
    assert first is not None
    with build_platform() as platform:
        rows = platform.recognition.counts(first, parse_day(until, "until"), by)
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row.as_dict(), ensure_ascii=False))
        return
    table = Table(
        "test", f"{by} institution", "orders", "alerts", "recognised", "avoided", "declined"
    )
    for row in rows:
        table.add_row(
            row.test_id,
            row.institution or "(unknown)",
            *(str(n) for n in (row.orders, row.alerts, row.recognised, row.avoided, row.declined)),
        )
    out.print(table)


@app.command("table")
@cli_errors
def show_table() -> None:
    """The effective table: shipped defaults with HEALTHROAM_RECOGNITION_TABLE_FILE merged."""
    from healthroam.config import get_settings
    from healthroam.exchange.recognition.model import load_table

    loaded = load_table(get_settings().recognition_table_file)
    table = Table("test", "名称", "class", "LOINC", "days", "recognised when")
    for test in loaded.tests:
        table.add_row(
            test.id,
            test.name,
            test.loinc_class,
            " ".join(sorted(test.loinc)),
            str(test.validity_days),
            " and ".join(c.value for c in test.recognise),
        )
    out.print(table)
    out.print(f"local codes: {len(loaded.local_codes)}; region digits: {loaded.region_digits}")
