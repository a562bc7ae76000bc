"""Batch record linkage with Splink on DuckDB: train the model, link, measure accuracy.

The model is the one the real-time path scores with (:mod:`healthroam.registry.scoring`):
the levels of :mod:`healthroam.registry.comparisons` written in Splink SQL
(:mod:`healthroam.registry.linkage_sql`), m and u probabilities and thresholds in
``data/matching.json``. Records come from :func:`healthroam.registry.linkage_prepare.prepare`
(every row through the same ``normalize_record``).

* :func:`train` estimates u by random sampling, the batch prior from a deterministic rule
  (same ID number) and m by EM over two blocking rules, and returns a ``matching.json`` dict.
* :func:`choose_thresholds` picks the link/review/certain weights on held-out data with truth.
* :func:`link` predicts, clusters at the link weight and returns ``unique_id -> cluster_id``.
* :func:`evaluate` gives pairwise precision, recall and F1 of clusters against the truth
  from pair counts per group (no pair is materialised).
* :func:`train_default_model` / :func:`link_default_model`: Splink's standard comparisons on
  the raw columns, trained the usual way, as a yardstick.

Match weights here include the registry prior (``prior_match_probability``), exactly as in
real time, so one set of thresholds serves both.
"""

# SQL here is built from our own table and column names and file paths, never from values.
# ruff: noqa: S608

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any, cast

import duckdb

from healthroam.registry.comparisons import COMPARISONS
from healthroam.registry.linkage_sql import (
    DUCKDB,
    Dialect,
    prediction_blocking_rules,
    splink_comparisons,
)

logger = logging.getLogger(__name__)

HAINAN_POPULATION = 10_100_000  # 2020 census, rounded: the registry's size in real time
U_FLOOR_PAIRS = 1e9  # a level never seen among sampled non-matches gets u = 1 / this
M_FLOOR = 1e-3  # a level no match showed still costs at most ~10 bits
TRAINING_RULES = (
    "l.national_id = r.national_id",  # trains every comparison but national_id
    "l.pinyin = r.pinyin AND l.birth_date = r.birth_date",  # trains national_id and the rest
)
DETERMINISTIC_RULE = "l.national_id = r.national_id"
DETERMINISTIC_RECALL = 0.9


def packaged_spec() -> dict[str, Any]:
    """The ``matching.json`` shipped with the package."""
    import json

    text = resources.files("healthroam.registry").joinpath("data/matching.json").read_text()
    result: dict[str, Any] = json.loads(text)
    return result


def packaged_spec_path() -> Path:
    return Path(str(resources.files("healthroam.registry").joinpath("data/matching.json")))


def weight_to_probability(weight: float) -> float:
    if weight > 60:
        return 1.0
    odds: float = 2.0**weight
    return odds / (1 + odds)


def settings(
    spec: dict[str, Any] | None,
    *,
    dialect: Dialect = DUCKDB,
    prior: float | None = None,
    retain_columns: bool = False,
) -> dict[str, Any]:
    """A Splink settings dict for our comparisons (with ``spec``'s m/u if given)."""
    if prior is None:
        prior = float(spec["prior_match_probability"]) if spec else 1e-6
    return {
        "link_type": "dedupe_only",
        "unique_id_column_name": "unique_id",
        "probability_two_random_records_match": prior,
        "comparisons": splink_comparisons(dialect, spec),
        "blocking_rules_to_generate_predictions": prediction_blocking_rules(),
        "retain_matching_columns": retain_columns,
        "retain_intermediate_calculation_columns": retain_columns,
        "additional_columns_to_retain": ["source"],
        "em_convergence": 0.001,
        "max_iterations": 25,
    }


def duckdb_api(con: duckdb.DuckDBPyConnection) -> Any:
    from splink import DuckDBAPI

    return DuckDBAPI(connection=con)


def make_linker(db_api: Any, table: str, splink_settings: dict[str, Any]) -> Any:
    """A Splink linker over an existing table of prepared records."""
    from splink import Linker

    frame = db_api.register(table, dataset_display_name=table)
    return Linker(frame, splink_settings, log_level=logging.WARNING)


