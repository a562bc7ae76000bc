"""`healthroam clinicians`: accounts for the clinician page (add, list, disable, enable)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from healthroam.cli_support import build_platform, cli_errors

app = typer.Typer(help="Clinician accounts of the clinician page.", no_args_is_help=True)
out = Console()


def _password(password_file: Path | None) -> str:
    """From the first line of a file, or typed twice at a hidden prompt; never echoed."""
    if password_file is not None:
        try:
            lines = password_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise typer.BadParameter(
                f"cannot read the password file: {exc.strerror}", param_hint="--password-file"
            ) from None
        if not lines or not lines[0]:
            raise typer.BadParameter("the password file is empty", param_hint="--password-file")
        return lines[0]
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@app.command("add")
@cli_errors
def add(
    username: Annotated[str, typer.Argument(help="Sign-in name, e.g. dr.li (lower case).")],
    institution: Annotated[str, typer.Option(help="Code of the clinician's institution.")],
    name: Annotated[str, typer.Option(help="Display name, e.g. 李医生.")],
    password_file: Annotated[
        Path | None,
        typer.Option(help="Read the password from the first line of this file (else: prompt)."),
    ] = None,
) -> None:
    """Create a clinician account. The password is stored only as an Argon2id hash."""
    password = _password(password_file)
    with build_platform() as platform:
        clinician = platform.clinicians.add(
            username=username, display_name=name, institution_code=institution, password=password
        )
    out.print(
        f"clinician {clinician.username} added for {clinician.institution_code}", highlight=False
    )


@app.command("list")
@cli_errors
def list_(
    institution: Annotated[str | None, typer.Option(help="Only this institution.")] = None,
) -> None:
    """List clinician accounts (never their passwords)."""
    table = Table("username", "name", "institution", "active", "created")
    with build_platform() as platform:
        clinicians = platform.clinicians.list(institution)
    for c in clinicians:
        table.add_row(
            c.username,
            c.display_name,
            c.institution_code,
            str(c.active),
            c.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    out.print(table)


@app.command("disable")
@cli_errors
def disable(username: str) -> None:
    """Disable an account: its open sessions end at once."""
    with build_platform() as platform:
        platform.clinicians.set_active(username, False)
    out.print(f"clinician {username} disabled", highlight=False)


@app.command("enable")
@cli_errors
def enable(username: str) -> None:
    """Enable a disabled account again."""
    with build_platform() as platform:
        platform.clinicians.set_active(username, True)
    out.print(f"clinician {username} enabled", highlight=False)


@app.command("password")
@cli_errors
def password(
    username: str,
    password_file: Annotated[
        Path | None,
        typer.Option(help="Read the password from the first line of this file (else: prompt)."),
    ] = None,
) -> None:
    """Set a new password (also unlocks the account and ends its sessions)."""
    secret = _password(password_file)
    with build_platform() as platform:
        platform.clinicians.set_password(username, secret)
    out.print(f"password of {username} changed", highlight=False)
