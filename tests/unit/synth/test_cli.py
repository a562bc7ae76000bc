from __future__ import annotations

import json
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from typer.testing import CliRunner

from healthroam.synth.cli import app

runner = CliRunner()


def test_cli_writes_every_file_in_parquet(tmp_path: Path) -> None:
    out = tmp_path / "province"
    result = runner.invoke(app, ["--people", "2000", "--out", str(out), "--seed", "3", "-q"])
    assert result.exit_code == 0, result.output
    assert "wrote 2000 people" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 3
    assert manifest["people"] == 2000
    for name in ("institutions", "sources/population", "sources/insurer", "truth/links"):
        assert (out / f"{name}.parquet").exists()
    people = pq.read_table(out / "truth/people.parquet")
    assert people.num_rows == 2000
    hospitals = sorted((out / "sources").glob("hospital-*.parquet"))
    assert len(hospitals) == pq.read_table(out / "institutions.parquet").num_rows
    links = pq.read_table(out / "truth/links.parquet")
    assert links.num_rows == sum(
        n for path, n in manifest["rows"].items() if path.startswith("sources/")
    )


def test_cli_csv_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    for run in ("a", "b"):
        result = runner.invoke(
            app, ["-n", "500", "-o", str(tmp_path / run), "--format", "csv", "--seed", "9", "-q"]
        )
        assert result.exit_code == 0, result.output
    first = (tmp_path / "a/sources/population.csv").read_bytes()
    assert first == (tmp_path / "b/sources/population.csv").read_bytes()
    table = pacsv.read_csv(tmp_path / "a/sources/population.csv")
    assert "id_number" in table.column_names


def test_bad_options_give_a_clear_message_without_traceback(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--people", "0", "-o", str(tmp_path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["--format", "xml", "-o", str(tmp_path)])
    assert result.exit_code == 2
    assert "xml" in result.output
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = runner.invoke(app, ["-n", "10", "-o", str(blocker / "sub"), "-q"])
    assert result.exit_code == 1
    assert "cannot write" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