@dataclass(frozen=True, slots=True)
class TrainingReport:
    batch_prior: float  # Splink's probability that two random records match, on this data
    records: int
    u_max_pairs: float
    untrained: tuple[str, ...]  # "comparison.level" kept from the previous file


def _trained_levels(linker: Any) -> list[list[dict[str, Any]]]:
    trained = linker._settings_obj.as_dict()["comparisons"]
    return [c["comparison_levels"] for c in trained]


def train(
    con: duckdb.DuckDBPyConnection,
    table: str = "records",
    *,
    u_max_pairs: float = 1e7,
    seed: int = 42,
    registry_size: int = HAINAN_POPULATION,
    previous: dict[str, Any] | None = None,
    data_description: str = "",
) -> tuple[dict[str, Any], TrainingReport]:
    """Train m and u on prepared records; return a ``matching.json`` dict and a report.

    The exported prior is ``1 / registry_size``: in real time one record is compared with
    the master persons of a registry that size, at most one of which is the same person.
    Thresholds are the previous file's until :func:`choose_thresholds` sets them.
    """
    previous = previous or packaged_spec()
    db_api = duckdb_api(con)
    linker = make_linker(db_api, table, settings(None))
    records = int(con.execute(f"select count(*) from {table}").fetchall()[0][0])
    linker.training.estimate_probability_two_random_records_match(
        [DETERMINISTIC_RULE], recall=DETERMINISTIC_RECALL
    )
    batch_prior = float(linker._settings_obj._probability_two_random_records_match)
    linker.training.estimate_u_using_random_sampling(max_pairs=u_max_pairs, seed=seed)
    for rule in TRAINING_RULES:
        linker.training.estimate_parameters_using_expectation_maximisation(
            rule, estimate_without_term_frequencies=True
        )
    levels = _trained_levels(linker)
    previous_by_name = {c["name"]: c for c in previous["comparisons"]}
    comparisons: list[dict[str, Any]] = []
    untrained: list[str] = []
    for comparison, splink_levels in zip(COMPARISONS, levels, strict=True):
        non_null = [lv for lv in splink_levels if not lv.get("is_null_level")]
        old = previous_by_name[comparison.name]["levels"]
        m_seen = any(lv.get("m_probability") is not None for lv in non_null)
        u_seen = any(lv.get("u_probability") is not None for lv in non_null)
        out_levels = []
        for index, (label, lv) in enumerate(zip(comparison.levels, non_null, strict=True)):
            m, u = lv.get("m_probability"), lv.get("u_probability")
            if m is None:  # not seen among matches: the floor, or the old file if none was
                untrained.append(f"{comparison.name}.{label}.m")
                m = M_FLOOR if m_seen else float(old[index]["m"])
            if u is None or u <= 0:
                untrained.append(f"{comparison.name}.{label}.u")
                u = 1.0 / U_FLOOR_PAIRS if u_seen else float(old[index]["u"])
            level: dict[str, Any] = {
                "label": label,
                "m": float(f"{max(float(m), M_FLOOR):.6g}"),
                "u": float(f"{max(float(u), 1.0 / U_FLOOR_PAIRS):.6g}"),
            }
            if index == 0 and comparison.name == "name":
                level["tf_adjustment"] = True
            out_levels.append(level)
        comparisons.append({"name": comparison.name, "levels": out_levels})
    spec = {
        "version": 1,
        "trained": {
            "method": (
                "u: random sampling; batch prior: deterministic rule (same ID number, "
                f"recall {DETERMINISTIC_RECALL}); m: EM blocked on "
                + " | ".join(TRAINING_RULES)
                + f"; exported prior: 1 / registry size ({registry_size})"
            ),
            "date": date.today().isoformat(),
            "tool": _tool_versions(),
            "data": data_description or f"{records} records",
        },
        "prior_match_probability": float(f"{1.0 / registry_size:.6g}"),
        "thresholds": dict(previous["thresholds"]),
        "comparisons": comparisons,
    }
    return spec, TrainingReport(batch_prior, records, u_max_pairs, tuple(untrained))


