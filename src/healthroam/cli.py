"""The command line: ``healthroam`` (also ``python -m healthroam``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from healthroam.bootstrap import build_database
from healthroam.cards import cli as cards_cli
from healthroam.cli_support import build_platform, cli_errors
from healthroam.clinicians import cli as clinicians_cli
from healthroam.config import get_settings
from healthroam.db.migrate import current_revision, upgrade
from healthroam.exchange import cli as simulate_cli
from healthroam.exchange.care import cli as care_cli
from healthroam.exchange.hl7 import cli as gateway_cli
from healthroam.exchange.recognition import cli as recognition_cli
from healthroam.records import cli as records_cli
from healthroam.registry import cli as registry_cli
from healthroam.synth import cli as synth_cli

app = typer.Typer(
    help="healthroam: the provincial population-health information platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
institutions_app = typer.Typer(help="Hospitals, clinics and agencies.", no_args_is_help=True)
clients_app = typer.Typer(help="API clients of institutions.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)
demo_app = typer.Typer(help="Demo data.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(institutions_app, name="institutions")
app.add_typer(clients_app, name="clients")
app.add_typer(audit_app, name="audit")
app.add_typer(demo_app, name="demo")
app.add_typer(synth_cli.app, name="synth")
app.add_typer(cards_cli.app, name="cards")
app.add_typer(registry_cli.app, name="registry")
app.add_typer(recognition_cli.app, name="recognition")
app.add_typer(records_cli.app, name="records")
app.add_typer(care_cli.app, name="access")
app.add_typer(gateway_cli.app, name="gateway")
app.add_typer(simulate_cli.app, name="simulate")
app.add_typer(clinicians_cli.app, name="clinicians")

err = Console(stderr=True, soft_wrap=True)
out = Console()


@db_app.command("upgrade")
@cli_errors
def db_upgrade() -> None:
    """Create or migrate the schema to the newest revision."""
    database = build_database(get_settings())
    upgrade(database.engine)
    out.print(f"schema at revision {current_revision(database.engine)} ({database.dialect})")
    database.dispose()


@db_app.command("current")
@cli_errors
def db_current() -> None:
    """Print the schema revision."""
    database = build_database(get_settings())
    out.print(current_revision(database.engine) or "not migrated")
    database.dispose()


@institutions_app.command("add")
@cli_errors
def institutions_add(
    code: Annotated[str, typer.Option(help="Unique institution code.")],
    name: Annotated[str, typer.Option(help="Official name.")],
    kind: Annotated[str, typer.Option(help="hospital, clinic, township-health-centre, agency.")],
    region: Annotated[str, typer.Option(help="GB/T 2260 six-digit region code.")],
    level: Annotated[int | None, typer.Option(help="Hospital level 1, 2 or 3.")] = None,
) -> None:
    """Register an institution."""
    with build_platform() as platform:
        institution = platform.institutions.add(
            code=code, name=name, kind=kind, region=region, level=level
        )
    out.print(f"added institution {institution.code}")


@institutions_app.command("list")
@cli_errors
def institutions_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List institutions."""
    with build_platform() as platform:
        rows = platform.institutions.list()
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "code": i.code,
                        "name": i.name,
                        "kind": i.kind.value,
                        "level": i.level,
                        "region": i.region,
                        "active": i.active,
                    }
                    for i in rows
                ],
                ensure_ascii=False,
            )
        )
        return
    table = Table("code", "name", "kind", "level", "region", "active")
    for i in rows:
        table.add_row(i.code, i.name, i.kind.value, str(i.level or ""), i.region, str(i.active))
    out.print(table)


