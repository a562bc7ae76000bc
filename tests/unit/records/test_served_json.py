"""Stored resources are served by splicing their stored JSON text; the text must be exactly
what encoding the served dict would give (ids, types, URLs and instants included)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from healthroam.records.model import StoredResource, dumps, json_string
from healthroam.records.searchset import entry_json


@given(st.text())
def test_json_string_is_dumps_for_every_string(text: str) -> None:
    assert json_string(text) == dumps(text)


@pytest.mark.parametrize(
    "text", ["", "Patient/abc-1.2", 'a"b', "a\\b", "line\nbreak", "\x1f", "\x7f", "高血压"]
)
def test_json_string_escapes_what_json_escapes(text: str) -> None:
    assert json_string(text) == dumps(text)
    assert json.loads(json_string(text)) == text


@pytest.mark.parametrize(
    "meta",
    [None, {}, {"tag": [{"system": "urn:t", "code": "x"}], "source": "#HIS"}],
)
@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 30, 5, 30, 1, 123456, tzinfo=UTC),
        datetime(2026, 11, 30, 13, 30, 1, tzinfo=timezone(timedelta(hours=8))),
        datetime(2026, 11, 30, 5, 30, 1),  # naive, as SQLite returns
    ],
)
def test_spliced_text_is_the_encoded_served_resource(
    meta: dict[str, object] | None, moment: datetime
) -> None:
    body = {"status": "final", "code": {"text": '血糖 "空腹"'}, "valueQuantity": {"value": 5.6}}
    raw = StoredResource(
        "Observation", "obs-1.a", 3, moment, raw=dumps(body), meta=meta, institution_code="H1"
    )
    decoded = StoredResource(
        "Observation", "obs-1.a", 3, moment, {**body, **({"meta": meta} if meta else {})}
    )
    served = raw.served_json()
    assert json.loads(served) == decoded.with_meta() == raw.with_meta()
    # meta is spliced in first, encoded exactly as the encoder would write it
    assert served.startswith(
        '{"resourceType":"Observation","id":"obs-1.a","meta":' + dumps(raw.with_meta()["meta"])
    )
    entry = json.loads(entry_json(raw, "http://h/fhir", "match", None))
    assert entry["fullUrl"] == "http://h/fhir/Observation/obs-1.a"
    assert entry["resource"]["meta"]["versionId"] == "3"