def _tool_versions() -> str:
    import splink

    return f"splink {splink.__version__} on duckdb {duckdb.__version__}"


def estimate_persons(con: duckdb.DuckDBPyConnection, table: str) -> int:
    """Roughly how many distinct people a batch holds: its distinct ID numbers, plus each
    record without one (an overestimate by the few records whose ID is missing)."""
    return int(
        con.execute(
            f"""select count(distinct national_id) + count(*) filter (national_id is null)
            from {table}"""
        ).fetchall()[0][0]
    )


def batch_prior(persons: int) -> float:
    """The prior of a pair within a batch of ``persons`` people (each record's own person is
    one of them): the batch analogue of the registry's ``1 / registry size``."""
    return 1.0 / max(persons, 2)


def predict(
    con: duckdb.DuckDBPyConnection,
    table: str,
    spec: dict[str, Any],
    *,
    min_weight: float,
    prior: float | None = None,
    retain_columns: bool = False,
) -> tuple[Any, Any]:
    """Scored pairs at or above ``min_weight``. Match weights are posterior log2 odds with
    ``prior`` (default: :func:`batch_prior` of :func:`estimate_persons`), so that a weight
    means the same in a batch of any size as in real time against the registry."""
    if prior is None:
        prior = batch_prior(estimate_persons(con, table))
    batch_settings = settings(spec, prior=prior, retain_columns=retain_columns)
    linker = make_linker(duckdb_api(con), table, batch_settings)
    scored = linker.inference.predict(threshold_match_weight=min_weight, warning_mode="never")
    return linker, scored


def link(
    con: duckdb.DuckDBPyConnection,
    table: str,
    spec: dict[str, Any],
    *,
    out_table: str = "clusters",
    prior: float | None = None,
) -> dict[str, Any]:
    """Predict and cluster at the link threshold into ``out_table`` (unique_id, source,
    cluster_id); return a summary."""
    link_weight = float(spec["thresholds"]["link"])
    linker, scored = predict(con, table, spec, min_weight=link_weight, prior=prior)
    pairs = int(con.execute(f"select count(*) from {scored.physical_name}").fetchall()[0][0])
    clustered = linker.clustering.cluster_pairwise_predictions_at_threshold(
        scored, threshold_match_weight=link_weight
    )
    con.execute(
        f"""create or replace table {out_table} as
        select unique_id, source, cluster_id from {clustered.physical_name}"""
    )
    clustered.drop_table_from_database_and_remove_from_cache()
    scored.drop_table_from_database_and_remove_from_cache()
    return {"pairs_at_link_weight": pairs, **cluster_summary(con, out_table)}


def cluster_summary(con: duckdb.DuckDBPyConnection, clusters: str) -> dict[str, Any]:
    row = con.execute(
        f"""select count(*), count(distinct cluster_id),
            (select count(*) from (select cluster_id from {clusters} group by 1
             having count(*) = 1)),
            (select max(n) from (select count(*) n from {clusters} group by cluster_id))
        from {clusters}"""
    ).fetchall()[0]
    return {"records": row[0], "clusters": row[1], "singletons": row[2], "largest": row[3]}


@dataclass(frozen=True, slots=True)
class Accuracy:
    """Pairwise accuracy: pairs of records in one cluster vs pairs of one true person."""

    true_positive_pairs: int
    predicted_pairs: int
    true_pairs: int

    @property
    def precision(self) -> float:
        return self.true_positive_pairs / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        return self.true_positive_pairs / self.true_pairs if self.true_pairs else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "precision": round(self.precision, 6),
            "recall": round(self.recall, 6),
            "f1": round(self.f1, 6),
            "true_positive_pairs": self.true_positive_pairs,
            "predicted_pairs": self.predicted_pairs,
            "true_pairs": self.true_pairs,
        }


