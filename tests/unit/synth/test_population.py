from __future__ import annotations

from collections import Counter
from datetime import date

import numpy as np
import pyarrow.compute as pc

from healthroam.registry import idnumber, regions
from healthroam.registry.idnumber import Sex
from healthroam.synth.names import MIDDLE_DOT
from healthroam.synth.population import AGE_BANDS, DEFAULT_AS_OF, generate_population

from .conftest import Province, build

AS_OF = DEFAULT_AS_OF


def test_every_id_validates_and_encodes_the_persons_birth_date_and_sex(
    province: Province,
) -> None:
    rows = province.people.select(["id_number", "birth_date", "sex"]).to_pylist()
    citizens = [r for r in rows if r["id_number"] is not None]
    assert len(citizens) > 0.99 * len(rows)
    for row in citizens:
        parsed = idnumber.parse(row["id_number"], today=AS_OF, region_known=regions.is_known)
        assert parsed.birth_date == row["birth_date"]
        assert parsed.sex == Sex(row["sex"])


def test_id_numbers_are_unique_across_chunks(province: Province) -> None:
    ids = province.people["id_number"].drop_null()
    assert len(pc.unique(ids)) == len(ids)


def test_some_ids_carry_historical_region_codes(province: Province) -> None:
    prefixes = Counter(s[:6] for s in province.people["id_number"].drop_null().to_pylist())
    historical = {code for code in prefixes if regions.is_historical(code)}
    assert {"469003", "460104"} <= historical
    # but nobody is *living* in an abolished region
    assert not any(regions.is_historical(c) for c in province.people["region_code"].to_pylist())


def test_legacy_15_digit_ids_convert_to_the_persons_18_digit_id(province: Province) -> None:
    rows = province.people.select(["id_number", "id15", "birth_date"]).to_pylist()
    legacy = [r for r in rows if r["id15"] is not None]
    assert len(legacy) > 0.3 * len(rows)
    for row in legacy:
        assert len(row["id15"]) == 15
        assert idnumber.to_18(row["id15"], today=AS_OF) == row["id_number"]
        assert row["birth_date"].year < 1984
    young = [r for r in rows if r["birth_date"].year >= 1984]
    assert all(r["id15"] is None for r in young)


def test_top_five_surnames_carry_about_30_percent_of_han_people(province: Province) -> None:
    han = province.people.filter(pc.equal(province.people["ethnicity_code"], "01"))
    surnames = Counter(name[0] for name in han["name"].to_pylist())
    share = sum(surnames[s] for s in "王李张刘陈") / han.num_rows
    assert 0.27 < share < 0.34
    assert {s for s, _ in surnames.most_common(5)} <= set("王李张刘陈杨")


def test_given_names_have_one_or_two_characters_and_gendered_tendencies(
    province: Province,
) -> None:
    han = province.people.filter(pc.equal(province.people["ethnicity_code"], "01"))
    lengths = Counter(len(n) for n in han["name"].to_pylist())
    assert set(lengths) <= {2, 3, 4}  # a compound surname makes four
    assert 0.1 < lengths[2] / han.num_rows < 0.4
    rows = han.select(["name", "sex"]).to_pylist()
    fang = Counter(r["sex"] for r in rows if "芳" in r["name"][1:])
    assert fang[2] > 3 * fang[1]
    wei = Counter(r["sex"] for r in rows if "强" in r["name"][1:])
    assert wei[1] > 3 * wei[2]


def test_hainan_minorities_and_foreign_residents(province: Province) -> None:
    people = province.people
    codes = Counter(people["ethnicity_code"].to_pylist())
    assert 0.08 < codes["19"] / people.num_rows < 0.25  # 黎族, about 15% in Hainan
    assert codes["06"] > 0  # 苗族
    assert people.filter(pc.equal(people["ethnicity_code"], "19"))["ethnicity"][0].as_py() == "黎族"
    li = Counter(
        n[0] for n in people.filter(pc.equal(people["ethnicity_code"], "19"))["name"].to_pylist()
    )
    assert li.most_common(1)[0][0] == "符"
    uyghur = people.filter(pc.equal(people["ethnicity_code"], "05"))["name"].to_pylist()
    assert uyghur
    assert all(MIDDLE_DOT in n for n in uyghur)
    foreign = people.filter(pc.not_equal(people["nationality"], "CHN"))
    assert foreign.num_rows > 10
    assert foreign["id_number"].null_count == foreign.num_rows
    assert foreign["passport_number"].null_count == 0
    assert all(n.isascii() for n in foreign["name"].to_pylist())


def test_age_pyramid_follows_the_census(province: Province) -> None:
    born = np.array(province.people["birth_date"].to_pylist(), dtype="datetime64[D]")
    age = (np.datetime64(AS_OF) - born).astype(np.int64) / 365.25
    elderly = float((age >= 65).mean())
    expected = AGE_BANDS[13:].sum() / AGE_BANDS.sum()
    assert abs(elderly - expected) < 0.02
    assert float((age < 0).mean()) == 0.0


def test_deaths_are_a_few_percent_and_after_birth(province: Province) -> None:
    rows = province.people.select(["birth_date", "death_date"]).to_pylist()
    dead = [r for r in rows if r["death_date"] is not None]
    assert 0.005 < len(dead) / len(rows) < 0.04
    assert all(r["birth_date"] <= r["death_date"] <= AS_OF for r in dead)


def test_strangers_share_name_sex_and_birth_date_but_are_distinct(province: Province) -> None:
    people = province.people
    by_id = {r["person_id"]: r for r in people.to_pylist()}
    namesakes = [r for r in by_id.values() if r["namesake_of"] is not None]
    assert len(namesakes) >= 10
    for row in namesakes:
        other = by_id[row["namesake_of"]]
        assert other["person_id"] != row["person_id"]
        assert (other["name"], other["sex"], other["birth_date"]) == (
            row["name"],
            row["sex"],
            row["birth_date"],
        )
        assert other["id_number"] != row["id_number"]


def test_phones_and_addresses_look_chinese(province: Province) -> None:
    phones = province.people["phone"].drop_null().to_pylist()
    assert all(len(p) == 11 and p[0] == "1" and p[1] in "3456789" for p in phones)
    landlines = province.people["landline"].drop_null().to_pylist()
    assert landlines
    assert all(p.startswith("0898-") and len(p) == 13 for p in landlines)
    rows = province.people.select(["address", "region_code"]).to_pylist()
    for row in rows[:2000]:
        assert row["address"].startswith("海南省")
        assert row["address"].endswith("号")
        assert regions.get(row["region_code"]).name in row["address"]


def test_same_seed_same_people_other_seed_other_people() -> None:
    first = build(seed=11, n=3000, chunk_size=1000).people
    again = build(seed=11, n=3000, chunk_size=1000).people
    other = build(seed=12, n=3000, chunk_size=1000).people
    assert first.equals(again)
    assert not first.equals(other)


def test_generate_population_yields_chunks_covering_n() -> None:
    chunks = list(generate_population(2500, seed=1, chunk_size=1000))
    assert [len(c) for c in chunks] == [1000, 1000, 500]
    assert [c.start for c in chunks] == [0, 1000, 2000]
    assert chunks[-1].person_id[-1].as_py() == "T0000002499"
    assert date(1900, 1, 1) < chunks[0].birth_date.min().astype(date)
