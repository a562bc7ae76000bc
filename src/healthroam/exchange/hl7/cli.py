"""`healthroam gateway`: the HL7 v2 MLLP listener, and `gateway senders` to bind senders."""

from __future__ import annotations

import importlib
import inspect
import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from healthroam.cli_support import build_platform, cli_errors
from healthroam.errors import InvalidInput

if TYPE_CHECKING:
    from healthroam.bootstrap import Platform
    from healthroam.exchange.hl7.contract import MessageHandler


DEFAULT_HANDLER = "healthroam.exchange.hl7.handlers:platform_dispatcher"

app = typer.Typer(
    help="HL7 v2 gateway (MLLP). Without a subcommand: run the listener.",
    invoke_without_command=True,
)
senders_app = typer.Typer(
    help="HL7 senders (MSH-3 application, MSH-4 facility) bound to institutions.",
    no_args_is_help=True,
)
app.add_typer(senders_app, name="senders")

out = Console()
err = Console(stderr=True, soft_wrap=True)


def load_handler(spec: str, platform: Platform) -> MessageHandler:
    """``module:factory``. The factory's required positional parameters are filled by name:
    ``platform`` gets the Platform, any other name the Platform's service of that name
    (``build_dispatcher(records, registry)`` gets ``platform.records``, ``platform.registry``)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise InvalidInput("--handler must look like package.module:factory", expression="handler")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise InvalidInput(
            f"message handlers not found: cannot import {module_name} ({exc.name})",
            expression="handler",
        ) from None
    factory: Any = getattr(module, attribute, None)
    if factory is None:
        raise InvalidInput(f"{module_name} has no {attribute}", expression="handler")
    arguments = []
    for name, parameter in inspect.signature(factory).parameters.items():
        if parameter.default is not inspect.Parameter.empty or parameter.kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            continue
        if name == "platform":
            arguments.append(platform)
        elif hasattr(platform, name):
            arguments.append(getattr(platform, name))
        else:
            raise InvalidInput(
                f"{spec} needs '{name}', which the platform does not provide", expression="handler"
            )
    handler: MessageHandler = factory(*arguments)
    return handler


@app.callback()
@cli_errors
def gateway(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Bind address (HEALTHROAM_GATEWAY_HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (HEALTHROAM_GATEWAY_PORT).")] = None,
    handler: Annotated[
        str, typer.Option(help="Message handler factory, module:function(platform).")
    ] = DEFAULT_HANDLER,
    processes: Annotated[
        int | None,
        typer.Option(help="Processes sharing the port (HEALTHROAM_GATEWAY_PROCESSES).", min=1),
    ] = None,
    reuse_port: Annotated[bool, typer.Option("--reuse-port", hidden=True)] = False,
) -> None:
    """Run the MLLP listener until SIGINT/SIGTERM."""
    if ctx.invoked_subcommand is not None:
        return
    import signal
    import subprocess
    import sys

    from healthroam.config import get_settings

    settings = get_settings()
    count = processes or settings.gateway_processes
    port = settings.gateway_port if port is None else port
    children: list[subprocess.Popen[bytes]] = []
    if count > 1:
        if port == 0:
            raise InvalidInput("several processes need a fixed port", expression="port")
        command = [sys.executable, "-m", "healthroam", "gateway", "--port", str(port)]
        command += ["--handler", handler, "--processes", "1", "--reuse-port"]
        command += ["--host", host] if host else []
        children = [subprocess.Popen(command) for _ in range(count - 1)]  # noqa: S603
    try:
        _serve(settings, host, port, handler, reuse_port or count > 1)
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            child.wait(60)


def _serve(settings: Any, host: str | None, port: int, handler: str, reuse: bool) -> None:
    import asyncio

    from healthroam.bootstrap import build
    from healthroam.exchange.hl7.gateway import GatewayConfig, serve, server_ssl_context
    from healthroam.exchange.hl7.service import GatewayService
    from healthroam.logs import configure_logging

    with build(settings) as platform:
        configure_logging(settings.log_level)
        context = None
        if settings.gateway_tls_cert_file or settings.gateway_tls_key_file:
            if not (settings.gateway_tls_cert_file and settings.gateway_tls_key_file):
                raise InvalidInput(
                    "TLS needs both HEALTHROAM_GATEWAY_TLS_CERT_FILE and _KEY_FILE",
                    expression="gateway_tls_key_file",
                )
            context = server_ssl_context(
                settings.gateway_tls_cert_file,
                settings.gateway_tls_key_file,
                settings.gateway_tls_client_ca_file,
            )
        service = GatewayService(
            platform.db,
            load_handler(handler, platform),
            default_charset=settings.gateway_default_charset,
        )
        config = GatewayConfig(
            host=host or settings.gateway_host,
            port=port,
            max_message_bytes=settings.gateway_max_message_bytes,
            idle_timeout_seconds=settings.gateway_idle_timeout_seconds,
            writer_threads=settings.gateway_writer_threads,
            group_commit_max=settings.gateway_group_commit_max,
            ssl_context=context,
            reuse_port=reuse,
        )
        asyncio.run(serve(service, config))


@app.command("purge-rejections")
@cli_errors
def purge_rejections(
    days: Annotated[
        int | None,
        typer.Option(
            help="Keep this many days (HEALTHROAM_GATEWAY_REJECTION_RETENTION_DAYS).", min=1
        ),
    ] = None,
) -> None:
    """Delete refused messages (AE/AR log) older than the retention; accepted ones stay."""
    from healthroam.config import get_settings
    from healthroam.exchange.hl7.service import purge_rejections as purge

    settings = get_settings()
    keep = settings.gateway_rejection_retention_days if days is None else days
    with build_platform() as platform:
        deleted = purge(platform.db, keep)
    out.print(f"{deleted} rejections older than {keep} days deleted", highlight=False)


def _senders(platform: Platform) -> Any:
    from healthroam.exchange.hl7.service import SenderService

    return SenderService(platform.db)


@senders_app.command("add")
@cli_errors
def senders_add(
    application: Annotated[str, typer.Option(help="MSH-3 namespace id (sending application).")],
    facility: Annotated[str, typer.Option(help="MSH-4 namespace id (sending facility).")],
    institution: Annotated[str, typer.Option(help="Code of the registered institution.")],
    description: Annotated[str | None, typer.Option(help="A label, e.g. the HIS vendor.")] = None,
) -> None:
    """Bind a sender to an institution: its messages are written as that institution."""
    with build_platform() as platform:
        binding = _senders(platform).add(
            application=application,
            facility=facility,
            institution_code=institution,
            description=description,
        )
    out.print(
        f"sender {binding.application}@{binding.facility} -> {binding.institution_code}",
        highlight=False,
    )


@senders_app.command("list")
@cli_errors
def senders_list(
    institution: Annotated[str | None, typer.Option(help="Only this institution.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List bound senders."""
    with build_platform() as platform:
        rows = _senders(platform).list(institution)
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "application": b.application,
                        "facility": b.facility,
                        "institution": b.institution_code,
                        "active": b.active,
                        "description": b.description,
                    }
                    for b in rows
                ],
                ensure_ascii=False,
            )
        )
        return
    table = Table("application (MSH-3)", "facility (MSH-4)", "institution", "active", "description")
    for b in rows:
        table.add_row(b.application, b.facility, b.institution_code, str(b.active), b.description)
    out.print(table)


