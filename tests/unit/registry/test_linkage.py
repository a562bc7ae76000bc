"""Batch linkage: prepare, train, thresholds, link, evaluate, CLI (small synthetic provinces)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from healthroam.errors import Unavailable
from healthroam.registry import linkage
from healthroam.registry.comparisons import COMPARISONS
from healthroam.registry.linkage_cli import app
from healthroam.registry.linkage_prepare import prepare
from healthroam.registry.scoring import MatchModel
from healthroam.synth.writer import write_province
from processes import descendants, kill_new_workers, within

TODAY = date(2026, 11, 25)


@pytest.fixture(scope="module")
def provinces(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    train = tmp_path_factory.mktemp("train")
    held = tmp_path_factory.mktemp("held")
    write_province(train, 2000, "parquet", seed=21)
    write_province(held, 1500, "parquet", seed=22)
    return train, held


@pytest.fixture(scope="module")
def trained(provinces: tuple[Path, Path]) -> tuple[duckdb.DuckDBPyConnection, dict[str, object]]:
    train, held = provinces
    con = duckdb.connect()
    con.execute("set threads = 2")
    prepare(con, [train], "records", workers=1, today=TODAY)
    spec, _ = linkage.train(con, "records", u_max_pairs=2e5, registry_size=1_000_000)
    prepare(con, [held], "holdout", workers=1, today=TODAY)
    linkage.load_truth(con, held, "truth")
    choice = linkage.choose_thresholds(con, "holdout", "truth", spec)
    spec["thresholds"] = {"certain": choice.certain, "link": choice.link, "review": choice.review}
    return con, spec


def test_evaluate_counts_pairs_per_group() -> None:
    clusters = pa.table(
        {
            "unique_id": ["r1", "r2", "r3", "r4", "r5", "r6"],
            "cluster_id": ["A", "A", "A", "B", "B", "C"],
        }
    )
    truth = pa.table(
        {
            "record_key": ["r1", "r2", "r3", "r4", "r5", "r6", "r7"],  # r7 was rejected
            "person_id": ["P1", "P1", "P2", "P2", "P2", "P3", "P3"],
        }
    )
    accuracy = linkage.evaluate(clusters, truth)
    assert (accuracy.true_positive_pairs, accuracy.predicted_pairs, accuracy.true_pairs) == (
        2,
        4,
        5,
    )
    assert accuracy.precision == 0.5
    assert accuracy.recall == 0.4
    assert accuracy.f1 == pytest.approx(2 * 0.5 * 0.4 / 0.9)


def test_evaluate_perfect_and_all_singletons() -> None:
    truth = pa.table({"record_key": ["a", "b", "c"], "person_id": ["P", "P", "Q"]})
    perfect = pa.table({"unique_id": ["a", "b", "c"], "cluster_id": [1, 1, 2]})
    assert linkage.evaluate(perfect, truth).as_dict()["f1"] == 1.0
    alone = pa.table({"unique_id": ["a", "b", "c"], "cluster_id": [1, 2, 3]})
    result = linkage.evaluate(alone, truth)
    assert (result.precision, result.recall) == (1.0, 0.0)


def test_trained_file_is_a_valid_matching_json(
    trained: tuple[duckdb.DuckDBPyConnection, dict[str, object]],
) -> None:
    _, spec = trained
    text = linkage.dump_spec(spec)
    loaded = json.loads(text)
    assert loaded == spec
    model = MatchModel.from_dict(loaded)
    assert set(loaded) == {
        "version",
        "trained",
        "prior_match_probability",
        "thresholds",
        "comparisons",
    }
    assert {"method", "date", "tool", "data"} <= set(loaded["trained"])
    assert loaded["prior_match_probability"] == pytest.approx(1e-6)
    assert model.tf_comparisons == frozenset({"name"})
    assert [c["name"] for c in loaded["comparisons"]] == [c.name for c in COMPARISONS]
    for comparison in loaded["comparisons"]:
        for level in comparison["levels"]:
            assert 0 < level["m"] <= 1
            assert 0 < level["u"] <= 1
    t = model.thresholds
    assert t.review <= t.link <= t.certain
    # agreement on name, birth date and ID weighs for a match; disagreement against
    assert model.weights[0][0] > 0
    assert model.weights[0][-1] < 0
    assert model.weights[3][0] > 10
    assert model.weights[3][-1] < 0


def test_link_finds_the_people_of_a_small_province(
    trained: tuple[duckdb.DuckDBPyConnection, dict[str, object]],
) -> None:
    con, spec = trained
    summary = linkage.link(con, "holdout", spec, out_table="clusters")
    assert summary["records"] == con.execute("select count(*) from holdout").fetchall()[0][0]
    accuracy = linkage.evaluate("clusters", "truth", con=con)
    assert accuracy.precision >= 0.99
    assert accuracy.recall >= 0.98


def test_splink_default_model_runs_on_raw_columns(provinces: tuple[Path, Path]) -> None:
    _, held = provinces
    con = duckdb.connect()
    prepare(con, [held], "records", workers=1, today=TODAY, keep_raw="raw")
    linkage.load_truth(con, held, "truth")
    linker = linkage.train_default_model(con, "raw", u_max_pairs=2e5)
    linkage.link_default_model(linker, con, out_table="default_clusters")
    accuracy = linkage.evaluate("default_clusters", "truth", con=con)
    assert accuracy.precision >= 0.9
    assert accuracy.recall >= 0.9


def test_prepare_reads_csv_counts_rejects_and_dropped_ids(tmp_path: Path) -> None:
    write_province(tmp_path / "csv", 300, "csv", seed=5)
    write_province(tmp_path / "pq", 300, "parquet", seed=5)
    con = duckdb.connect()
    from_csv = prepare(con, [tmp_path / "csv"], "a", workers=1, today=TODAY)
    from_parquet = prepare(con, [tmp_path / "pq"], "b", workers=1, today=TODAY)
    assert from_csv.rows == from_parquet.rows
    differ = con.execute("select count(*) from (select * from a except select * from b)")
    assert differ.fetchall()[0][0] == 0

    bad = tmp_path / "hospital-bad.csv"
    header = "record_key,hospital_code,mrn,name,sex,birth_date,id_type,id_number,phone,address"
    bad.write_text(
        "\n".join(
            [
                header,
                "X-1,X,1,,1,1990-01-02,01,,,",  # no name: rejected
                "X-2,X,2,张三,1,1990-01-02,01,110101199001020013,,",  # bad check digit
                "X-3,X,3,李四,2,2030-01-02,,,,",  # born in the future: rejected
                "X-4,X,4,John Smith,1,1980-05-06,03,E1234567,,",  # passport
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    summary = prepare(con, [bad], "c", workers=1, today=TODAY)
    assert summary.total_rows == 2
    assert summary.rejects == {"a name is required": 1, "birth date is in the future": 1}
    assert summary.id_dropped == {"ID number fails its check digit": 1}
    rows = dict(con.execute("select unique_id, identifiers from c").fetchall())
    assert rows == {"X-2": [], "X-4": ["ws364-03|E1234567"]}


def test_prepare_with_two_workers_matches_one(tmp_path: Path) -> None:
    write_province(tmp_path, 200, "parquet", seed=6)
    con = duckdb.connect()
    prepare(con, [tmp_path], "one", workers=1, today=TODAY)
    prepare(con, [tmp_path], "two", workers=2, today=TODAY, batch_size=100)
    differ = con.execute(
        "select count(*) from ((select * from one except select * from two) "
        "union all (select * from two except select * from one))"
    )
    assert differ.fetchall()[0][0] == 0


def test_prepare_stops_with_an_error_when_a_worker_is_killed(tmp_path: Path) -> None:
    write_province(tmp_path, 300, "parquet", seed=7)
    con = duckdb.connect()
    before = set(descendants())
    killed: list[int] = []

    def kill_workers_once(done: int) -> None:
        if not killed:  # after the first batch of many comes back
            killed.append(kill_new_workers(before))

    outcome = within(
        120,
        lambda: prepare(
            con,
            [tmp_path],
            "records",
            workers=2,
            today=TODAY,
            batch_size=50,
            progress=kill_workers_once,
        ),
    )
    assert killed
    assert killed[0] >= 1
    error = outcome.get("error")
    assert isinstance(error, Unavailable), outcome
    assert "run the command again" in error.detail
    again = prepare(con, [tmp_path], "records", workers=2, today=TODAY, batch_size=50)
    assert again.total_rows > 0


def test_cli_train_and_link(provinces: tuple[Path, Path], tmp_path: Path) -> None:
    train, held = provinces
    runner = CliRunner()
    model = tmp_path / "matching.json"
    result = runner.invoke(
        app,
        [
            "train",
            str(train),
            "--holdout",
            str(held),
            "--out",
            str(model),
            "--u-max-pairs",
            "100000",
            "--workers",
            "1",
            "--memory-limit",
            "2GB",
        ],
    )
    assert result.exit_code == 0, result.output
    assert MatchModel.load(model).thresholds.link == json.loads(result.output)["thresholds"]["link"]
    out = tmp_path / "clusters.parquet"
    result = runner.invoke(
        app,
        [
            "link",
            str(held),
            "--out",
            str(out),
            "--model",
            str(model),
            "--truth",
            str(held),
            "--workers",
            "1",
            "--memory-limit",
            "2GB",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["accuracy"]["precision"] >= 0.99
    clusters = pq.read_table(out)
    assert clusters.column_names == ["unique_id", "source", "cluster_id"]
    assert clusters.num_rows == report["prepare"]["rows"]


def test_cli_thresholds_rechooses_without_retraining(
    provinces: tuple[Path, Path], tmp_path: Path
) -> None:
    _, held = provinces
    runner = CliRunner()
    source = linkage.packaged_spec()
    model = tmp_path / "matching.json"
    model.write_text(linkage.dump_spec(source), encoding="utf-8")
    chosen: dict[float, dict[str, object]] = {}
    for target in (0.95, 0.9999):
        out = tmp_path / f"matching-{target}.json"
        result = runner.invoke(
            app,
            [
                "thresholds",
                str(held),
                "--model",
                str(model),
                "--out",
                str(out),
                "--target-precision",
                str(target),
                "--workers",
                "1",
                "--memory-limit",
                "2GB",
            ],
        )
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        written = json.loads(out.read_text(encoding="utf-8"))
        assert written["thresholds"] == report["thresholds"]
        assert written["comparisons"] == source["comparisons"]  # m and u untouched
        assert written["prior_match_probability"] == source["prior_match_probability"]
        assert f"target precision {target}" in written["trained"]["data"]
        assert report["tried"][-1]["link"] == report["thresholds"]["link"]
        chosen[target] = report["thresholds"]
        assert MatchModel.load(out).thresholds.link == report["thresholds"]["link"]
    # A stricter precision never allows a lower link weight.
    assert chosen[0.9999]["link"] >= chosen[0.95]["link"]  # type: ignore[operator]
    assert json.loads(model.read_text(encoding="utf-8")) == source  # --out: input untouched

    refused = runner.invoke(app, ["thresholds", str(held), "--target-precision", "1.5"])
    assert refused.exit_code != 0
    assert "target-precision" in refused.output