def evaluate(
    clusters: Any, truth: Any, *, con: duckdb.DuckDBPyConnection | None = None
) -> Accuracy:
    """Pairwise precision, recall and F1 of ``clusters`` (``unique_id``, ``cluster_id``)
    against ``truth`` (``record_key``, ``person_id``).

    Either may be a table name in ``con`` or anything DuckDB scans (a pyarrow Table, a
    pandas frame). Only records in the truth count; a truth record missing from the
    clusters (a reject) is a cluster of its own. Counts n(n-1)/2 per cluster, per person and
    per (cluster, person) group; no pair is ever listed.
    """
    con = con or duckdb.connect()
    c_name, t_name = (
        _relation(con, clusters, "_eval_clusters"),
        _relation(con, truth, "_eval_truth"),
    )
    row = con.execute(
        f"""
        with j as (
            select t.person_id, coalesce(cast(c.cluster_id as varchar), 'reject:' || t.record_key)
                as cluster_id
            from {t_name} t left join {c_name} c on c.unique_id = t.record_key
        ),
        g as (select cluster_id, person_id, count(*)::hugeint n from j group by all),
        c as (select sum(n) n from g group by cluster_id),
        p as (select sum(n) n from g group by person_id)
        select (select coalesce(sum(n * (n - 1) / 2), 0) from g),
               (select coalesce(sum(n * (n - 1) / 2), 0) from c),
               (select coalesce(sum(n * (n - 1) / 2), 0) from p)
        """
    ).fetchall()[0]
    for name in ("_eval_clusters", "_eval_truth"):
        with contextlib.suppress(duckdb.Error):
            con.unregister(name)
    return Accuracy(int(row[0]), int(row[1]), int(row[2]))


