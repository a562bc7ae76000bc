"""`healthroam simulate hospitals`: HL7 v2 traffic from the synthetic province over MLLP."""

from __future__ import annotations

import ssl
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from healthroam.cli_support import cli_errors

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
) -> None:
    """Drive the HL7 gateway with ADT A04/A01/A08/A03, ORM^O01 and ORU^R01 messages."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from healthroam.config import get_settings
    from healthroam.exchange.simulator import SimulatorConfig, Summary, setup_senders, simulate

    settings = get_settings()
    if setup:
        from healthroam.bootstrap import build

        with build(settings) as platform:
            added = setup_senders(platform, count)
        out.print(f"senders bound: {added} new")
    config = SimulatorConfig(
        host=host or settings.gateway_host,
        port=port or settings.gateway_port,
        count=count,
        rate=rate,
        seconds=seconds,
        seed=seed,
        ssl_context=ssl.create_default_context(cafile=str(tls_ca)) if tls_ca else None,
        server_hostname=server_hostname,
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
                bar.update(
                    task,
                    description=(
                        f"sent {s.sent}  AA {s.codes.get('AA', 0)}  AE {s.codes.get('AE', 0)}  "
                        f"AR {s.codes.get('AR', 0)}  no ACK {s.no_ack}  "
                        f"{s.sent / elapsed:.0f} msg/s"
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
