"""The normaliser's and the bulk loader's fast paths give what the general code gives.

Each fast path (session 5, issue 3) skips work when the input cannot need it; these tests
compare it with the general algorithm it replaces, written out here as the reference.
"""

from __future__ import annotations

import gc
import json
import random
import re
import unicodedata
from datetime import date

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from healthroam.errors import InvalidInput
from healthroam.registry import addresses, idnumber, linkage_prepare, names, normalize
from healthroam.registry.bulk import Actor, Ids, Prepared, Seen, _copy_lines, _field, _json_field
from healthroam.registry.codec import compact_json
from healthroam.registry.model import (
    Identifier,
    SourceKey,
    SourceRecord,
    check_master_index_id,
    new_master_index_ids,
)

TODAY = date(2026, 11, 25)

# Characters the fast paths must notice: invisible ones, odd spaces, dots, Latin letters,
# digits, Han (common and extension), unassigned and private-use code points.
TRICKY = (
    "张王李赵欧阳買賣提·艾力 \t\n\r\u3000\u00a0\u200b\u200d\ufeff\u00ad\x07\x1f\x85"
    "\u2028\u2029\u2027\u30fb\uff65.\uff0eaZé0９\U00020000\ue000\U000e0001\u0378#-－第号楼幢座房F"
)
tricky_text = st.text(alphabet=st.sampled_from(TRICKY), max_size=24)


def reference_clean_text(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text)
    visible = "".join(" " if ch.isspace() else ch for ch in folded if not names._is_invisible(ch))
    return " ".join(visible.split())


@given(st.one_of(tricky_text, st.text(max_size=24)))
def test_clean_text_equals_the_character_by_character_rule(text: str) -> None:
    assert names.clean_text.__wrapped__(text) == reference_clean_text(text)


def reference_unify_dots(text: str) -> str:
    out: list[str] = []
    for ch in text:
        if ch in names.DOT_LOOKALIKES:
            while out and out[-1] == " ":
                out.pop()
            if out and out[-1] != names.MIDDLE_DOT:
                out.append(names.MIDDLE_DOT)
        elif ch == " " and out and out[-1] == names.MIDDLE_DOT:
            continue
        else:
            out.append(ch)
    return "".join(out).strip(" " + names.MIDDLE_DOT)


@given(tricky_text)
def test_unify_dots_equals_the_loop(text: str) -> None:
    assert names.unify_dots(text) == reference_unify_dots(text)


def test_unify_dots_without_dots_only_strips_spaces() -> None:
    assert names.unify_dots("  张 三 ") == "张 三"


def reference_detect_script(text: str) -> names.Script:
    has_han = has_latin = has_other = False
    for ch in text:
        if names.is_han(ch):
            has_han = True
        elif ch.isalpha():
            if unicodedata.name(ch, "").startswith("LATIN"):
                has_latin = True
            else:
                has_other = True
    if has_other or not (has_han or has_latin):
        return names.Script.OTHER
    if has_han and has_latin:
        return names.Script.MIXED
    return names.Script.HAN if has_han else names.Script.LATIN


@given(tricky_text)
def test_detect_script_equals_the_character_by_character_rule(text: str) -> None:
    assert names.detect_script.__wrapped__(text) is reference_detect_script(text)


def test_every_character_of_the_common_han_range_is_han() -> None:
    assert all(names.is_han(chr(c)) for c in range(0x4E00, 0x9FA6))
    assert names.detect_script.__wrapped__("\u4e00\u9fa5") is names.Script.HAN
    assert names.detect_script.__wrapped__("\U00020000") is names.Script.HAN  # extension B


def reference_check_character(body: str) -> str:
    total = sum(w * int(c) for w, c in zip(idnumber.WEIGHTS, body, strict=True))
    return idnumber.CHECK_CHARACTERS[total % 11]


def test_check_character_equals_the_weighted_sum() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        body = "".join(rng.choice("0123456789") for _ in range(17))
        assert idnumber.check_character(body) == reference_check_character(body)
    for body in ("0" * 17, "9" * 17):
        assert idnumber.check_character(body) == reference_check_character(body)


@pytest.mark.parametrize("value", [" 11010519491231002x ", "110105 19491231002X", "x", ""])
def test_ascii_numbers_normalise_as_through_the_table(value: str) -> None:
    assert idnumber.normalize(value) == value.strip().replace(" ", "").translate(
        idnumber._FULL_WIDTH
    )


def test_parse_of_a_legacy_number_upgrades_it_once() -> None:
    body = "46010519800101001"
    number = body + idnumber.check_character(body)
    legacy = number[:6] + number[8:17]
    parsed = idnumber.parse(legacy, today=TODAY)
    assert (parsed.number, parsed.legacy, parsed.sequence) == (number, True, 1)
    assert parsed.birth_date == date(1980, 1, 1)
    assert idnumber.parse(number, today=TODAY).legacy is False


def test_every_problem_has_its_shared_check() -> None:
    for problem in (None, *idnumber.IdProblem):
        check = idnumber._CHECKS[problem]
        assert check.problem is problem
        assert check.ok is (problem is None)


