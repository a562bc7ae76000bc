"""Result recognition (检查检验结果互认) rules: plain data and pure functions.

- The table says which LOINC codes are the same test for this purpose (one ``TableTest`` groups the
  interchangeable codes: the same test by another method, or the same panel), how many days a
  result stays valid, and which conditions make it recognised; LOINC classes give defaults.
- Local codes map an institution's own (system, code) to LOINC.
- A result is *equivalent* to an order when both map to the same ``TableTest``; it is *valid* while
  its age in calendar days (China Standard Time) is at most the test's window; it is
  *recognised* when every condition of the test holds between the ordering and the performing
  institution.

No web or database framework here: the service feeds institutions and stored resources in.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from healthroam.errors import InvalidInput

LOINC = "http://loinc.org"
CHINA_TIME = timezone(timedelta(hours=8), "CST")  # calendar days are counted in Beijing time
RESULT_TYPES = ("Observation", "DiagnosticReport")
# Statuses of a result that can stand in for a new test (preliminary ones cannot).
FINAL_STATUSES = {
    "Observation": frozenset({"final", "amended", "corrected"}),
    "DiagnosticReport": frozenset({"final", "amended", "corrected", "appended"}),
}
MAX_VALIDITY_DAYS = 3660


class Condition(StrEnum):
    """One condition of a recognition rule; a test's rule is all of its conditions."""

    ANY = "any"  # recognised from any institution
    SAME_OR_HIGHER_LEVEL = "same-or-higher-level"  # performer's level >= orderer's level
    SAME_REGION = "same-region"  # same leading region digits (rules.region_digits)
    SAME_INSTITUTION = "same-institution"  # only the ordering institution's own results


@dataclass(frozen=True, slots=True)
class TableTest:
    """A test for recognition purposes: the LOINC codes that stand in for each other."""

    id: str
    name: str
    name_en: str
    loinc_class: str
    loinc: frozenset[str]
    validity_days: int
    recognise: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Site:
    """What the rules need to know about an institution (from the institutions table)."""

    code: str
    kind: str
    region: str
    level: int | None
    active: bool = True


@dataclass(frozen=True, slots=True)
class Decision:
    recognised: bool
    reason: str  # a code (see REASONS)
    detail: str  # one sentence for people


REASONS = {
    "any-institution": "recognised from any institution for this test",
    "same-or-higher-level": "performed at an institution of the same or a higher level",
    "lower-level": "performed at an institution of a lower level",
    "same-region": "performed in the same region",
    "other-region": "performed in another region",
    "same-institution": "performed at the ordering institution",
    "other-institution": "this test is recognised only at the institution that performed it",
    "unknown-institution": "the performing institution is not known to the platform",
    "inactive-institution": "the performing institution is no longer active",
}


@dataclass(frozen=True, slots=True)
class RecognitionTable:
    tests: tuple[TableTest, ...]
    local_codes: Mapping[tuple[str, str, str], str] = field(default_factory=dict)
    region_digits: int = 4
    non_hospital_level: int = 0
    _by_loinc: dict[str, TableTest] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for test in self.tests:
            for code in test.loinc:
                self._by_loinc[code] = test

    @property
    def longest_window(self) -> int:
        return max((t.validity_days for t in self.tests), default=0)

    def test(self, test_id: str) -> TableTest | None:
        return next((t for t in self.tests if t.id == test_id), None)

    def loinc_of(self, institution: str | None, system: str | None, code: str | None) -> str | None:
        """The LOINC code of a coding: itself when LOINC, else the institution's mapping."""
        if not code:
            return None
        if system == LOINC:
            return code
        if institution is None or system is None:
            return None
        return self.local_codes.get((institution, system, code))

    def match(
        self, institution: str | None, codings: Iterable[tuple[str | None, str | None]]
    ) -> tuple[TableTest, str] | None:
        """The first coding that maps to a tabled test: (test, its LOINC code)."""
        for system, code in codings:
            loinc = self.loinc_of(institution, system, code)
            if loinc is not None and loinc in self._by_loinc:
                return self._by_loinc[loinc], loinc
        return None

    def codings_of(self, tests: Iterable[TableTest]) -> set[tuple[str, str]]:
        """Every (system, code) that may name one of ``tests`` in a stored result: the LOINC
        codes and every institution's local codes for them (for the store's token index)."""
        loincs = {code for t in tests for code in t.loinc}
        found = {(LOINC, code) for code in loincs}
        found.update((s, c) for (_i, s, c), loinc in self.local_codes.items() if loinc in loincs)
        return found


# --- the rules -----------------------------------------------------------------------------


def effective_level(site: Site, table: RecognitionTable) -> int:
    return site.level if site.level is not None else table.non_hospital_level


