"""Result recognition rules: the table, validity windows, levels, regions, local codes."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from healthroam.errors import InvalidInput
from healthroam.exchange.recognition.model import (
    LOINC,
    Condition,
    RecognitionTable,
    Site,
    TableTest,
    assess,
    is_valid,
    load_table,
    local_day,
    merge,
    parse_table,
    rank,
    recognise,
    result_moment,
    shipped_document,
    valid_until,
)

TERTIARY = Site("H3", "hospital", "460106", 3)
SECONDARY = Site("H2", "hospital", "460106", 2)
SECONDARY_SANYA = Site("S2", "hospital", "460201", 2)
TOWNSHIP = Site("T0", "township-health-centre", "460106", None)


def table(**test: Any) -> RecognitionTable:
    raw = {"id": "cbc", "class": "HEM/BC", "loinc": ["58410-2", "57021-8"], **test}
    return parse_table(
        {
            "classes": {"HEM/BC": {"validity_days": 7, "recognise": ["same-or-higher-level"]}},
            "tests": [raw],
            "local_codes": [
                {"institution": "H2", "system": "urn:h2:lab", "code": "XCG", "loinc": "58410-2"}
            ],
        }
    )


def observation(code: str = "58410-2", when: str = "2026-11-20", **extra: Any) -> dict[str, Any]:
    return {
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "effectiveDateTime": when,
        **extra,
    }


# --- the shipped table ---------------------------------------------------------------------


def test_the_shipped_table_loads_and_covers_common_tests() -> None:
    shipped = load_table()
    ids = {t.id for t in shipped.tests}
    assert {"cbc", "liver-panel", "kidney-panel", "hba1c", "lipid-panel", "electrolytes"} <= ids
    assert {"pt-inr", "hbsag", "chest-xray", "chest-ct", "brain-mri", "abdomen-us"} <= ids
    assert shipped.test("hba1c") is not None
    assert shipped.test("hba1c").validity_days == 90  # type: ignore[union-attr]
    assert shipped.test("cbc").validity_days == 7  # type: ignore[union-attr]
    assert shipped.test("hbsag").recognise == (Condition.ANY,)  # type: ignore[union-attr]
    assert "国卫医发〔2022〕6号" in Path(
        __import__("healthroam.exchange.recognition", fromlist=["x"]).__file__  # type: ignore[arg-type]
    ).with_name("data").joinpath("recognition.toml").read_text(encoding="utf-8")


# --- equivalence ---------------------------------------------------------------------------


def test_same_loinc_and_same_group_are_equivalent_others_not() -> None:
    t = table()
    assert t.match(None, [(LOINC, "58410-2")])[0].id == "cbc"  # type: ignore[index]
    assert t.match(None, [(LOINC, "57021-8")])[0].id == "cbc"  # type: ignore[index]
    assert t.match(None, [(LOINC, "718-7")]) is None  # haemoglobin alone is not a CBC
    assert t.match(None, [("http://snomed.info/sct", "58410-2")]) is None  # not LOINC


def test_local_codes_map_per_institution() -> None:
    t = table()
    assert t.match("H2", [("urn:h2:lab", "XCG")]) == (t.tests[0], "58410-2")
    assert t.match("H3", [("urn:h2:lab", "XCG")]) is None  # another hospital's code
    assert ("urn:h2:lab", "XCG") in t.codings_of(t.tests)
    assert (LOINC, "57021-8") in t.codings_of(t.tests)


def test_first_mappable_coding_wins() -> None:
    t = table()
    found = t.match("H2", [("urn:other", "1"), ("urn:h2:lab", "XCG"), (LOINC, "57021-8")])
    assert found == (t.tests[0], "58410-2")


# --- validity windows ----------------------------------------------------------------------


def test_window_is_inclusive_in_calendar_days() -> None:
    test = table().tests[0]
    taken = date(2026, 11, 1)
    assert valid_until(test, taken) == date(2026, 11, 8)
    assert is_valid(test, taken, date(2026, 11, 1))
    assert is_valid(test, taken, date(2026, 11, 8))
    assert not is_valid(test, taken, date(2026, 11, 9))
    assert not is_valid(test, taken, date(2026, 10, 31))  # dated in the future


def test_days_are_counted_in_beijing_time() -> None:
    # 23:30 UTC on 1 Nov is 07:30 on 2 Nov in Beijing.
    assert local_day(datetime(2026, 11, 1, 23, 30, tzinfo=UTC)) == date(2026, 11, 2)
    moment = result_moment({"effectiveDateTime": "2026-11-02"})
    assert moment is not None
    assert local_day(moment) == date(2026, 11, 2)


def test_result_moment_sources() -> None:
    assert result_moment({"effectivePeriod": {"start": "2026-11-02T08:00:00+08:00"}}) is not None
    assert result_moment({"issued": "2026-11-03T01:00:00Z"}) == datetime(2026, 11, 3, 1, tzinfo=UTC)
    assert result_moment({"effectiveDateTime": "2026-11"}) is None  # too imprecise
    assert result_moment({"effectiveDateTime": "garbage-value"}) is None
    assert result_moment({}) is None


# --- recognition ---------------------------------------------------------------------------


def test_same_or_higher_level() -> None:
    t = table()
    test = t.tests[0]
    assert recognise(test, SECONDARY, TERTIARY, t).recognised
    assert recognise(test, SECONDARY, SECONDARY, t).recognised
    lower = recognise(test, TERTIARY, SECONDARY, t)
    assert not lower.recognised
    assert lower.reason == "lower-level"
    assert not recognise(test, SECONDARY, TOWNSHIP, t).recognised  # non-hospitals rank 0
    assert recognise(test, TOWNSHIP, TOWNSHIP, t).recognised


def test_any_level_and_unknown_or_inactive_performers() -> None:
    t = table(recognise=["any"])
    test = t.tests[0]
    decision = recognise(test, TERTIARY, TOWNSHIP, t)
    assert decision.recognised
    assert decision.reason == "any-institution"
    assert recognise(test, TERTIARY, None, t).reason == "unknown-institution"
    closed = Site("X", "hospital", "460106", 3, active=False)
    assert recognise(test, TERTIARY, closed, t).reason == "inactive-institution"


def test_same_region_combined_with_level() -> None:
    t = table(recognise=["same-region", "same-or-higher-level"])
    test = t.tests[0]
    assert not recognise(test, SECONDARY, SECONDARY_SANYA, t).recognised
    assert recognise(test, SECONDARY, SECONDARY_SANYA, t).reason == "other-region"
    province_wide = parse_table(
        {
            "rules": {"region_digits": 2},
            "tests": [
                {"id": "x", "loinc": ["1-1"], "validity_days": 1, "recognise": ["same-region"]}
            ],
        }
    )
    assert recognise(province_wide.tests[0], SECONDARY, SECONDARY_SANYA, province_wide).recognised


def test_same_institution_only() -> None:
    t = table(recognise=["same-institution"])
    assert recognise(t.tests[0], TERTIARY, TERTIARY, t).recognised
    assert recognise(t.tests[0], SECONDARY, TERTIARY, t).reason == "other-institution"


def test_non_hospital_level_is_configurable() -> None:
    t = parse_table(
        {
            "rules": {"non_hospital_level": 1},
            "tests": [{"id": "x", "loinc": ["1-1"], "validity_days": 1}],
        }
    )
    level_one = Site("H1", "hospital", "460106", 1)
    assert recognise(t.tests[0], level_one, TOWNSHIP, t).recognised


# --- assessing stored results --------------------------------------------------------------


def test_assess_filters_status_window_and_wanted_tests() -> None:
    t = table()
    today = date(2026, 11, 25)
    ok = assess(t, "Observation", "o1", observation(), "H3", SECONDARY, TERTIARY, today, None)
    assert ok is not None
    assert ok.decision.recognised
    assert ok.valid_until == date(2026, 11, 27)
    prelim = observation(status="preliminary")
    assert assess(t, "Observation", "o", prelim, "H3", SECONDARY, TERTIARY, today, None) is None
    old = observation(when="2026-11-17")
    assert assess(t, "Observation", "o", old, "H3", SECONDARY, TERTIARY, today, None) is None
    undated = {k: v for k, v in observation().items() if k != "effectiveDateTime"}
    assert assess(t, "Observation", "o", undated, "H3", SECONDARY, TERTIARY, today, None) is None
    other = TableTest("other", "x", "x", "CHEM", frozenset({"1-1"}), 5, (Condition.ANY,))
    assert (
        assess(t, "Observation", "o", observation(), "H3", SECONDARY, TERTIARY, today, [other])
        is None
    )
    local = observation()
    local["code"] = {"coding": [{"system": "urn:h2:lab", "code": "XCG"}]}
    found = assess(t, "DiagnosticReport", "d", local, "H2", TERTIARY, SECONDARY, today, None)
    assert found is not None
    assert found.loinc == "58410-2"
    assert not found.decision.recognised  # level 2 result for a level 3 order


def test_rank_puts_recognised_then_newest_first() -> None:
    t = table()
    today = date(2026, 11, 25)
    older = assess(
        t,
        "Observation",
        "a",
        observation(when="2026-11-20"),
        "H3",
        SECONDARY,
        TERTIARY,
        today,
        None,
    )
    newer = assess(
        t,
        "Observation",
        "b",
        observation(when="2026-11-24"),
        "H3",
        SECONDARY,
        TERTIARY,
        today,
        None,
    )
    lower = assess(
        t,
        "Observation",
        "c",
        observation(when="2026-11-25"),
        "T0",
        SECONDARY,
        TOWNSHIP,
        today,
        None,
    )
    assert older is not None
    assert newer is not None
    assert lower is not None
    assert [f.resource_id for f in rank([lower, older, newer])] == ["b", "a", "c"]


# --- the table format ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "where"),
    [
        ({"tests": [{"id": "x", "loinc": ["1-1"]}]}, "tests[0].validity_days"),
        ({"tests": [{"id": "x", "loinc": [], "validity_days": 3}]}, "tests[0].loinc"),
        ({"tests": [{"id": "x", "loinc": ["1-1"], "validity_days": 0}]}, "tests[0].validity_days"),
        (
            {"tests": [{"id": "x", "loinc": ["1-1"], "validity_days": 3, "recognise": ["nearby"]}]},
            "tests[0].recognise",
        ),
        (
            {
                "tests": [
                    {"id": "x", "loinc": ["1-1"], "validity_days": 3},
                    {"id": "x", "loinc": ["2-2"], "validity_days": 3},
                ]
            },
            "tests[1].id",
        ),
        (
            {
                "tests": [
                    {"id": "x", "loinc": ["1-1"], "validity_days": 3},
                    {"id": "y", "loinc": ["1-1"], "validity_days": 3},
                ]
            },
            "tests[1]",
        ),
        (
            {
                "tests": [{"id": "x", "loinc": ["1-1"], "validity_days": 3}],
                "local_codes": [{"institution": "H", "system": "s", "code": "c", "loinc": "9-9"}],
            },
            "local_codes[0]",
        ),
        ({"rules": {"region_digits": 3}}, "rules.region_digits"),
    ],
)
def test_bad_tables_are_refused_with_the_place(document: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_table(document)
    assert caught.value.expression == where


def test_override_file_replaces_adds_and_drops(tmp_path: Path) -> None:
    override = tmp_path / "hainan.toml"
    override.write_text(
        """
[rules]
region_digits = 2

[[tests]]
id = "cbc"
name = "血常规"
class = "HEM/BC"
loinc = ["58410-2", "57021-8", "57782-5"]
validity_days = 3

[[tests]]
id = "electrolytes"
enabled = false

[[local_codes]]
institution = "HN001"
system = "urn:oid:1.2.156.1"
code = "XCG01"
loinc = "58410-2"
""",
        encoding="utf-8",
    )
    loaded = load_table(override)
    assert loaded.test("cbc").validity_days == 3  # type: ignore[union-attr]
    assert loaded.test("electrolytes") is None
    assert loaded.test("hba1c") is not None  # untouched
    assert loaded.region_digits == 2
    assert loaded.loinc_of("HN001", "urn:oid:1.2.156.1", "XCG01") == "58410-2"


def test_override_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot read"):
        load_table(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[[tests]\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match="not valid TOML"):
        load_table(broken)
    with pytest.raises(InvalidInput, match="unknown section"):
        merge(shipped_document(), {"testz": []})
