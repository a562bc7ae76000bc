"""The comparison levels of :mod:`healthroam.registry.comparisons`, written as Splink SQL.

Same comparisons, same labels, same order, same null handling as the Python definitions the
real-time path uses; ``tests/unit/registry/test_linkage_levels.py`` checks that both give the
same level on real pairs. Splink numbers levels the other way round (``gamma`` = number of
non-null levels - 1 - our level; -1 is null), see :func:`level_from_gamma`.

Two SQL dialects: DuckDB (the batch default) and Spark (Splink's jar supplies
``jaro_winkler`` and ``damerau_levenshtein``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from healthroam.registry.comparisons import (
    ADDRESS_TOKEN_JACCARD,
    COMPARISONS,
    NAME_FUZZY_JARO_WINKLER,
)

TF_COLUMN = "name_key"  # coalesce(name, latin_name): what the real-time TF lookup uses


@dataclass(frozen=True, slots=True)
class Dialect:
    """The few functions whose names differ between Splink backends."""

    name: str  # Splink's dialect string: "duckdb" or "spark"

    def overlap(self, a: str, b: str) -> str:
        if self.name == "spark":
            return f"arrays_overlap({a}, {b})"
        return f"list_has_any({a}, {b})"

    def size(self, a: str) -> str:
        return f"size({a})" if self.name == "spark" else f"len({a})"

    def intersect_size(self, a: str, b: str) -> str:
        if self.name == "spark":
            return f"size(array_intersect({a}, {b}))"
        return f"len(list_intersect({a}, {b}))"

    def union_size(self, a: str, b: str) -> str:
        if self.name == "spark":
            return f"size(array_union({a}, {b}))"
        return f"len(list_distinct(list_concat({a}, {b})))"

    def damerau(self, a: str, b: str) -> str:
        return f"damerau_levenshtein({a}, {b})"

    def jaro_winkler(self, a: str, b: str) -> str:
        if self.name == "spark":
            return f"jaro_winkler({a}, {b})"
        return f"jaro_winkler_similarity({a}, {b})"


DUCKDB = Dialect("duckdb")
SPARK = Dialect("spark")


def _level(sql: str, label: str, **extra: Any) -> dict[str, Any]:
    return {"sql_condition": " ".join(sql.split()), "label_for_charts": label, **extra}


def _null(sql: str) -> dict[str, Any]:
    return _level(sql, "null", is_null_level=True)


def _else() -> dict[str, Any]:
    return _level("ELSE", "else")


def _digits(side: str) -> str:
    return f"replace(birth_date_{side}, '-', '')"


def comparison_levels(d: Dialect) -> dict[str, list[dict[str, Any]]]:
    """Per comparison name: Splink level dicts (null level first, then ours in order)."""
    jw = NAME_FUZZY_JARO_WINKLER
    dl, dr = _digits("l"), _digits("r")
    jaccard_num, jaccard_den = ADDRESS_TOKEN_JACCARD.as_integer_ratio()
    levels: dict[str, list[dict[str, Any]]] = {
        "name": [
            _null(
                "(name_l IS NULL AND latin_name_l IS NULL)"
                " OR (name_r IS NULL AND latin_name_r IS NULL)"
            ),
            _level(
                "name_l = name_r OR latin_name_l = latin_name_r",
                "exact",
                tf_adjustment_column=TF_COLUMN,
                tf_adjustment_weight=1.0,
                # the level is an OR of two columns: its own u is the exact-match u
                disable_tf_exact_match_detection=True,
            ),
            _level(d.overlap("pinyin_keys_l", "pinyin_keys_r"), "same_pinyin"),
            _level(
                f"""(name_l IS NOT NULL AND name_r IS NOT NULL
                    AND {d.damerau("name_l", "name_r")} <= 1)
                OR (pinyin_l = '' AND pinyin_r = '')
                OR {d.jaro_winkler("pinyin_l", "pinyin_r")} >= {jw}""",
                "fuzzy",
            ),
            _else(),
        ],
        "birth_date": [
            _null("birth_date_l IS NULL OR birth_date_r IS NULL"),
            _level("birth_date_l = birth_date_r", "exact"),
            _level(
                f"""{d.damerau(dl, dr)} <= 1
                OR (substr({dl}, 1, 4) = substr({dr}, 1, 4)
                    AND substr({dl}, 5, 2) = substr({dr}, 7, 2)
                    AND substr({dl}, 7, 2) = substr({dr}, 5, 2))""",
                "transposed",
            ),
            _level(f"substr({dl}, 1, 6) = substr({dr}, 1, 6)", "year_month"),
            _level(f"substr({dl}, 1, 4) = substr({dr}, 1, 4)", "year"),
            _else(),
        ],
        "sex": [
            _null("sex_l IS NULL OR sex_r IS NULL"),
            _level("sex_l = sex_r", "exact"),
            _else(),
        ],
        "national_id": [
            _null("national_id_l IS NULL OR national_id_r IS NULL"),
            _level("national_id_l = national_id_r", "exact"),
            _level(f"{d.damerau('national_id_l', 'national_id_r')} <= 1", "one_off"),
            _else(),
        ],
        "region": [
            _null("region_l IS NULL OR region_r IS NULL"),
            _level("region_l = region_r", "county"),
            _level("substr(region_l, 1, 4) = substr(region_r, 1, 4)", "prefecture"),
            _else(),
        ],
        "address": [
            _null("address_l IS NULL OR address_r IS NULL"),
            _level("address_l = address_r", "exact"),
            _level(
                # |a ∩ b| / |a ∪ b| >= num/den, in integers (as exact as Python's division)
                f"""{d.union_size("address_tokens_l", "address_tokens_r")} > 0
                AND {jaccard_den} * {d.intersect_size("address_tokens_l", "address_tokens_r")}
                    >= {jaccard_num} * {d.union_size("address_tokens_l", "address_tokens_r")}""",
                "similar",
            ),
            _else(),
        ],
        "phone": [
            _null("phone_l IS NULL OR phone_r IS NULL"),
            _level("phone_l = phone_r", "exact"),
            _else(),
        ],
        "identifiers": [
            _null(
                f"identifiers_l IS NULL OR identifiers_r IS NULL"
                f" OR {d.size('identifiers_l')} = 0 OR {d.size('identifiers_r')} = 0"
            ),
            _level(d.overlap("identifiers_l", "identifiers_r"), "shared"),
            _else(),
        ],
    }
    for comparison in COMPARISONS:  # the labels and their order are comparisons.py's
        labels = tuple(level["label_for_charts"] for level in levels[comparison.name][1:])
        if labels != comparison.levels:
            raise AssertionError(f"{comparison.name}: SQL levels {labels} != {comparison.levels}")
    return levels


def splink_comparisons(d: Dialect, spec: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Splink comparison dicts in the order of ``COMPARISONS``; with ``spec`` (a
    ``matching.json``), each level carries its m and u probabilities."""
    by_name = {c["name"]: c for c in spec["comparisons"]} if spec else {}
    out: list[dict[str, Any]] = []
    for comparison in COMPARISONS:
        levels = [dict(level) for level in comparison_levels(d)[comparison.name]]
        if comparison.name in by_name:
            for level, trained in zip(levels[1:], by_name[comparison.name]["levels"], strict=True):
                level["m_probability"] = trained["m"]
                level["u_probability"] = trained["u"]
                if not trained.get("tf_adjustment"):
                    level.pop("tf_adjustment_column", None)
                    level.pop("tf_adjustment_weight", None)
                    level.pop("disable_tf_exact_match_detection", None)
        out.append(
            {
                "output_column_name": comparison.name,
                "comparison_description": comparison.name,
                "comparison_levels": levels,
            }
        )
    return out


