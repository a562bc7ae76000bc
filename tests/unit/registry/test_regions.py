from __future__ import annotations

import pytest

from healthroam.errors import NotFound
from healthroam.registry import regions


def test_names_by_code() -> None:
    assert regions.name_of("460106") == "龙华区"
    assert regions.name_of("469002") == "琼海市"
    assert regions.name_of("460400") == "儋州市"
    assert regions.name_of("999999") is None
    assert regions.get("460203").full_name == "三亚市吉阳区"
    assert regions.get("469030").full_name == "琼中黎族苗族自治县"


def test_historical_codes_are_known_but_not_current() -> None:
    assert regions.is_historical("469003")
    assert regions.get("469003").successor == "460400"
    assert not regions.is_historical("460400")
    assert "469003" not in regions.valid_codes()
    assert "469003" in regions.valid_codes(include_historical=True)
    assert [r.code for r in regions.predecessors("460400")] == ["469003"]


def test_unknown_code_raises_not_found() -> None:
    with pytest.raises(NotFound):
        regions.get("000000")


def test_weights_cover_current_codes_and_sum_to_one() -> None:
    weights = regions.weights()
    assert set(weights) == regions.valid_codes()
    assert sum(weights.values()) == pytest.approx(1.0)
    # Haikou's four districts hold a bit under 30% of Hainan's people (2020 census).
    haikou = sum(w for code, w in weights.items() if code.startswith("4601"))
    assert 0.25 < haikou < 0.32