def _relation(con: duckdb.DuckDBPyConnection, value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    con.register(name, value)
    return name


@dataclass(frozen=True, slots=True)
class ThresholdChoice:
    link: float
    review: float
    certain: float
    accuracy_at_link: Accuracy
    tried: tuple[tuple[float, Accuracy], ...]


def labelled_pairs(
    con: duckdb.DuckDBPyConnection, scored: Any, truth: str, out: str = "_labelled"
) -> str:
    """The scored pairs with ``is_match`` from the truth, in table ``out``."""
    con.execute(
        f"""create or replace temp table {out} as
        select s.match_weight, tl.person_id = tr.person_id as is_match
        from {scored.physical_name} s
        join {truth} tl on tl.record_key = s.unique_id_l
        join {truth} tr on tr.record_key = s.unique_id_r"""
    )
    return out


def choose_thresholds(
    con: duckdb.DuckDBPyConnection,
    table: str,
    truth: str,
    spec: dict[str, Any],
    *,
    target_precision: float = 0.998,
    floor: float = -20.0,
    step: float = 1.0,
    max_tries: int = 12,
    review_band_precision: float = 0.2,
    certain_precision: float = 0.99995,
    prior: float | None = None,
) -> ThresholdChoice:
    """Pick thresholds on held-out records with truth (table ``truth``: record_key,
    person_id).

    ``link``: the lowest weight whose clusters have pairwise precision >= the target (start
    from the lowest weight whose scored pairs reach the target, then step up until the
    clusters do too; the highest recall is at the lowest such weight). ``certain``: the
    lowest weight above which scored pairs reach ``certain_precision``. ``review``: the
    lowest weight such that at least ``review_band_precision`` of the pairs between it and
    ``link`` are matches (what a steward would be shown).

    Weights use the held-out data's own prior (1 / its true number of people), so the
    thresholds, being posterior log2 odds, carry over to the registry with its own prior.
    """
    if prior is None:
        persons = con.execute(f"select count(distinct person_id) from {truth}").fetchall()[0][0]
        prior = batch_prior(int(persons))
    linker, scored = predict(con, table, spec, min_weight=floor, prior=prior)
    labelled = labelled_pairs(con, scored, truth)
    curve = con.execute(
        f"""select w, sum(tp) over (order by w desc), sum(fp) over (order by w desc)
        from (select floor(match_weight * 4) / 4 w, count(*) filter (where is_match) tp,
                     count(*) filter (where not is_match) fp
              from {labelled} group by 1)
        order by w desc"""
    ).fetchall()
    start = next(
        (w for w, tp, fp in reversed(curve) if tp / max(tp + fp, 1) >= target_precision),
        curve[0][0] if curve else 0.0,
    )
    certain = next(
        (w for w, tp, fp in reversed(curve) if tp / max(tp + fp, 1) >= certain_precision),
        start,
    )
    tried: list[tuple[float, Accuracy]] = []
    link_weight = float(start)
    for _ in range(max_tries):
        clustered = linker.clustering.cluster_pairwise_predictions_at_threshold(
            scored, threshold_match_weight=link_weight
        )
        accuracy = evaluate(clustered.physical_name, truth, con=con)
        clustered.drop_table_from_database_and_remove_from_cache()
        tried.append((link_weight, accuracy))
        if accuracy.precision >= target_precision:
            break
        link_weight += step
    accuracy_at_link = tried[-1][1]
    review = link_weight
    band = con.execute(
        f"""select w, sum(tp) over (order by w desc), sum(fp) over (order by w desc)
        from (select floor(match_weight) w, count(*) filter (where is_match) tp,
                     count(*) filter (where not is_match) fp
              from {labelled} where match_weight < ? group by 1)
        order by w desc""",
        [link_weight],
    ).fetchall()
    for w, tp, fp in band:
        if tp / max(tp + fp, 1) >= review_band_precision:
            review = float(w)
        else:
            break
    scored.drop_table_from_database_and_remove_from_cache()
    return ThresholdChoice(
        link=round(link_weight, 2),
        review=round(min(review, link_weight), 2),
        certain=round(max(float(certain), link_weight), 2),
        accuracy_at_link=accuracy_at_link,
        tried=tuple(tried),
    )


def load_truth(con: duckdb.DuckDBPyConnection, province: Path | str, table: str = "truth") -> str:
    """Load a synthetic province's ``truth/links`` (Parquet or CSV) as ``table``."""
    folder = Path(province) / "truth"
    path = folder / "links.parquet"
    reader = f"read_parquet('{path}')"
    if not path.exists():
        path = folder / "links.csv"
        reader = f"read_csv('{path}', header = true, all_varchar = true)"
    con.execute(f"create or replace table {table} as select record_key, person_id from {reader}")
    return table


# --- Splink's standard comparisons on the raw columns: the yardstick ---------------------


def default_settings(prior: float = 1e-6) -> dict[str, Any]:
    import splink.comparison_library as cl

    return {
        "link_type": "dedupe_only",
        "unique_id_column_name": "unique_id",
        "probability_two_random_records_match": prior,
        "comparisons": [
            cl.NameComparison("name"),
            cl.DateOfBirthComparison("birth_date", input_is_string=False),
            cl.ExactMatch("sex"),
            cl.LevenshteinAtThresholds("id_number", [1, 2]),
            cl.ExactMatch("region"),
            cl.LevenshteinAtThresholds("address", [2, 5]),
            cl.ExactMatch("phone"),
        ],
        "blocking_rules_to_generate_predictions": [
            "l.id_number = r.id_number",
            "l.name = r.name AND l.birth_date = r.birth_date",
            "l.birth_date = r.birth_date AND l.phone = r.phone",
        ],
        "retain_matching_columns": False,
        "retain_intermediate_calculation_columns": False,
        "em_convergence": 0.001,
        "max_iterations": 25,
    }


def train_default_model(
    con: duckdb.DuckDBPyConnection, raw_table: str, *, u_max_pairs: float = 1e7, seed: int = 42
) -> Any:
    """Splink's standard library comparisons on the raw source columns, trained the usual
    way (deterministic-rule prior, u by random sampling, EM on two blocking rules)."""
    linker = make_linker(duckdb_api(con), raw_table, default_settings())
    linker.training.estimate_probability_two_random_records_match(
        ["l.id_number = r.id_number"], recall=DETERMINISTIC_RECALL
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=u_max_pairs, seed=seed)
    linker.training.estimate_parameters_using_expectation_maximisation(
        "l.id_number = r.id_number", estimate_without_term_frequencies=True
    )
    linker.training.estimate_parameters_using_expectation_maximisation(
        "l.name = r.name AND l.birth_date = r.birth_date",
        estimate_without_term_frequencies=True,
    )
    return linker


def link_default_model(
    linker: Any,
    con: duckdb.DuckDBPyConnection,
    *,
    threshold_match_probability: float = 0.95,
    out_table: str = "default_clusters",
) -> str:
    """Predict and cluster with the default model at Splink's customary threshold."""
    scored = linker.inference.predict(
        threshold_match_probability=threshold_match_probability, warning_mode="never"
    )
    clustered = linker.clustering.cluster_pairwise_predictions_at_threshold(
        scored, threshold_match_probability=threshold_match_probability
    )
    con.execute(
        f"create or replace table {out_table} as "
        f"select unique_id, cluster_id from {clustered.physical_name}"
    )
    clustered.drop_table_from_database_and_remove_from_cache()
    scored.drop_table_from_database_and_remove_from_cache()
    return out_table


def dump_spec(spec: dict[str, Any]) -> str:
    """``matching.json`` text in the file's layout: one line per level."""
    import json

    def dumps(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    lines = [
        "{",
        f'  "version": {dumps(spec["version"])},',
        f'  "trained": {json.dumps(spec["trained"], ensure_ascii=False, indent=2)},'.replace(
            "\n", "\n  "
        ),
        f'  "prior_match_probability": {dumps(spec["prior_match_probability"])},',
        f'  "thresholds": {dumps(spec["thresholds"])},',
        '  "comparisons": [',
    ]
    for i, comparison in enumerate(spec["comparisons"]):
        levels = ",\n      ".join(dumps(level) for level in comparison["levels"])
        comma = "," if i < len(spec["comparisons"]) - 1 else ""
        lines.append(f'    {{"name": {dumps(comparison["name"])}, "levels": [')
        lines.append(f"      {levels}]}}{comma}")
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


# --- Spark: the same model on Splink's Spark backend ----------------------------------------


def spark_session(
    checkpoint_dir: Path | str,
    app_name: str = "healthroam-linkage",
    master: str = "local[2]",
    driver_memory: str = "2g",
) -> Any:
    """A Spark session with Splink's similarity UDF jar (``jaro_winkler``,
    ``damerau_levenshtein``) and a checkpoint folder (Splink breaks the lineage of its
    intermediate tables by writing them there as Parquet). On a cluster, pass the jar the
    same way (``spark.jars``) and a shared checkpoint folder."""
    from pyspark.sql import SparkSession
    from splink.backends.spark import similarity_jar_location

    session = (
        SparkSession.builder.appName(app_name)
        .master(master)
        .config("spark.jars", similarity_jar_location())
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", driver_memory)
        .getOrCreate()
    )
    session.sparkContext.setCheckpointDir(str(checkpoint_dir))
    return session


def spark_linker(
    spark: Any, records: Any, spec: dict[str, Any], *, prior: float, retain_columns: bool = False
) -> Any:
    """A Splink linker on Spark over ``records`` (a Spark DataFrame or a pyarrow Table with the
    prepared columns), scoring with ``spec`` exactly as on DuckDB."""
    from splink import Linker, SparkAPI

    from healthroam.registry.linkage_sql import SPARK

    db_api = cast(Any, SparkAPI)(spark_session=spark, break_lineage_method="parquet")
    frame = db_api.register(records, dataset_display_name="records")
    spark_settings = settings(spec, dialect=SPARK, prior=prior, retain_columns=retain_columns)
    return Linker(frame, spark_settings, log_level=logging.WARNING)
