"""COPY text formatting and line preparation for bulk import (no database)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from healthroam.records.bulk_prepare import (
    LineError,
    PreparedLine,
    copy_field,
    copy_line,
    copy_row,
    prepare_chunk,
)
from healthroam.security.model import Principal
from healthroam.security.scopes import ScopeSet


def test_copy_field_escapes_what_copy_text_format_treats_specially() -> None:
    assert copy_field(None) == "\\N"
    assert copy_field(True) == "t"
    assert copy_field(False) == "f"
    assert copy_field("a\\b\tc\nd\re") == "a\\\\b\\tc\\nd\\re"
    assert copy_field("血红蛋白") == "血红蛋白"
    assert copy_field(1.5) == "1.5"
    assert copy_field(7) == "7"
    assert copy_field(datetime(2024, 3, 1, 8, 30, tzinfo=UTC)) == "2024-03-01T08:30:00+00:00"


def test_prepare_chunk_reports_bad_lines_and_indexes_good_ones() -> None:
    principal = Principal("c", "H001", ScopeSet.parse("system/Observation.c"))
    good = (
        '{"resourceType":"Observation","id":"o1","status":"final",'
        '"code":{"coding":[{"system":"http://loinc.org","code":"718-7"}]},'
        '"subject":{"reference":"Patient/p1"}}'
    )
    columns = {
        "fhir_idx_token": ("resource_type", "resource_id", "param", "system", "code", "text",
                           "type_system", "type_code"),
        "fhir_idx_reference": ("resource_type", "resource_id", "param", "target_type",
                               "target_id", "url", "version", "identifier_system",
                               "identifier_value"),
    }  # fmt: skip
    others = ("string", "date", "quantity", "uri", "number", "composite", "text")
    columns |= {f"fhir_idx_{name}": ("resource_type",) for name in others}
    out = prepare_chunk(
        principal,
        [(1, good.encode()), (2, b"\xff"), (3, "   "), (4, '{"resourceType":"Patient"}')],
        columns,
        copy_text=True,
    )
    assert isinstance(out[0], PreparedLine)
    assert out[0].patient_ref == "Patient/p1"
    assert "Observation\to1\tcode\thttp://loinc.org\t718-7\t" in str(out[0].index["fhir_idx_token"])
    assert out[0].stored()["status"] == "final"
    assert isinstance(out[1], LineError)
    assert (out[1].line, out[1].detail) == (2, "the line is not UTF-8")
    assert len(out) == 3  # the blank line is skipped
    assert isinstance(out[2], LineError)
    assert out[2].line == 4  # no scope for Patient


# Values as index rows carry them: text (with every character COPY treats specially, the
# literal "\N" and Han), NULLs, booleans, numbers and instants.
_VALUES = st.one_of(
    st.none(),
    st.text(alphabet=st.sampled_from(["a", "\\", "\t", "\n", "\r", "N", "血", " "])),
    st.just("\\N"),
    st.text(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.integers(),
    st.datetimes(timezones=st.just(UTC)),
)


@given(st.lists(_VALUES, min_size=1, max_size=12))
def test_copy_row_writes_exactly_what_copy_line_writes(values: list[Any]) -> None:
    assert copy_row(values) == copy_line(values)


def test_copy_row_escapes_a_literal_backslash_n_unlike_a_null() -> None:
    assert copy_row([None, "\\N", "a\tb"]) == "\\N\t\\\\N\ta\\tb\n"
