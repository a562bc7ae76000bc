"""``healthroam registry train|thresholds|link``: train the matching model, re-choose its
thresholds, link a batch of source files.

Mount with ``app.add_typer(linkage_cli.app, name="registry")``.
"""

from __future__ import annotations

import json
import tempfile
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer

from healthroam.cli_support import cli_errors
from healthroam.registry import linkage
from healthroam.registry.linkage_prepare import prepare

app = typer.Typer(help="Matching model training and batch linkage (Splink on DuckDB).")

Sources = Annotated[
    list[Path],
    typer.Argument(help="source files, or province folders (their sources/ is read)"),
]


def _connect(memory_limit: str, temp_dir: Path | None) -> Any:
    import duckdb

    con = duckdb.connect()
    con.execute("set threads = 2")
    con.execute(f"set memory_limit = '{memory_limit}'")
    spill = temp_dir or Path(tempfile.gettempdir())
    con.execute(f"set temp_directory = '{spill}'")
    return con


def _echo(data: dict[str, Any]) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2))


@app.command()
@cli_errors
def train(
    sources: Sources,
    out: Annotated[
        Path | None, typer.Option(help="matching.json to write (default: the packaged one)")
    ] = None,
    holdout: Annotated[
        Path | None,
        typer.Option(help="held-out synthetic province (with truth/) to choose thresholds on"),
    ] = None,
    registry_size: Annotated[
        int, typer.Option(help="people in the registry: the real-time prior is 1 / this")
    ] = linkage.HAINAN_POPULATION,
    u_max_pairs: Annotated[float, typer.Option(help="random pairs sampled for u")] = 1e8,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 42,
    workers: Annotated[int, typer.Option(help="normalisation processes")] = 2,
    target_precision: Annotated[float, typer.Option(help="pairwise precision to reach")] = 0.998,
    memory_limit: Annotated[str, typer.Option(help="DuckDB memory limit")] = "12GB",
) -> None:
    """Train m and u with Splink, choose thresholds on held-out data, write matching.json."""
    con = _connect(memory_limit, None)
    today = date.today()
    prepared = prepare(con, sources, "records", workers=workers, today=today)
    description = ", ".join(str(s) for s in sources) + f": {prepared.total_rows} records"
    spec, report = linkage.train(
        con,
        "records",
        u_max_pairs=u_max_pairs,
        seed=seed,
        registry_size=registry_size,
        data_description=description,
    )
    result: dict[str, Any] = {
        "prepare": prepared.as_dict(),
        "batch_prior": report.batch_prior,
        "kept_from_previous_or_floored": list(report.untrained),
    }
    if holdout is not None:
        con.execute("drop table records")
        held = prepare(con, [holdout], "holdout", workers=workers, today=today)
        linkage.load_truth(con, holdout)
        result |= _choose(con, spec, holdout, held.total_rows, target_precision)
    target = out or linkage.packaged_spec_path()
    target.write_text(linkage.dump_spec(spec), encoding="utf-8")
    result["written"] = str(target)
    _echo(result)


def _choose(
    con: Any, spec: dict[str, Any], holdout: Path, rows: int, target_precision: float
) -> dict[str, Any]:
    """Choose the thresholds on the prepared ``holdout`` table into ``spec``; what to report."""
    choice = linkage.choose_thresholds(
        con, "holdout", "truth", spec, target_precision=target_precision
    )
    spec["thresholds"] = {"certain": choice.certain, "link": choice.link, "review": choice.review}
    spec["trained"]["data"] = (
        spec["trained"]["data"].split("; thresholds on ")[0]
        + f"; thresholds on {holdout}: {rows} records, target precision {target_precision}"
    )
    return {
        "thresholds": spec["thresholds"],
        "holdout_accuracy_at_link": choice.accuracy_at_link.as_dict(),
        "tried": [{"link": w, **a.as_dict()} for w, a in choice.tried],
    }


@app.command()
@cli_errors
def thresholds(
    holdout: Annotated[
        Path, typer.Argument(help="held-out synthetic province (with truth/) to choose on")
    ],
    model: Annotated[
        Path | None, typer.Option(help="matching.json to read (default: the packaged one)")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="matching.json to write (default: the one read)")
    ] = None,
    target_precision: Annotated[
        float, typer.Option(help="pairwise precision the link threshold's clusters must reach")
    ] = 0.998,
    workers: Annotated[int, typer.Option(help="normalisation processes")] = 2,
    memory_limit: Annotated[str, typer.Option(help="DuckDB memory limit")] = "12GB",
) -> None:
    """Choose the link, review and certain thresholds again for a trained model (its m and
    u unchanged), on a held-out province with truth; write matching.json."""
    if not 0.5 <= target_precision < 1.0:
        raise typer.BadParameter(
            "must be at least 0.5 and below 1", param_hint="--target-precision"
        )
    source = model or linkage.packaged_spec_path()
    spec = json.loads(source.read_text(encoding="utf-8"))
    con = _connect(memory_limit, None)
    held = prepare(con, [holdout], "holdout", workers=workers, today=date.today())
    linkage.load_truth(con, holdout)
    result = {"prepare": held.as_dict()} | _choose(
        con, spec, holdout, held.total_rows, target_precision
    )
    target = out or source
    target.write_text(linkage.dump_spec(spec), encoding="utf-8")
    result["written"] = str(target)
    _echo(result)


@app.command()
@cli_errors
def link(
    sources: Sources,
    out: Annotated[Path, typer.Option(help="clusters Parquet: unique_id, source, cluster_id")],
    model: Annotated[
        Path | None, typer.Option(help="matching.json (default: the packaged one)")
    ] = None,
    truth: Annotated[
        Path | None,
        typer.Option(help="synthetic province whose truth/ to score the clusters against"),
    ] = None,
    workers: Annotated[int, typer.Option(help="normalisation processes")] = 2,
    memory_limit: Annotated[str, typer.Option(help="DuckDB memory limit")] = "12GB",
) -> None:
    """Normalise, block, score and cluster source records at the link threshold."""
    spec = json.loads(model.read_text()) if model else linkage.packaged_spec()
    con = _connect(memory_limit, None)
    prepared = prepare(con, sources, "records", workers=workers)
    summary = linkage.link(con, "records", spec)
    con.execute(f"copy clusters to '{out}' (format parquet, compression zstd)")
    result: dict[str, Any] = {"prepare": prepared.as_dict(), "link": summary, "out": str(out)}
    if truth is not None:
        linkage.load_truth(con, truth)
        result["accuracy"] = linkage.evaluate("clusters", "truth", con=con).as_dict()
    _echo(result)
