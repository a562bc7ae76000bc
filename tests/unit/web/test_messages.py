"""The clinician page's message catalogue is complete in both languages, and every label a
template uses exists."""

from __future__ import annotations

import re
from importlib.resources import files

from healthroam.web.messages import DEFAULT_LANGUAGE, LANGUAGES, MESSAGES, language
from healthroam.web.views import SECTIONS, sex_code, short_date


def test_both_languages_have_the_same_keys() -> None:
    assert set(MESSAGES) == set(LANGUAGES)
    assert set(MESSAGES["zh-CN"]) == set(MESSAGES["en"])
    assert all(text.strip() for texts in MESSAGES.values() for text in texts.values())


def test_every_label_used_in_a_template_exists() -> None:
    used: set[str] = set()
    for template in files("healthroam.web").joinpath("templates").iterdir():
        used |= set(re.findall(r't\["([a-z_.-]+)"\]', template.read_text(encoding="utf-8")))
    assert used, "templates use labels"
    assert used <= set(MESSAGES["en"])
    # Labels built from data: sections, sexes, access bases.
    for section in SECTIONS:
        assert f"summary.{section}" in MESSAGES["en"]
    for code in "0129":
        assert f"sex.{code}" in MESSAGES["zh-CN"]


def test_language_choice() -> None:
    assert language(None) == DEFAULT_LANGUAGE == "zh-CN"
    assert language("en") == language("EN-gb") == "en"
    assert language("zh") == language("xx") == "zh-CN"


def test_dates_and_sexes() -> None:
    assert short_date("2026-11-02T08:30:00+08:00") == "2026-11-02 08:30"
    assert short_date("2026-11-02") == "2026-11-02"
    assert short_date("2026-11-02T00:30:00Z") == "2026-11-02 08:30"  # Beijing time
    assert short_date("2026-11-02T23:30:00+00:00") == "2026-11-03 07:30"
    assert short_date("2026-11-02T08:30") == "2026-11-02 08:30"  # no zone: as written
    assert short_date(None) == ""
    assert sex_code("female") == "2"
    assert sex_code("1") == "1"
    assert sex_code("x") == "0"
