"""The same model on Splink's Spark backend (Spark local mode, needs Java 17)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from healthroam.registry import linkage
from healthroam.registry.comparisons import COMPARISONS, comparison_vector
from healthroam.registry.linkage_prepare import RECORD_COLUMNS, normalized_from_row, prepare
from healthroam.registry.linkage_sql import level_from_gamma
from healthroam.synth.writer import write_province

TODAY = date(2026, 11, 25)


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    session = linkage.spark_session(tmp_path_factory.mktemp("checkpoints"), master="local[2]")
    yield session
    session.stop()


@pytest.mark.slow  # about 60-80 s on a shared 2-core machine (Spark start, local jobs)
def test_spark_scores_like_duckdb_and_python(spark: Any, tmp_path: Path) -> None:
    write_province(tmp_path, 600, "parquet", seed=31)
    con = duckdb.connect()
    prepare(con, [tmp_path], "records", workers=1, today=TODAY)
    linkage.load_truth(con, tmp_path, "truth")
    spec = linkage.packaged_spec()
    prior = linkage.batch_prior(linkage.estimate_persons(con, "records"))
    records: pa.Table = con.sql("select * from records order by unique_id").to_arrow_table()
    by_id = {row["unique_id"]: row for row in records.to_pylist()}

    linker = linkage.spark_linker(spark, records, spec, prior=prior, retain_columns=True)
    scored = linker.inference.predict(warning_mode="never")
    gammas = [f"gamma_{c.name}" for c in COMPARISONS]
    rows = scored.as_spark_dataframe().select("unique_id_l", "unique_id_r", "match_weight", *gammas)
    spark_pairs = {(r[0], r[1]): (r[2], tuple(r[3:])) for r in rows.collect()}
    assert len(spark_pairs) >= 600

    # every pair: Spark's levels are the Python levels
    for (left, right), (_, spark_gammas) in spark_pairs.items():
        levels = tuple(level_from_gamma(i, g) for i, g in enumerate(spark_gammas))
        expected = comparison_vector(
            normalized_from_row(by_id[left]), normalized_from_row(by_id[right])
        )
        assert levels == expected, (left, right)

    # and the same pairs with the same weights as DuckDB
    _, duck_scored = linkage.predict(con, "records", spec, min_weight=-1e9, prior=prior)
    duck_pairs = dict(
        ((r[0], r[1]), r[2])
        for r in con.execute(
            f"select unique_id_l, unique_id_r, match_weight from {duck_scored.physical_name}"
        ).fetchall()
    )
    assert duck_pairs.keys() == spark_pairs.keys()
    for pair, weight in duck_pairs.items():
        assert spark_pairs[pair][0] == pytest.approx(weight, abs=1e-6)

    # clustering at the link weight finds the people
    link_weight = float(spec["thresholds"]["link"])
    clustered = linker.clustering.cluster_pairwise_predictions_at_threshold(
        scored, threshold_match_weight=link_weight
    )
    clusters = pa.Table.from_pylist(
        [
            {"unique_id": r[0], "cluster_id": str(r[1])}
            for r in clustered.as_spark_dataframe().select("unique_id", "cluster_id").collect()
        ]
    )
    accuracy = linkage.evaluate(clusters, "truth", con=con)
    assert accuracy.precision >= 0.99
    assert accuracy.recall >= 0.98
    assert set(RECORD_COLUMNS) <= set(records.column_names)