def recognise(
    test: TableTest, ordering: Site, performing: Site | None, table: RecognitionTable
) -> Decision:
    """Whether a valid, equivalent result from ``performing`` is recognised at ``ordering``."""

    def decision(ok: bool, reason: str) -> Decision:
        return Decision(ok, reason, REASONS[reason])

    if performing is None:
        return decision(False, "unknown-institution")
    if not performing.active:
        return decision(False, "inactive-institution")
    reasons: list[str] = []
    for condition in test.recognise:
        if condition is Condition.ANY:
            reasons.append("any-institution")
        elif condition is Condition.SAME_INSTITUTION:
            if performing.code != ordering.code:
                return decision(False, "other-institution")
            reasons.append("same-institution")
        elif condition is Condition.SAME_OR_HIGHER_LEVEL:
            if effective_level(performing, table) < effective_level(ordering, table):
                return decision(False, "lower-level")
            reasons.append("same-or-higher-level")
        elif condition is Condition.SAME_REGION:
            digits = table.region_digits
            if performing.region[:digits] != ordering.region[:digits]:
                return decision(False, "other-region")
            reasons.append("same-region")
    # All conditions hold: the most telling reason is the last one checked.
    return decision(True, reasons[-1] if reasons else "any-institution")


def local_day(moment: datetime) -> date:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(CHINA_TIME).date()


def _parse_moment(value: Any) -> datetime | None:
    """A FHIR date/dateTime/instant -> an aware datetime (a bare date is midnight in China)."""
    if not isinstance(value, str) or len(value) < 10:
        return None  # a year or year-month alone says too little about a result's age
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=CHINA_TIME)


def parse_day(value: str | None, name: str) -> date | None:
    """A ``YYYY-MM-DD`` parameter (``since``, ``until`` of the counts); None when absent."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{name} must be a date (YYYY-MM-DD)", expression=name) from None


def result_moment(content: Mapping[str, Any]) -> datetime | None:
    """When a result was taken: effective[x] (a period's start), else ``issued``."""
    period = content.get("effectivePeriod")
    for value in (
        content.get("effectiveDateTime"),
        content.get("effectiveInstant"),
        period.get("start") if isinstance(period, dict) else None,
        content.get("issued"),
    ):
        moment = _parse_moment(value)
        if moment is not None:
            return moment
    return None


def valid_until(test: TableTest, taken: date) -> date:
    """The last calendar day on which a result taken on ``taken`` is valid (inclusive)."""
    return taken + timedelta(days=test.validity_days)


def is_valid(test: TableTest, taken: date, today: date) -> bool:
    """Valid from the day it was taken through ``valid_until``; never when dated later than
    today (a result from the future is a data error, not a result to rely on)."""
    return taken <= today <= valid_until(test, taken)


def codings(concept: Any) -> list[tuple[str | None, str | None]]:
    """(system, code) pairs of a CodeableConcept (malformed parts are skipped)."""
    if not isinstance(concept, dict):
        return []
    out: list[tuple[str | None, str | None]] = []
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            system = coding.get("system")
            out.append((system if isinstance(system, str) else None, coding["code"]))
    return out


@dataclass(frozen=True, slots=True)
class Finding:
    """An equivalent, valid result and whether it is recognised for the ordering site."""

    resource_type: str
    resource_id: str
    test: TableTest
    loinc: str
    institution: str | None
    taken: datetime
    valid_until: date
    decision: Decision
    resource: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.resource_id}"


def assess(
    table: RecognitionTable,
    resource_type: str,
    resource_id: str,
    content: Mapping[str, Any],
    institution: str | None,
    ordering: Site,
    performing: Site | None,
    today: date,
    wanted: Sequence[TableTest] | None,
    served: Mapping[str, Any] | None = None,
) -> Finding | None:
    """The finding for one stored result, or None when it is not an equivalent valid result
    (not final, not a tabled test, not among ``wanted``, undated, or outside its window)."""
    if content.get("status") not in FINAL_STATUSES.get(resource_type, frozenset()):
        return None
    matched = table.match(institution, codings(content.get("code")))
    if matched is None:
        return None
    test, loinc = matched
    if wanted is not None and test not in wanted:
        return None
    taken = result_moment(content)
    if taken is None or not is_valid(test, local_day(taken), today):
        return None
    return Finding(
        resource_type,
        resource_id,
        test,
        loinc,
        institution,
        taken,
        valid_until(test, local_day(taken)),
        recognise(test, ordering, performing, table),
        served if served is not None else content,
    )


def rank(findings: Iterable[Finding]) -> list[Finding]:
    """Recognised first, then newest first."""
    return sorted(
        findings, key=lambda f: (not f.decision.recognised, -f.taken.timestamp(), f.reference)
    )


# --- the table file ------------------------------------------------------------------------


def _fail(message: str, where: str) -> InvalidInput:
    return InvalidInput(f"recognition table: {message}", expression=where)


