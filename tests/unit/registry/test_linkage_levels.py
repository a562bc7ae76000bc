"""The Splink SQL levels (linkage_sql.py) agree exactly with comparisons.py on real pairs."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from healthroam.registry import linkage
from healthroam.registry.comparisons import COMPARISONS, comparison_vector
from healthroam.registry.linkage_prepare import (
    RECORD_COLUMNS,
    normalized_from_row,
    prepare,
    row_from_normalized,
)
from healthroam.registry.linkage_sql import gamma_from_level, level_from_gamma
from healthroam.registry.model import NormalizedRecord
from healthroam.synth.writer import write_province

TODAY = date(2026, 11, 25)
# Pairs beyond the prediction rules, so that weak and disagreeing levels show up too.
EXTRA_RULES = [
    "l.sex = r.sex AND substr(l.birth_date, 1, 7) = substr(r.birth_date, 1, 7)",
    "l.region = r.region AND substr(l.birth_date, 1, 4) = substr(r.birth_date, 1, 4)",
    "substr(l.name, 1, 1) = substr(r.name, 1, 1) AND substr(l.birth_date, 6, 5) = "
    "substr(r.birth_date, 6, 5)",
]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    folder = tmp_path_factory.mktemp("province")
    write_province(folder, 2000, "parquet", seed=11)
    con = duckdb.connect()
    con.execute("set threads = 2")
    prepare(con, [folder], "records", workers=1, today=TODAY)
    return con


def _scored_levels(
    con: duckdb.DuckDBPyConnection, table: str, rules: list[str]
) -> list[tuple[dict[str, Any], dict[str, Any], tuple[int | None, ...]]]:
    settings = linkage.settings(linkage.packaged_spec(), prior=1e-4, retain_columns=True)
    settings["blocking_rules_to_generate_predictions"] = [
        *settings["blocking_rules_to_generate_predictions"],
        *rules,
    ]
    linker = linkage.make_linker(linkage.duckdb_api(con), table, settings)
    scored = linker.inference.predict(warning_mode="never")
    gammas = ", ".join(f"s.gamma_{c.name}" for c in COMPARISONS)
    cols = ", ".join(f"{side}.{c}" for side in ("l", "r") for c in RECORD_COLUMNS)
    rows = con.execute(
        f"""select {cols}, {gammas} from {scored.physical_name} s
        join {table} l on l.unique_id = s.unique_id_l
        join {table} r on r.unique_id = s.unique_id_r"""
    ).fetchall()
    n = len(RECORD_COLUMNS)
    out = []
    for row in rows:
        left = dict(zip(RECORD_COLUMNS, row[:n], strict=True))
        right = dict(zip(RECORD_COLUMNS, row[n : 2 * n], strict=True))
        levels = tuple(level_from_gamma(i, g) for i, g in enumerate(row[2 * n :]))
        out.append((left, right, levels))
    return out


def test_levels_agree_on_real_pairs(prepared: duckdb.DuckDBPyConnection) -> None:
    pairs = _scored_levels(prepared, "records", EXTRA_RULES)
    assert len(pairs) >= 300
    seen: set[tuple[str, int | None]] = set()
    for left, right, splink_levels in pairs:
        python_levels = comparison_vector(normalized_from_row(left), normalized_from_row(right))
        assert splink_levels == python_levels, (left["unique_id"], right["unique_id"])
        seen.update((c.name, lv) for c, lv in zip(COMPARISONS, python_levels, strict=True))
    # the pairs exercise strong, weak and null levels, not just exact agreement
    for expected in [
        ("name", 0),
        ("name", 1),
        ("name", 3),
        ("birth_date", 0),
        ("birth_date", 1),
        ("birth_date", 2),
        ("birth_date", 4),
        ("national_id", 0),
        ("national_id", 2),
        ("national_id", None),
        ("address", 0),
        ("address", 1),
        ("address", 2),
        ("region", None),
        ("phone", 1),
    ]:
        assert expected in seen


def _record(**values: Any) -> NormalizedRecord:
    base: dict[str, Any] = {
        "name": None,
        "latin_name": None,
        "pinyin": None,
        "pinyin_keys": frozenset(),
        "birth_date": None,
        "sex": None,
        "national_id": None,
        "region": None,
        "address": None,
        "address_tokens": frozenset(),
        "phone": None,
        "identifiers": frozenset(),
    }
    base.update(values)
    return NormalizedRecord(**base)


EDGE_CASES = [
    _record(
        name="张伟",
        pinyin="zhangwei",
        pinyin_keys=frozenset({"zhangwei"}),
        birth_date="1990-01-02",
        sex="1",
        national_id="110101199001020012",
        region="460105",
        address="海口市秀英区长滨路1号",
        address_tokens=frozenset({"海口市", "秀英区", "长滨路", "1号"}),
        phone="13800138000",
    ),
    _record(
        name="章伟",
        pinyin="zhangwei",
        pinyin_keys=frozenset({"zhangwei"}),
        birth_date="1990-02-01",
        sex="1",
        national_id="110101199001020021",
        region="460106",
        address="海口市秀英区长滨路2号",
        address_tokens=frozenset({"海口市", "秀英区", "长滨路", "2号"}),
    ),
    _record(
        name="张伟明",
        pinyin="zhangweiming",
        pinyin_keys=frozenset({"zhangweiming"}),
        birth_date="1990-01-20",
        sex="2",
        national_id="110101199001020102",
        region="469005",
        address="",
        address_tokens=frozenset(),
    ),
    _record(
        latin_name="wei zhang",
        pinyin="weizhang",
        pinyin_keys=frozenset({"weizhang", "zhangwei"}),
        birth_date="1990-01-02",
        identifiers=frozenset({"ws364-03|E12345678"}),
        phone="13800138000",
    ),
    _record(
        latin_name="wei zhang",
        pinyin="weizhang",
        pinyin_keys=frozenset({"weizhang", "zhangwei"}),
        birth_date="1991-01-02",
        identifiers=frozenset({"ws364-03|E12345678", "ws364-03|E0"}),
    ),
    _record(name="李john", birth_date="1990-01-02", sex="9"),
    _record(name="䶮", pinyin="", pinyin_keys=frozenset(), birth_date="1985-12-31"),
    _record(name="䶯", pinyin="", pinyin_keys=frozenset(), birth_date="1985-12-13"),
    _record(national_id="46010519900102001X", birth_date="1990-11-02", region="460105"),
    _record(name="王芳", pinyin="wangfang", pinyin_keys=frozenset({"wangfang"})),
]


def test_levels_agree_on_edge_cases() -> None:
    con = duckdb.connect()
    rows = [row_from_normalized(f"E{i}", "edge", r) for i, r in enumerate(EDGE_CASES)]
    con.register("edge_rows", pa.Table.from_pylist(rows))
    con.execute("create table edge as select * from edge_rows")
    pairs = _scored_levels(con, "edge", ["1 = 1"])
    n = len(EDGE_CASES)
    assert len(pairs) == n * (n - 1) // 2
    for left, right, splink_levels in pairs:
        python_levels = comparison_vector(normalized_from_row(left), normalized_from_row(right))
        assert splink_levels == python_levels, (left["unique_id"], right["unique_id"])


def test_gamma_and_level_numbering_are_inverse() -> None:
    for index, comparison in enumerate(COMPARISONS):
        for level in [None, *range(len(comparison.levels))]:
            assert level_from_gamma(index, gamma_from_level(index, level)) == level
        assert gamma_from_level(index, 0) == len(comparison.levels) - 1
        assert gamma_from_level(index, None) == -1


def test_row_round_trip(tmp_path: Path) -> None:
    for record in EDGE_CASES:
        assert normalized_from_row(row_from_normalized("x", "s", record)) == record
