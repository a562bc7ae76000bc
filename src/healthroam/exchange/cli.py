"""`healthroam simulate hospitals`: HL7 v2 traffic from the synthetic province over MLLP."""

from __future__ import annotations

import ssl
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from healthroam.cli_support import cli_errors

if TYPE_CHECKING:
    from healthroam.exchange.simulator import Summary

app = typer.Typer(help="Simulated traffic for demos and load tests.", no_args_is_help=True)
out = Console()
err = Console(stderr=True, soft_wrap=True)


@app.command("hospitals")
@cli_errors
def hospitals(
    count: Annotated[int, typer.Option(min=1, help="Hospitals, one MLLP connection each.")] = 20,
    rate: Annotated[float, typer.Option(min=0.1, help="Messages per second, all together.")] = 200,
    seconds: Annotated[float, typer.Option(min=1, help="How long to run.")] = 30,
    host: Annotated[
        str | None, typer.Option(help="Gateway host (HEALTHROAM_GATEWAY_HOST).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Gateway port (HEALTHROAM_GATEWAY_PORT).")
    ] = None,
    setup: Annotated[
        bool,
        typer.Option(
            "--setup",
            help="First register the hospitals and bind their HIS as senders in the database.",
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic province.")] = 2026,
    tls_ca: Annotated[
        Path | None, typer.Option(help="Connect over TLS, trusting this CA bundle (PEM).")
    ] = None,
    server_hostname: Annotated[
        str | None, typer.Option(help="Name the gateway's TLS certificate carries.")
    ] = None,
    api: Annotated[
        str | None,
        typer.Option(
            help="The platform's HTTP base (e.g. http://127.0.0.1:8000): a share of the "
            "hospitals then talk FHIR REST and check residents in by health card."
        ),
    ] = None,
    fhir_share: Annotated[
        float, typer.Option(min=0, max=1, help="With --api: share of hospitals on FHIR.")
    ] = 0.5,
    check_in_share: Annotated[
        float,
        typer.Option(min=0, max=1, help="With --api: share of FHIR visits with a card check-in."),
    ] = 0.3,
    read_summary: Annotated[
        bool,
        typer.Option(
            "--summary/--no-summary",
            help="With --api: after each check-in the clinician reads the resident's summary.",
        ),
    ] = True,
    clients_file: Annotated[
        Path | None,
        typer.Option(
            "--clients-file",
            help="With --api: the API clients' credentials (written by --setup, mode 0600; "
            "default DATA_DIR/simulator-clients.json).",
        ),
    ] = None,
) -> None:
    """Drive the HL7 gateway with ADT A04/A01/A08/A03, ORM^O01 and ORU^R01 messages; with
    --api, some hospitals send FHIR transaction Bundles and card check-ins instead."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from healthroam.config import get_settings
    from healthroam.exchange.simulator import SimulatorConfig, setup_senders, simulate

    settings = get_settings()
    credentials_path = clients_file or settings.data_dir / "simulator-clients.json"
    if setup:
        from healthroam.bootstrap import build

        with build(settings) as platform:
            added = setup_senders(platform, count)
            out.print(f"senders bound: {added} new")
            if api:
                from healthroam.exchange.simulator import hospitals as simulated
                from healthroam.exchange.simulator_api import api_hospitals, setup_api_clients

                made = setup_api_clients(
                    platform, api_hospitals(simulated(count), fhir_share), credentials_path
                )
                out.print(f"API clients created: {made} (credentials in {credentials_path})")
    api_options = None
    if api:
        from healthroam.exchange.simulator_api import ApiOptions, load_credentials

        api_options = ApiOptions(
            base_url=api.rstrip("/"),
            credentials=load_credentials(credentials_path),
            fhir_share=fhir_share,
            check_in_share=check_in_share,
            summary=read_summary,
        )
    config = SimulatorConfig(
        host=host or settings.gateway_host,
        port=port or settings.gateway_port,
        count=count,
        rate=rate,
        seconds=seconds,
        seed=seed,
        ssl_context=ssl.create_default_context(cafile=str(tls_ca)) if tls_ca else None,
        server_hostname=server_hostname,
        api=api_options,
    )
    result: list[Summary] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(simulate(config, on_message=lambda s: live.append(s)))
        except BaseException as exc:
            failure.append(exc)

    live: list[Summary] = []
    worker = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("starting", total=None)
        worker.start()
        while worker.is_alive():
            worker.join(0.25)
            if live:
                s = live[-1]
                elapsed = max(time.monotonic() - started, 1e-6)
                calls = "".join(f"  {k} {t.ok}/{t.sent}" for k, t in list(s.calls.items()))
                bar.update(
                    task,
                    description=(
                        f"sent {s.sent}  AA {s.codes.get('AA', 0)}  AE {s.codes.get('AE', 0)}  "
                        f"AR {s.codes.get('AR', 0)}  no ACK {s.no_ack}  "
                        f"{s.sent / elapsed:.0f} msg/s{calls}"
                    ),
                )
    if failure:
        raise failure[0]
    summary = result[0]
    table = Table("sent", "AA", "AE", "AR", "no ACK", "msg/s", "p50 ms", "p95 ms")
    table.add_row(
        str(summary.sent),
        str(summary.codes.get("AA", 0)),
        str(summary.codes.get("AE", 0)),
        str(summary.codes.get("AR", 0)),
        str(summary.no_ack),
        f"{summary.sent / max(summary.elapsed, 1e-6):.0f}",
        f"{summary.percentile(0.5) * 1000:.1f}",
        f"{summary.percentile(0.95) * 1000:.1f}",
    )
    out.print(table)
    out.print(
        "by message: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.by_type.items())),
        highlight=False,
    )
    if api_options is not None:
        _print_calls(summary)


def _print_calls(summary: Summary) -> None:
    """The API hospitals' calls per kind: HL7 ACK first for comparison."""
    from healthroam.exchange.simulator_api import CALL_KINDS

    table = Table("kind", "sent", "ok", "errors", "per s", "p50 ms", "p95 ms", "error statuses")
    elapsed = max(summary.elapsed, 1e-6)
    acked = sum(summary.codes.values())
    table.add_row(
        "HL7 ACK",
        str(summary.sent),
        str(summary.codes.get("AA", 0)),
        str(summary.sent - summary.codes.get("AA", 0)),
        f"{summary.sent / elapsed:.0f}",
        f"{summary.percentile(0.5) * 1000:.1f}" if acked else "-",
        f"{summary.percentile(0.95) * 1000:.1f}" if acked else "-",
        "",
    )
    for kind in CALL_KINDS:
        tally = summary.calls.get(kind)
        if tally is None:
            continue
        table.add_row(
            kind,
            str(tally.sent),
            str(tally.ok),
            str(tally.errors),
            f"{tally.sent / elapsed:.1f}",
            f"{tally.percentile(0.5) * 1000:.1f}" if tally.ok else "-",
            f"{tally.percentile(0.95) * 1000:.1f}" if tally.ok else "-",
            ", ".join(f"{k}: {v}" for k, v in sorted(tally.statuses.items())),
        )
    out.print(table)
    for kind, tally in sorted(summary.calls.items()):
        if tally.first_error:
            err.print(f"first {kind} error: {tally.first_error}", highlight=False, markup=False)