def level_from_gamma(comparison_index: int, gamma: int) -> int | None:
    """Our level index (0 strongest) from Splink's comparison vector value (-1 null)."""
    if gamma < 0:
        return None
    return len(COMPARISONS[comparison_index].levels) - 1 - gamma


def gamma_from_level(comparison_index: int, level: int | None) -> int:
    if level is None:
        return -1
    return len(COMPARISONS[comparison_index].levels) - 1 - level


# Blocking rules for prediction: each source error still leaves one rule under which the
# pair meets (the batch analogue of blocking.py's keys, without the keys whose blocks grow
# with the population, e.g. birth date + county + sex).
def prediction_blocking_rules() -> list[dict[str, Any]]:
    return [
        {"blocking_rule": "l.national_id = r.national_id"},
        {  # homophones, traditional script, missing or mistyped ID: a shared reading + date
            "blocking_rule": "l.pinyin_keys = r.pinyin_keys AND l.birth_date = r.birth_date",
            "arrays_to_explode": ["pinyin_keys"],
        },
        {  # a transposed birth date and no usable ID: reading + birth year + sex
            "blocking_rule": "l.pinyin = r.pinyin AND substr(l.birth_date, 1, 4) = "
            "substr(r.birth_date, 1, 4) AND l.sex = r.sex",
        },
        {  # a typo in the name and no usable ID: same birth date, phone
            "blocking_rule": "l.birth_date = r.birth_date AND l.phone = r.phone",
        },
        {"blocking_rule": "l.identifiers = r.identifiers", "arrays_to_explode": ["identifiers"]},
    ]