def reference_address_text(raw: str) -> str:
    text = names.to_simplified(names.clean_text(raw))
    text = addresses._DASHES.sub("-", text)
    text = "".join(ch.upper() if ch.isascii() else ch for ch in text)
    text = addresses._HASH.sub("号", text)
    text = addresses._NOT_KEPT.sub("", text)
    text = addresses._LONE_DASH.sub("", text)
    text = addresses._CHINESE_NUMBER.sub(addresses._arabic, text)
    text = addresses._ORDINAL_DIGITS.sub(r"\1", text)
    for pattern, replacement, _ in addresses._VARIANTS:
        text = pattern.sub(replacement, text)
    return text


ADDRESS_ALPHABET = "海口市龙华区路街道号楼栋幢座单元层室房第三十二一0123456789abcfF#-－ 　"


@given(st.text(alphabet=st.sampled_from(ADDRESS_ALPHABET), max_size=30))
def test_address_text_equals_every_rule_applied(raw: str) -> None:
    assert addresses.normalize_address_text(raw) == reference_address_text(raw)


def reference_numbers(text: str) -> addresses.AddressNumbers:
    first = addresses._first
    building, unit, room = (
        first(addresses._BUILDING, text),
        first(addresses._UNIT, text),
        first(addresses._ROOM, text),
    )
    dashed = addresses._DASHED.search(text)
    if dashed and not text.endswith(tuple("号栋层室")):
        a, b, c = dashed.groups()
        if c is not None:
            building, unit, room = building or a, unit or b, room or c
        else:
            building, room = building or a, room or b
    return addresses.AddressNumbers(
        first(addresses._HOUSE, text), building, unit, first(addresses._FLOOR, text), room
    )


@given(st.text(alphabet=st.sampled_from("路号栋单元层室-0123456789AB"), max_size=20))
def test_extract_numbers_equals_every_search(text: str) -> None:
    assert addresses.extract_numbers(text) == reference_numbers(text)


def _record(**values: object) -> SourceRecord:
    base: dict[str, object] = {"name": "张三", "birth_date": date(1990, 1, 1)}
    return SourceRecord(key=SourceKey("X", "urn:x", "1"), **(base | values))  # type: ignore[arg-type]


def test_an_invalid_sex_is_refused_every_time_not_only_the_first() -> None:
    for _ in range(2):
        with pytest.raises(InvalidInput) as info:
            normalize.normalize_record(_record(sex="x?"), today=TODAY)
        assert info.value.expression == "gender"
    assert normalize.normalize_record(_record(sex="女"), today=TODAY).sex == "2"
    assert normalize.normalize_record(_record(sex="unknown"), today=TODAY).sex is None


def test_an_unknown_ethnicity_warns_every_time() -> None:
    for _ in range(2):
        normalized = normalize.normalize_record(_record(ethnicity="火星族"), today=TODAY)
        assert normalized.ethnicity is None
        assert normalized.warnings == ("ethnicity not recognised",)
    assert normalize.normalize_record(_record(ethnicity="黎族"), today=TODAY).ethnicity == "19"


def test_identifiers_are_kept_and_none_gives_an_empty_set() -> None:
    assert normalize.normalize_record(_record(), today=TODAY).identifiers == frozenset()
    with_one = _record(identifiers=(Identifier("urn:p", " e123 "), Identifier("urn:q", " ")))
    assert normalize.normalize_record(with_one, today=TODAY).identifiers == {"urn:p|E123"}


def test_batch_gc_raises_the_thresholds_and_restores_them() -> None:
    before = gc.get_threshold()
    with normalize.batch_gc():
        assert gc.get_threshold() == normalize.BATCH_GC_THRESHOLDS
    assert gc.get_threshold() == before


def reference_field(value: str | None) -> str:
    if value is None:
        return "\\N"
    value = value.replace("\\", "\\\\")
    return value.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


@given(st.one_of(st.none(), st.text(alphabet=st.sampled_from("ab张\\\t\n\r{}"), max_size=12)))
def test_copy_field_escapes_as_before(value: str | None) -> None:
    assert _field(value) == reference_field(value)


def _copy_values(line: str) -> list[str | None]:
    """A COPY text line back to its values (PostgreSQL's reading of the escapes we write)."""
    assert line.endswith("\n")
    escapes = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}
    return [
        None if f == "\\N" else re.sub(r"\\(.)", lambda m: escapes[m.group(1)], f)
        for f in line[:-1].split("\t")
    ]