@clients_app.command("add")
@cli_errors
def clients_add(
    institution: Annotated[str, typer.Option(help="Code of the institution the client acts for.")],
    scope: Annotated[
        str, typer.Option(help='SMART v2 system scopes, e.g. "system/Patient.cruds".')
    ],
    name: Annotated[str | None, typer.Option(help="A label for the client.")] = None,
    jwks: Annotated[
        Path | None, typer.Option(help="JWKS file of public keys, for private_key_jwt.")
    ] = None,
    no_secret: Annotated[
        bool, typer.Option("--no-secret", help="Issue no secret (private_key_jwt only).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create an API client. The secret is printed once and stored only as a hash."""
    jwks_doc: dict[str, Any] | None = None
    if jwks is not None:
        try:
            jwks_doc = json.loads(jwks.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise typer.BadParameter(f"cannot read JWKS: {exc}", param_hint="--jwks") from None
        if not isinstance(jwks_doc, dict):
            raise typer.BadParameter("JWKS must be a JSON object", param_hint="--jwks")
    with build_platform() as platform:
        created = platform.clients.add(
            institution_code=institution,
            scopes=scope,
            name=name,
            jwks=jwks_doc,
            with_secret=not no_secret,
        )
    result = {
        "client_id": created.client.client_id,
        "client_secret": created.client_secret,
        "institution": created.client.institution_code,
        "scope": str(created.client.scopes),
    }
    if as_json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            out.print(f"{key}: {value}", highlight=False)
        if created.client_secret:
            out.print("[yellow]Store the secret now: it is not shown again.[/yellow]")


@clients_app.command("disable")
@cli_errors
def clients_disable(client_id: str) -> None:
    """Disable a client: its tokens stop working at once."""
    with build_platform() as platform:
        platform.clients.set_active(client_id, False)
    out.print(f"client {client_id} disabled")


@clients_app.command("enable")
@cli_errors
def clients_enable(client_id: str) -> None:
    """Enable a disabled client again."""
    with build_platform() as platform:
        platform.clients.set_active(client_id, True)
    out.print(f"client {client_id} enabled")


@clients_app.command("list")
@cli_errors
def clients_list(
    institution: Annotated[str | None, typer.Option(help="Only this institution.")] = None,
) -> None:
    """List clients (never their secrets)."""
    table = Table("client_id", "institution", "name", "auth", "active", "scope")
    with build_platform() as platform:
        clients = platform.clients.list(institution)
    for c in clients:
        auth = "+".join(a for a, on in (("secret", c.has_secret), ("jwks", bool(c.jwks))) if on)
        table.add_row(c.client_id, c.institution_code, c.name, auth, str(c.active), str(c.scopes))
    out.print(table)


@audit_app.command("verify")
@cli_errors
def audit_verify() -> None:
    """Recompute the hash chain; exit 1 if any entry was edited, inserted or deleted."""
    with build_platform() as platform:
        report = platform.audit.verify()
    if report.ok:
        out.print(f"audit trail intact: {report.entries} entries")
        return
    for problem in report.problems:
        err.print(f"entry {problem.seq}: {problem.reason}", highlight=False)
    err.print(
        f"[red]audit trail BROKEN[/red]: {len(report.problems)} problem(s) "
        f"in {report.entries} entries"
    )
    raise typer.Exit(1)


@demo_app.command("load")
@cli_errors
def demo_load(
    people: Annotated[int, typer.Option(min=0, help="Synthetic residents to register.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic province.")] = 2026,
) -> None:
    """Migrate, then load the synthetic province's institutions, demo clients and patients."""
    from rich.progress import Progress

    from healthroam.demo import load_demo

    settings = get_settings()
    database = build_database(settings)
    upgrade(database.engine)
    database.dispose()
    with build_platform() as platform, Progress(console=err, transient=True) as bar:
        task = bar.add_task("registering demo patients", total=people)
        summary = load_demo(
            platform, people=people, seed=seed, progress=lambda n: bar.advance(task, n)
        )
    out.print(
        f"institutions added: {summary.institutions_added}; "
        f"patients added: {summary.patients_added}"
    )
    out.print(f"demo client credentials: {summary.clients_file}", highlight=False)


@app.command("serve")
@cli_errors
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (HEALTHROAM_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (HEALTHROAM_PORT).")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Server processes (HEALTHROAM_SERVER_WORKERS; default on PostgreSQL: the CPU "
            "count). They share the database; one of them, elected by a PostgreSQL advisory "
            "lock, runs the audit sealer. SQLite serves from one process only.",
        ),
    ] = None,
) -> None:
    """Serve the HTTP API (FastAPI on Uvicorn)."""
    import uvicorn

    from healthroam.logs import configure_logging

    settings = get_settings()
    if workers is not None and workers > 1 and settings.is_sqlite:
        raise typer.BadParameter(
            "SQLite storage serves from one process (one writer at a time, and every audited "
            "read writes); use PostgreSQL for several (docs/fhir-store.md)",
            param_hint="--workers",
        )
    processes = workers or settings.serve_processes
    configure_logging(settings.log_level)
    if processes > 1:
        _warn_if_connections_short(settings.database_url, processes, settings.database_pool_size)
    uvicorn.run(
        "healthroam.api.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        access_log=False,  # our middleware logs paths without query strings
        log_config=None,
        workers=processes,
    )


def _warn_if_connections_short(url: str, processes: int, pool_size: int) -> None:
    """Each process may open 2 x pool_size connections and its leader election one more."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    wanted = processes * (2 * pool_size + 1)
    try:
        engine = create_engine(url, poolclass=NullPool)
        with engine.connect() as conn:
            limit = int(conn.execute(text("SHOW max_connections")).scalar_one())
        engine.dispose()
    except Exception:  # the server's own start reports an unreachable database
        return
    if wanted > limit:
        err.print(
            f"[yellow]warning:[/yellow] {processes} processes may open up to {wanted} database "
            f"connections (2 x database_pool_size + 1 each) but PostgreSQL allows "
            f"{limit} (max_connections); lower --workers or HEALTHROAM_DATABASE_POOL_SIZE",
            highlight=False,
        )


def main() -> None:
    app(prog_name="healthroam")


if __name__ == "__main__":
    main()
