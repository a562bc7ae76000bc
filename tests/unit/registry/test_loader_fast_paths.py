"""The bulk loader's per-row fast paths (session 10, decision 0046) give what the general code
gives: the compiled column mapping, the one-record golden record, the written-out JSON form of
a normalised record."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from healthroam.errors import HealthroamError
from healthroam.registry.codec import from_json, to_json
from healthroam.registry.loader import Mapping
from healthroam.registry.model import NormalizedRecord
from healthroam.registry.survivorship import FIELDS, LinkedRecord, golden_of_one, golden_record

_TEXT = st.one_of(st.none(), st.just(""), st.text(max_size=12))
_VALUE: st.SearchStrategy[Any] = st.one_of(_TEXT, st.just([]), st.integers(-2, 2), st.dates())


@given(
    st.integers(1, 10**12),
    st.fixed_dictionaries(
        {},
        optional={
            **{name: _VALUE for name in FIELDS},
            "identifiers": st.lists(st.text(max_size=8), max_size=4),
        },
    ),
)
def test_golden_of_one_is_golden_record_of_one(source_id: int, values: dict[str, Any]) -> None:
    linked = LinkedRecord(source_id, "POP", 3, datetime(2026, 11, 30, tzinfo=UTC), values)
    expected = golden_record([linked])
    found = golden_of_one(source_id, values)
    assert found == expected
    assert list(found) == list(expected)  # the same key order: the same JSON text
    assert list(found["provenance"]) == list(expected["provenance"])


_SETS = st.frozensets(st.text(max_size=6), max_size=4)


@given(
    st.builds(
        NormalizedRecord,
        name=_TEXT,
        latin_name=_TEXT,
        pinyin=_TEXT,
        pinyin_keys=_SETS,
        birth_date=_TEXT,
        sex=_TEXT,
        national_id=_TEXT,
        region=_TEXT,
        address=_TEXT,
        address_tokens=_SETS,
        phone=_TEXT,
        identifiers=_SETS,
        ethnicity=_TEXT,
        death_date=_TEXT,
        warnings=st.lists(st.text(max_size=6), max_size=3).map(tuple),
    )
)
def test_to_json_is_every_field_in_order(record: NormalizedRecord) -> None:
    general: dict[str, Any] = {f.name: getattr(record, f.name) for f in fields(NormalizedRecord)}
    for name in ("pinyin_keys", "address_tokens", "identifiers"):
        general[name] = sorted(general[name])
    general["warnings"] = list(record.warnings)
    found = to_json(record)
    assert list(found) == list(general)
    assert found == general
    assert from_json(found) == record


_CELL = st.one_of(
    st.none(),
    st.just(""),
    st.text(max_size=8),
    st.sampled_from(["01", "02", "03", "1980-02-29", "1981-02-29", "2001-13-01", "x" * 201]),
    st.integers(0, 3),
    st.dates(min_value=date(1900, 1, 1), max_value=date(2030, 1, 1)),
)


def _outcome(call: Any) -> Any:
    try:
        return call()
    except HealthroamError as error:
        return (type(error), str(error), error.expression)


@pytest.mark.parametrize("name", ["population", "insurer", "hospital"])
@given(data=st.data())
def test_record_maker_maps_as_record_does(name: str, data: st.DataObject) -> None:
    mapping = Mapping.load(name)
    columns = sorted(mapping.needed_columns())
    row = data.draw(st.fixed_dictionaries({}, optional={c: _CELL for c in columns}))
    make = mapping.record_maker("POP")
    assert _outcome(lambda: make(row)) == _outcome(lambda: mapping.record(row, "POP"))
