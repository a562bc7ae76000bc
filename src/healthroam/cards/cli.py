"""`healthroam cards`: bulk issuance, EHC IDs, offline checks, usage, and key management."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from healthroam.cli_support import build_platform, cli_errors
from healthroam.errors import InvalidInput

app = typer.Typer(
    help="Resident health cards: issue, lifecycle, EHC IDs, offline checks.", no_args_is_help=True
)
keys_app = typer.Typer(help="Card keys (密管): init, rotate, list, export.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

out = Console()
err = Console(stderr=True, soft_wrap=True)


@app.command("issue")
@cli_errors
def issue(
    region: Annotated[
        str | None, typer.Option(help="Prefecture or county code (460100, 460106).")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every active master person.")] = False,
    activate: Annotated[
        bool, typer.Option(help="Issue straight to active (default: pending activation).")
    ] = False,
    csv_path: Annotated[
        Path | None, typer.Option("--csv", help="Write the vendor personalisation file here.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Signing processes (HEALTHROAM_CARD_ISSUE_WORKERS).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Cards per transaction.")] = None,
) -> None:
    """Issue electronic (or temporary) cards to everyone in scope without one; resumable."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from healthroam.cards.bulk import BulkIssuer

    with build_platform() as platform:
        settings = platform.settings
        issuer = BulkIssuer(
            platform.cards,
            workers=settings.card_issue_workers if workers is None else workers,
            batch_size=batch_size or settings.card_issue_batch_size,
        )
        with Progress(
            TextColumn("issuing cards"),
            BarColumn(),
            TextColumn("{task.completed:,} issued, {task.fields[skipped]:,} skipped"),
            TimeElapsedColumn(),
            console=err,
            transient=False,
        ) as bar:
            task = bar.add_task("issue", total=None, skipped=0)
            summary = issuer.run(
                region=region,
                all_=all_,
                activate=activate,
                csv_path=csv_path,
                progress=lambda issued, skipped: bar.update(
                    task, completed=issued, skipped=skipped
                ),
            )
    rate = summary.issued / summary.seconds if summary.seconds else 0.0
    out.print(
        f"run {summary.run_id} ({'resumed' if summary.resumed else 'new'}): "
        f"{summary.issued:,} cards issued, {summary.skipped:,} people skipped "
        f"in {summary.seconds:.1f} s ({rate:,.0f}/s)",
        highlight=False,
    )
    for reason, count in sorted(summary.skipped_reasons.items()):
        out.print(f"  skipped, {reason}: {count:,}", highlight=False)
    if summary.csv_path:
        out.print(f"personalisation file: {summary.csv_path}", highlight=False)


@app.command("ehc-id")
@cli_errors
def ehc_id(
    root_key: Annotated[str, typer.Option(help="EHC root security key, 32 hex characters.")],
    master_index_id: Annotated[str, typer.Option(help="Master index ID, 64 hex characters.")],
    id_type: Annotated[str, typer.Option(help="ID type code (01 resident ID card ...).")],
    id_number: Annotated[str, typer.Option(help="ID number.")],
) -> None:
    """Derive an EHC ID and print it alone on a line."""
    from healthroam.cards.ehc_id import derive_ehc_id

    try:
        key = bytes.fromhex(root_key)
    except ValueError:
        raise InvalidInput("root key must be hex", expression="rootKey") from None
    print(derive_ehc_id(key, master_index_id, id_type, id_number))


@app.command("verify-offline")
@cli_errors
def verify_offline_cmd(
    text: Annotated[str, typer.Argument(help="The HR1: credential text, or - for stdin.")],
    trust_list: Annotated[Path, typer.Option(help="Signed trust list file (COSE bytes).")],
    anchors: Annotated[Path, typer.Option(help="Anchor bundle JSON (keys export-trust-list).")],
    root_key: Annotated[
        str | None, typer.Option(help="Pin the root public key (hex) the bundle must name.")
    ] = None,
) -> None:
    """Verify an offline credential the way a terminal does (no network, no database)."""
    from healthroam.cards.credential import CredentialRejected
    from healthroam.cards.trustlist import load_trust_list, verify_offline
    from healthroam.keys.service import trust_list_anchors

    if text == "-":
        text = sys.stdin.read().strip()
    try:
        bundle = json.loads(anchors.read_text())
        data = trust_list.read_bytes()
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"cannot read input file ({type(exc).__name__})") from None
    now = time.time()
    trust = load_trust_list(data, trust_list_anchors(bundle, root_public_key=root_key), now)
    try:
        result = verify_offline(text, trust, now)
    except CredentialRejected as exc:
        err.print(f"[red]refused[/red]: {exc.reason} ({exc.detail})", highlight=False)
        raise typer.Exit(1) from None
    cred = result.credential
    print(
        json.dumps(
            {
                "accepted": True,
                "keyId": result.key_id,
                "algorithm": result.algorithm,
                "issuer": cred.issuer,
                "statusVersion": cred.status_version,
                "expiresAt": datetime.fromtimestamp(cred.expires_at, UTC).isoformat(),
                "name": cred.name,
                "birthDate": cred.birth_date.isoformat(),
                "maskedIdNumber": cred.masked_id_number,
            },
            ensure_ascii=False,
        )
    )


