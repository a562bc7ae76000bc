"""Fellegi-Sunter scoring with m and u probabilities from ``data/matching.json``.

The file is produced by training (``healthroam registry train``: Splink's EM on the
province's own data) and documented in ``docs/registry-matching.md``. A pair's match weight is
log2 of the prior odds plus, per comparison, log2(m/u) of its level; the exact-name level is
adjusted for how common the name is (term frequency: 王伟 agrees by chance far more often than
a rare name).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from healthroam.registry.comparisons import COMPARISONS, Level
from healthroam.registry.model import MatchGrade, NormalizedRecord


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Match weights: at or above ``link`` link automatically; at or above ``review`` ask a
    steward; below, a new person. ``certain`` is the PDQm 'certain' grade."""

    link: float
    review: float
    certain: float


@dataclass(frozen=True, slots=True)
class MatchModel:
    prior_weight: float  # log2(lambda / (1 - lambda))
    weights: tuple[tuple[float, ...], ...]  # per comparison, per level: log2(m/u)
    u_values: tuple[tuple[float, ...], ...]
    tf_comparisons: frozenset[str]  # comparisons whose level 0 gets a term-frequency adjustment
    thresholds: Thresholds
    source: dict[str, Any]

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> MatchModel:
        by_name = {c["name"]: c for c in spec["comparisons"]}
        weights, u_values, tf = [], [], set()
        for comparison in COMPARISONS:
            levels = by_name[comparison.name]["levels"]
            labels = tuple(level["label"] for level in levels)
            if labels != comparison.levels:
                raise ValueError(
                    f"matching file: {comparison.name} levels {labels} != {comparison.levels}"
                )
            weights.append(tuple(math.log2(lv["m"] / lv["u"]) for lv in levels))
            u_values.append(tuple(float(lv["u"]) for lv in levels))
            if levels[0].get("tf_adjustment"):
                tf.add(comparison.name)
        prior = float(spec["prior_match_probability"])
        t = spec["thresholds"]
        return cls(
            prior_weight=math.log2(prior / (1 - prior)),
            weights=tuple(weights),
            u_values=tuple(u_values),
            tf_comparisons=frozenset(tf),
            thresholds=Thresholds(float(t["link"]), float(t["review"]), float(t["certain"])),
            source=spec.get("trained", {}),
        )

    @classmethod
    def load(cls, path: Path | None = None) -> MatchModel:
        if path is None:
            text = resources.files("healthroam.registry").joinpath("data/matching.json").read_text()
        else:
            text = path.read_text()
        return cls.from_dict(json.loads(text))

    def score(
        self,
        a: NormalizedRecord,
        b: NormalizedRecord,
        name_frequency: Callable[[str], float] | None = None,
    ) -> Score:
        """Score one pair; ``name_frequency`` gives a name's share of all records (0..1)."""
        total = self.prior_weight
        levels: list[Level] = []
        for index, comparison in enumerate(COMPARISONS):
            level = comparison.level(a, b)
            levels.append(level)
            if level is None:
                continue
            total += self.weights[index][level]
            if level == 0 and name_frequency and comparison.name in self.tf_comparisons:
                value = a.name or a.latin_name or ""
                frequency = name_frequency(value)
                if frequency > 0:
                    # Splink's term-frequency adjustment: replace u of the level by the
                    # value's own frequency.
                    total += math.log2(self.u_values[index][0] / frequency)
        return Score(total, tuple(levels))

    def grade(self, weight: float) -> MatchGrade:
        if weight >= self.thresholds.certain:
            return MatchGrade.CERTAIN
        if weight >= self.thresholds.link:
            return MatchGrade.PROBABLE
        if weight >= self.thresholds.review:
            return MatchGrade.POSSIBLE
        return MatchGrade.CERTAINLY_NOT


@dataclass(frozen=True, slots=True)
class Score:
    weight: float
    levels: tuple[Level, ...]

    @property
    def probability(self) -> float:
        if self.weight > 60:
            return 1.0
        odds: float = 2.0**self.weight
        return odds / (1 + odds)

    def explain(self) -> dict[str, str | None]:
        return {
            c.name: (c.levels[lv] if lv is not None else None)
            for c, lv in zip(COMPARISONS, self.levels, strict=True)
        }
