"""`healthroam access`: the privacy officer's review of break-the-glass accesses."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from healthroam.cli_support import build_platform, cli_errors
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet

app = typer.Typer(help="Cross-institution access: break-the-glass review.", no_args_is_help=True)
out = Console()

Institution = Annotated[
    str, typer.Option(help="Your institution (an agency sees every institution's exceptions).")
]
User = Annotated[str, typer.Option(help="Your user id as privacy officer (recorded).")]


def _officer(institution: str, user: str) -> Principal:
    return Principal(
        client_id="cli",
        institution_code=institution,
        scopes=ScopeSet.parse("system/AccessException.rus"),
        end_user=user,
        purpose_of_use="HOPERAT",
    )


@app.command("exceptions")
@cli_errors
def exceptions(
    institution: Institution,
    user: User,
    status: Annotated[str, typer.Option(help="open, closed or any.")] = "open",
    only: Annotated[
        str | None, typer.Option("--of", help="Only exceptions taken at this institution.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List break-the-glass accesses waiting for review (or closed ones)."""
    from healthroam.api.care import exception_json

    with build_platform() as platform:
        found = platform.care.exceptions(
            _officer(institution, user),
            status=None if status == "any" else status,
            institution=only,
            limit=limit,
        )
    if as_json:
        out.print_json(json.dumps([exception_json(e) for e in found], ensure_ascii=False))
        return
    table = Table("id", "when", "institution", "user", "person", "access", "reason", "status")
    for e in found:
        table.add_row(
            str(e.id),
            e.occurred_at.strftime("%Y-%m-%d %H:%M"),
            e.institution_code,
            e.end_user or "-",
            e.master_index_id[:12] + "...",
            e.access + (" (consent overridden)" if e.consent_overridden else ""),
            e.reason,
            e.status.value if e.review_outcome is None else f"closed: {e.review_outcome.value}",
        )
    out.print(table)


@app.command("close")
@cli_errors
def close(
    exception_id: Annotated[int, typer.Argument(help="The access exception's id.")],
    institution: Institution,
    user: User,
    outcome: Annotated[str, typer.Option(help="justified or unjustified.")],
    note: Annotated[str | None, typer.Option(help="The review's note.")] = None,
) -> None:
    """Close a reviewed break-the-glass access."""
    with build_platform() as platform:
        closed = platform.care.close_exception(
            _officer(institution, user), exception_id, outcome=outcome, note=note
        )
    out.print(f"access exception {closed.id} closed: {closed.review_outcome}")
