"""Full-text terms (``_text``/``_content``) and ``:above``/``:below`` rules (no database)."""

from __future__ import annotations

import sys
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from healthroam.errors import InvalidInput
from healthroam.records import fulltext, hierarchy
from healthroam.records.fulltext import Term
from healthroam.records.search_params import normalize

ICD10, ATC = hierarchy.ICD10, hierarchy.ATC


def test_terms_fold_and_cut_chinese_into_pairs() -> None:
    assert fulltext.terms("Café ＡＢＣ heart-rate x_y 8867-4") == [
        "cafe",
        "abc",
        "heart",
        "rate",
        "x",
        "y",
        "8867",
        "4",
    ]
    assert fulltext.terms("原发性高血压 I10") == [
        "原发",
        "发性",
        "性高",
        "高血",
        "血压",
        "压",
        "i10",
    ]
    assert fulltext.terms("维生素D") == ["维生", "生素", "素", "d"]
    assert fulltext.terms("压") == ["压"]
    assert len(fulltext.body("word " * (fulltext.MAX_TERMS + 5)).split()) == fulltext.MAX_TERMS


def test_query_phrases_match_the_stored_terms() -> None:
    assert fulltext.parse_query("高血压") == ((Term("高血"), Term("血压")),)
    assert fulltext.parse_query("压") == ((Term("压", prefix=True),),)
    assert fulltext.parse_query('hyper* "Blood pressure"') == (
        (Term("hyper", prefix=True),),
        (Term("blood"), Term("pressure")),
    )
    # a run followed by more text keeps its last character, as the stored terms do
    assert fulltext.parse_query("维生素D") == ((Term("维生"), Term("生素"), Term("素"), Term("d")),)
    assert fulltext.parse_query("!!! ''") == ()
    phrases = fulltext.parse_query("高血压 hyper*")
    assert fulltext.fts5_query([phrases]) == '("高血" + "血压" AND "hyper" *)'
    assert fulltext.tsquery([phrases]) == "(('高血' <-> '血压') & ('hyper':*))"
    assert fulltext.like_patterns(phrases) == ["% 高血 血压 %", "% hyper%"]


def test_narrative_keeps_inline_text_together() -> None:
    div = (
        '<div xmlns="http://www.w3.org/1999/xhtml"><p>患者有<b>高血压</b>病史</p>'
        "<table><tr><td>a</td><td>b</td></tr></table><!-- c -->x &lt; y</div>"
    )
    text = fulltext.narrative(div)
    assert "患者有高血压病史" in text
    assert "a  b" in text
    assert "x < y" in text
    assert "c" not in text.replace("x < y", "")


def test_index_bodies_take_text_not_links_or_payloads() -> None:
    resource = {
        "resourceType": "DocumentReference",
        "id": "secretid",
        "meta": {"profile": ["http://example.org/profile"]},
        "text": {"status": "generated", "div": "<div>眼科 <i>note</i></div>"},
        "subject": {"reference": "Patient/zzz", "display": "李雷"},
        "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4"}]},
        "content": [{"attachment": {"data": "QUJDREVGRw==", "url": "http://x/y"}}],
    }
    bodies = dict(fulltext.index_bodies(resource, domain=True))
    assert bodies["_text"] == "眼科 科 note"
    content = bodies["_content"].split()
    assert content[:3] == ["眼科", "科", "note"]  # the narrative's text, once, without tags
    assert {"李雷", "11488", "4"} <= set(content)
    assert not {"secretid", "zzz", "loinc", "qujdrefgrw", "profile", "generated"} & set(content)
    assert dict(fulltext.index_bodies({"resourceType": "Bundle", "type": "x"}, False)) == {
        "_content": "x"
    }
    assert fulltext.index_bodies({"resourceType": "Basic"}, True) == []


def test_icd10_and_atc_hierarchies() -> None:
    assert hierarchy.token_below(f"{ICD10}|E11", "code") == (ICD10, hierarchy.Below("E11", "E11."))
    assert hierarchy.token_below(f"{ICD10}|E11.9", "code")[1] == hierarchy.Below("E11.9", "E11.9")
    assert hierarchy.token_above(f"{ICD10}|E11.90x", "code") == (
        ICD10,
        ("E11", "E11.9", "E11.90", "E11.90x"),
    )
    assert hierarchy.token_above(f"{ATC}|A10BA02", "code")[1] == (
        "A",
        "A10",
        "A10B",
        "A10BA",
        "A10BA02",
    )
    assert hierarchy.token_below(f"{ATC}|A10", "code")[1] == hierarchy.Below("A10", "A10")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("E11", "needs the code system"),
        (f"{ICD10}|", "needs the code system"),
        ("http://loinc.org|8867-4", "no subsumption is known for http://loinc.org"),
        (f"{ICD10}|e11", "not an ICD-10 code"),
        (f"{ATC}|A1", "not an ATC code"),
    ],
)
def test_token_hierarchy_refusals_name_the_parameter(value: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        hierarchy.check_token(value, "code:below", "below")
    assert message in caught.value.detail
    assert caught.value.expression == "code:below"


def test_uri_hierarchy() -> None:
    base = "http://a.org/fhir"
    assert hierarchy.uri_below(base + "/", "url") == ((base, base + "/"), base + "/")
    assert hierarchy.uri_above(base + "/ValueSet/1", "url") == (
        base + "/ValueSet/1",
        "http://a.org",
        "http://a.org/",
        base,
        base + "/",
        base + "/ValueSet",
        base + "/ValueSet/",
        base + "/ValueSet/1/",
    )
    for bad in ("urn:oid:1.2.3", "ValueSet/1", "a.org/fhir"):
        with pytest.raises(InvalidInput):
            hierarchy.check_uri(bad, "url:below", "below")


def test_the_combining_marks_table_covers_every_code_point() -> None:
    every = {c for c in range(sys.maxunicode + 1) if unicodedata.combining(chr(c))}
    assert set(fulltext.DROP_COMBINING) == every
    assert max(every) < fulltext.COMBINING_LIMIT


def _fold_by_character(text: str) -> str:
    """The folding as first written: a Python test per character."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


@given(st.text())
def test_fold_drops_the_same_characters_as_a_test_per_character(text: str) -> None:
    assert fulltext.fold(text) == _fold_by_character(text)
    assert normalize(text) == " ".join(_fold_by_character(text).split())


def test_fold_examples() -> None:
    assert fulltext.fold("Crème Brûlée ＡＢＣ 高血压") == "creme brulee abc 高血压"