@app.command("usage")
@cli_errors
def usage(
    date: Annotated[str, typer.Option(help="Beijing-time day, YYYY-MM-DD.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Card uses per institution and step on one day (用卡监控)."""
    with build_platform() as platform:
        rows = platform.cards.usage(None, date)
    if as_json:
        print(json.dumps([_row(r) for r in rows]))
        return
    table = Table("institution", "step", "accepted", "refused")
    for r in rows:
        table.add_row(r.institution_code, r.step_code, f"{r.accepted:,}", f"{r.refused:,}")
    out.print(table)


def _row(r: object) -> dict[str, object]:
    return {
        name: getattr(r, name) for name in ("institution_code", "step_code", "accepted", "refused")
    }


@keys_app.command("init")
@cli_errors
def keys_init(
    region: Annotated[
        list[str] | None, typer.Option(help="Also make an issuing key for this region.")
    ] = None,
) -> None:
    """Create the root, trust-list, EHC root, QR and issuing keys that do not exist yet."""
    with build_platform() as platform:
        made = platform.keys.init(region or [])
    if not made:
        out.print("all keys already exist")
    for record in made:
        out.print(
            f"created {record.purpose.value} key {record.key_id} ({record.algorithm}, "
            f"{record.backend})",
            highlight=False,
        )


@keys_app.command("rotate")
@cli_errors
def keys_rotate(
    purpose: Annotated[str, typer.Option(help="issuing, trust-list, qr or ehc-root.")],
    region: Annotated[str | None, typer.Option(help="Region of an issuing key.")] = None,
    lead: Annotated[
        int | None,
        typer.Option(help="Seconds before the new key signs (default: the rotation lead setting)."),
    ] = None,
) -> None:
    """Make a key's successor; the old key keeps verifying what it signed."""
    from healthroam.keys.model import parse_purpose

    with build_platform() as platform:
        record = platform.keys.rotate(parse_purpose(purpose), region, lead)
    starts = datetime.fromtimestamp(record.valid_from, UTC).isoformat()
    out.print(
        f"new {record.purpose.value} key {record.key_id} signs from {starts}", highlight=False
    )


@keys_app.command("list")
@cli_errors
def keys_list() -> None:
    """Every card key with its validity (never key material)."""
    with build_platform() as platform:
        records = platform.keys.records(refresh=True)

    def when(t: int | None) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M") if t else "-"

    table = Table(
        "key id",
        "purpose",
        "alg",
        "region",
        "ver",
        "backend",
        "signs from",
        "signs until",
        "published until",
    )
    for r in records:
        table.add_row(
            r.key_id,
            r.purpose.value,
            r.algorithm,
            r.region or "",
            str(r.version),
            r.backend,
            when(r.valid_from),
            when(r.valid_until),
            when(r.publish_until),
        )
    out.print(table)


@keys_app.command("export-trust-list")
@cli_errors
def keys_export_trust_list(
    out_file: Annotated[Path, typer.Option("--out", help="Where to write the signed trust list.")],
    anchors: Annotated[
        Path | None, typer.Option(help="Also write the anchor bundle (JSON) here.")
    ] = None,
) -> None:
    """Write the current signed trust list (and the terminals' anchor bundle)."""
    with build_platform() as platform:
        data = platform.cards.trust_list()
        bundle = platform.keys.anchor_bundle()
    out_file.write_bytes(data)
    out.print(f"trust list: {len(data):,} bytes -> {out_file}", highlight=False)
    if anchors is not None:
        anchors.write_text(json.dumps(bundle, indent=2))
        out.print(f"anchor bundle -> {anchors}", highlight=False)