def _days(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_VALIDITY_DAYS:
        raise _fail(f"validity_days must be a whole number of days, 1-{MAX_VALIDITY_DAYS}", where)
    return value


def _conditions(value: Any, where: str) -> tuple[Condition, ...]:
    if not isinstance(value, list) or not value:
        raise _fail("recognise must be a non-empty list of conditions", where)
    try:
        return tuple(Condition(v) for v in value)
    except ValueError:
        known = ", ".join(c.value for c in Condition)
        raise _fail(f"unknown condition in {value!r} (known: {known})", where) from None


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """An override file over the shipped table: ``rules`` and ``classes`` keys replace, tests
    replace by ``id`` (``enabled = false`` drops one), local codes replace by their key."""
    unknown = set(override) - {"rules", "classes", "tests", "local_codes"}
    if unknown:
        raise _fail(f"unknown section {sorted(unknown)[0]}", sorted(unknown)[0])
    merged: dict[str, Any] = {
        "rules": {**base.get("rules", {}), **override.get("rules", {})},
        "classes": {**base.get("classes", {}), **override.get("classes", {})},
    }
    tests = {t.get("id"): t for t in base.get("tests", [])}
    for test in override.get("tests", []):
        tests[test.get("id")] = test
    merged["tests"] = [t for t in tests.values() if t.get("enabled", True) is not False]
    codes = {
        (c.get("institution"), c.get("system"), c.get("code")): c
        for c in [*base.get("local_codes", []), *override.get("local_codes", [])]
    }
    merged["local_codes"] = list(codes.values())
    return merged


def parse_table(data: Mapping[str, Any]) -> RecognitionTable:
    """Validate a table document (already merged) into a :class:`RecognitionTable`."""
    rules = data.get("rules", {})
    region_digits = rules.get("region_digits", 4)
    if region_digits not in (2, 4, 6):
        raise _fail("region_digits must be 2, 4 or 6", "rules.region_digits")
    non_hospital = rules.get("non_hospital_level", 0)
    if not isinstance(non_hospital, int) or not 0 <= non_hospital <= 3:
        raise _fail("non_hospital_level must be 0-3", "rules.non_hospital_level")
    classes = data.get("classes", {})
    tests: list[TableTest] = []
    seen_ids: set[str] = set()
    seen_codes: dict[str, str] = {}
    for index, raw in enumerate(data.get("tests", [])):
        where = f"tests[{index}]"
        test_id = raw.get("id")
        if not isinstance(test_id, str) or not test_id or test_id in seen_ids:
            raise _fail("each test needs a unique id", f"{where}.id")
        seen_ids.add(test_id)
        loinc_class = raw.get("class", "")
        defaults = classes.get(loinc_class, {}) if isinstance(loinc_class, str) else {}
        codes = raw.get("loinc")
        if not isinstance(codes, list) or not codes or not all(isinstance(c, str) for c in codes):
            raise _fail("loinc must be a non-empty list of codes", f"{where}.loinc")
        for code in codes:
            if code in seen_codes:
                raise _fail(f"LOINC {code} is in both {seen_codes[code]} and {test_id}", where)
            seen_codes[code] = test_id
        if "validity_days" not in raw and "validity_days" not in defaults:
            raise _fail("no validity_days for the test or its class", f"{where}.validity_days")
        tests.append(
            TableTest(
                id=test_id,
                name=str(raw.get("name", test_id)),
                name_en=str(raw.get("name_en", raw.get("name", test_id))),
                loinc_class=str(loinc_class),
                loinc=frozenset(codes),
                validity_days=_days(
                    raw.get("validity_days", defaults.get("validity_days")),
                    f"{where}.validity_days",
                ),
                recognise=_conditions(
                    raw.get("recognise", defaults.get("recognise", ["same-or-higher-level"])),
                    f"{where}.recognise",
                ),
            )
        )
    local: dict[tuple[str, str, str], str] = {}
    for index, raw in enumerate(data.get("local_codes", [])):
        where = f"local_codes[{index}]"
        values = [raw.get(k) for k in ("institution", "system", "code", "loinc")]
        if not all(isinstance(v, str) and v for v in values):
            raise _fail("a local code needs institution, system, code and loinc", where)
        institution, system, code, loinc = values
        if loinc not in seen_codes:
            raise _fail(f"local code maps to LOINC {loinc}, which no test lists", where)
        local[(institution, system, code)] = loinc
    return RecognitionTable(tuple(tests), local, region_digits, non_hospital)


def shipped_document() -> dict[str, Any]:
    text = resources.files("healthroam.exchange.recognition").joinpath("data/recognition.toml")
    return tomllib.loads(text.read_text(encoding="utf-8"))


def load_table(override: Path | None = None) -> RecognitionTable:
    """The shipped table, with ``override`` (same format) merged over it when given."""
    document = shipped_document()
    if override is not None:
        try:
            extra = tomllib.loads(override.read_text(encoding="utf-8"))
        except OSError as exc:
            raise _fail(f"cannot read {override}: {exc.strerror}", "file") from None
        except tomllib.TOMLDecodeError as exc:
            raise _fail(f"{override} is not valid TOML: {exc}", "file") from None
        document = merge(document, extra)
    return parse_table(document)