@senders_app.command("remove")
@cli_errors
def senders_remove(
    application: Annotated[str, typer.Option(help="MSH-3 namespace id.")],
    facility: Annotated[str, typer.Option(help="MSH-4 namespace id.")],
) -> None:
    """Unbind a sender: its next messages get AR."""
    with build_platform() as platform:
        _senders(platform).remove(application, facility)
    out.print(f"sender {application}@{facility} removed", highlight=False)


@senders_app.command("disable")
@cli_errors
def senders_disable(
    application: Annotated[str, typer.Option(help="MSH-3 namespace id.")],
    facility: Annotated[str, typer.Option(help="MSH-4 namespace id.")],
) -> None:
    """Keep the binding but refuse the sender's messages (AR) until enabled again."""
    with build_platform() as platform:
        _senders(platform).set_active(application, facility, False)
    out.print(f"sender {application}@{facility} disabled", highlight=False)


@senders_app.command("enable")
@cli_errors
def senders_enable(
    application: Annotated[str, typer.Option(help="MSH-3 namespace id.")],
    facility: Annotated[str, typer.Option(help="MSH-4 namespace id.")],
) -> None:
    """Accept a disabled sender's messages again."""
    with build_platform() as platform:
        _senders(platform).set_active(application, facility, True)
    out.print(f"sender {application}@{facility} enabled", highlight=False)