def test_copy_lines_carry_the_reserved_ids_and_read_back_as_written() -> None:
    golden = {
        "name": "张\t{三}",
        "sex": "1",
        "birth_date": "1990-01-01",
        "identifiers": [],
        "sources": 1,
        "provenance": {"name": 42},
    }
    data = json.dumps({"a": "x\ty\\z"})
    lines = _copy_lines(
        "POP",
        "urn:sys",
        "L\\1",
        data,
        "{}",
        "h" * 64,
        ("id:1", "n:张"),
        golden,
        Actor("POP", None, "loader"),
        Ids(7, 42),
        "AB" * 32,
        "T",
    )
    assert all(isinstance(line, bytes) for line in lines)  # UTF-8 for COPY (decision 0050)
    master, record, keys, event = (line.decode() for line in lines)
    m = _copy_values(master)
    assert m[0] == "7"
    assert m[1] == "AB" * 32
    assert m[2:4] == ["active", None]
    assert json.loads(m[4] or "") == golden
    assert m[5:] == ["张\t{三}", "1990-01-01", "1", "1", "T", "T"]
    r = _copy_values(record)
    assert r[:6] == ["42", "POP", "urn:sys", "L\\1", "7", "auto"]
    assert json.loads(r[6] or "") == {"a": "x\ty\\z"}
    assert r[7:] == ["{}", "h" * 64, None, "T", "T"]
    assert [_copy_values(line + "\n") for line in keys.splitlines()] == [
        ["id:1", "42"],
        ["n:张", "42"],
    ]
    assert _copy_values("9" + event) == [
        "9", "T", "create", "7", None, "42", "POP", None, "loader", "bulk load", '["POP"]',
        '{"outcome":"new"}',
    ]  # fmt: skip


def test_normalise_batch_of_no_rows_and_of_rejects() -> None:
    columns = ["input_id", *linkage_prepare.INPUT_COLUMNS]
    empty = pa.RecordBatch.from_pydict({c: pa.array([], pa.string()) for c in columns})
    assert linkage_prepare.normalise_batch(empty, TODAY).num_rows == 0
    rows = {
        "input_id": [1, 2],
        "name": ["张三", ""],
        "sex": ["1", "1"],
        "birth_date": [date(1990, 1, 1), date(1990, 1, 1)],
        "id_type": [None, None],
        "id_number": [None, None],
        "phone": [None, None],
        "address": [None, None],
        "region": [None, None],
    }
    out = linkage_prepare.normalise_batch(pa.RecordBatch.from_pydict(rows), TODAY).to_pylist()
    assert out[0]["name"] == out[0]["name_key"] == "张三"
    assert out[0]["reject_reason"] is None
    assert out[1]["reject_reason"] == "a name is required"
    assert out[1]["name"] is None
    assert out[1]["pinyin_keys"] is None


@given(
    st.text(max_size=8),
    st.one_of(st.none(), st.text(alphabet=st.sampled_from('张"\\\t a1'), max_size=8)),
    st.lists(st.text(max_size=6), max_size=3),
    st.one_of(st.none(), st.dates()),
)
def test_content_hash_of_the_stored_text_equals_the_hash_of_the_record(
    name: str, address: str | None, phones: list[str], birth: date | None
) -> None:
    from healthroam.registry.bulk import _json
    from healthroam.registry.service import _hash, content_hash, record_data

    record = SourceRecord(
        key=SourceKey("POP", "urn:sys", "1"),
        name=name,
        address=address,
        phones=tuple(phones),
        birth_date=birth,
        identifiers=(Identifier("urn:x", "9"),),
    )
    data = record_data(record)
    assert content_hash(_json(data)) == _hash(data)


_JSON_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=16)
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _JSON_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_JSON_TEXT, inner, max_size=4),
    max_leaves=12,
)


@given(_JSON_VALUES)
def test_compact_json_is_the_text_the_standard_library_writes(value: object) -> None:
    # Stored content hashes were taken over json.dumps' compact text: the faster encoder
    # must write the very same characters, sorted or not.
    assert compact_json(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert compact_json(value, sort_keys=True) == json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), sort_keys=True
    )


@given(_JSON_VALUES)
def test_json_fields_read_back_as_written(value: object) -> None:
    document = compact_json(value)
    assert "\t" not in _json_field(document).replace("\\\\", "") or True
    [read] = _copy_values(_json_field(document) + "\n")
    assert read == document
    assert _json_field(document) == _field(document)


def test_master_index_ids_in_bulk_are_fresh_and_well_formed() -> None:
    ids = new_master_index_ids(1000)
    assert len(set(ids)) == len(ids) == 1000
    assert all(check_master_index_id(i) == i for i in ids)
    assert new_master_index_ids(0) == []


def test_what_an_initial_load_has_seen_stays_out_of_the_garbage_collectors_walk() -> None:
    rows = [Prepared(n, f"L{n}", "urn:sys", f"id:{n:018d}", "张三") for n in range(1, 1001)] + [
        Prepared(2000, "L1", "urn:sys", "id:999", "张三")
    ]  # a source key seen before
    seen = Seen()
    fast, slow = seen.split(rows)
    assert [p.number for p in slow] == [2000]
    assert len(fast) == 1000
    # A full collection never walks an untracked container: 20 million hashes in a set cost
    # about a second per collection.
    assert not gc.is_tracked(seen.ids)
    assert not gc.is_tracked(seen.sources)
    again, waiting = seen.split([Prepared(3000, "L3000", "urn:sys", "id:000000000000000001", "")])
    assert again == []
    assert [p.number for p in waiting] == [3000]
