"""The true population of the synthetic province, generated in vectorised chunks.

Each chunk is made with its own random generator (seeded from the run seed and the chunk
number), so a run is deterministic for a given seed and chunk size. The only state carried from
chunk to chunk is the table of ID-number sequence counters, which keeps every ID unique without
holding earlier people in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from healthroam.registry import idnumber, regions
from healthroam.synth import names, places

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

DEFAULT_AS_OF = date(2026, 11, 1)
DEFAULT_CHUNK_SIZE = 100_000
FOREIGN_SHARE = 0.002
NAMESAKE_SHARE = 0.001  # people given the name, sex and birth date of a stranger
MALE_SHARE = 0.512
# 15-digit numbers were issued until 1999, from age 16: people born before 1984 may have one.
LEGACY_ID_BORN_BEFORE = 1984

# China's 2020 census, people per 5-year age band (millions), 0-4 ... 95-99, 100+.
AGE_BANDS = np.array(
    [77.9, 90.3, 85.3, 72.7, 74.9, 91.9, 124.1, 99.0, 93.0, 114.2, 121.2,
     101.4, 73.4, 74.0, 49.6, 31.0, 20.4, 11.1, 3.9, 0.9, 0.04]
)  # fmt: skip

# GB 3304 nationality (民族) codes and names used here.
ETHNICITIES: dict[int, str] = {
    1: "汉族", 3: "回族", 4: "藏族", 5: "维吾尔族", 6: "苗族", 8: "壮族", 13: "瑶族", 15: "土家族",
    19: "黎族",
}  # fmt: skip
_ETHNIC_CODES = np.array(list(ETHNICITIES), dtype=np.int8)
# Share of Li (黎族) and Miao (苗族) residents by county (approximate, 2020 census).
_LI_MIAO: dict[str, tuple[float, float]] = {
    "469001": (0.60, 0.04), "469025": (0.63, 0.04), "469029": (0.60, 0.05),
    "469030": (0.55, 0.07), "469028": (0.50, 0.01), "469027": (0.40, 0.01),
    "469007": (0.38, 0.01), "469026": (0.33, 0.005), "460202": (0.30, 0.0),
    "460203": (0.20, 0.005), "460204": (0.18, 0.005), "460205": (0.25, 0.005),
    "469022": (0.02, 0.01), "469006": (0.04, 0.002), "469002": (0.01, 0.002),
    "460400": (0.01, 0.002),
}  # fmt: skip
# Small groups spread over the province: Zhuang, Hui (mostly Sanya), Tujia, Yao, Uyghur, Tibetan.
_OTHER = {8: 0.003, 3: 0.0008, 15: 0.001, 13: 0.0005, 5: 0.0003, 4: 0.0002}
_URBAN = {"460105": 0.7, "460106": 0.9, "460107": 0.5, "460108": 0.85, "460203": 0.8, "460204": 0.8}

_EPOCH = np.datetime64("1900-01-01", "D")
_SEQ_SLOTS = 499  # people per (region, birth date, sex) an ID can tell apart (odd or even 001-999)


@dataclass(frozen=True, slots=True)
class PersonChunk:
    """A slice of the true population; column arrays all have the same length.

    Dates are numpy ``datetime64[D]`` (``NaT`` for none); strings are pyarrow arrays (null for
    none). ``sex`` follows GB/T 2261.1 (1 male, 2 female); ``ethnicity`` is the GB 3304 code
    (0 for foreign nationals).
    """

    start: int  # global index of the first person
    person_id: pa.Array
    name: pa.Array
    sex: npt.NDArray[np.int8]
    birth_date: npt.NDArray[np.datetime64]
    death_date: npt.NDArray[np.datetime64]
    ethnicity: npt.NDArray[np.int8]
    nationality: pa.Array
    region: IntArray  # index into regions.current_regions()
    id_number: pa.Array  # 18-digit resident ID; null for foreign nationals
    id15: pa.Array  # the legacy 15-digit number, for people born before 1984
    passport: pa.Array  # foreign nationals only
    address: pa.Array
    phone: pa.Array
    landline: pa.Array
    namesake_of: pa.Array  # person_id whose name, sex and birth date this person shares

    def __len__(self) -> int:
        return len(self.sex)

    @property
    def foreign(self) -> BoolArray:
        return np.asarray(self.ethnicity == 0)


def _cumulative(weights: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    cum = np.cumsum(weights, axis=-1)
    return cum / cum[..., -1:]


def draw(rng: np.random.Generator, cum: npt.NDArray[np.float64], n: int) -> IntArray:
    """``n`` draws from the distribution with cumulative weights ``cum``."""
    idx = np.searchsorted(cum, rng.random(n), side="right")
    return np.minimum(idx, len(cum) - 1).astype(np.int64)


def draw_rows(rng: np.random.Generator, cum: npt.NDArray[np.float64], rows: IntArray) -> IntArray:
    """One draw per element of ``rows``, each from the distribution ``cum[row]``."""
    u = rng.random(len(rows))[:, None]
    return np.asarray(np.minimum((cum[rows] <= u).sum(axis=1), cum.shape[1] - 1), dtype=np.int64)


def take(table: pa.Array, idx: IntArray) -> pa.Array:
    return table.take(pa.array(idx, type=pa.int64()))


def digits(values: IntArray, width: int) -> pa.Array:
    """Non-negative integers as zero-padded decimal strings of ``width`` characters."""
    padded = pc.cast(pa.array(values + 10**width, type=pa.int64()), pa.string())
    return pc.utf8_slice_codeunits(padded, start=1)


def join(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


class Tables:
    """Lookup tables shared by every chunk (built once per run)."""

    def __init__(self) -> None:
        current = regions.current_regions()
        self.regions = current
        self.region_codes = np.array([int(r.code) for r in current], dtype=np.int64)
        self.region_code_strings = pa.array([r.code for r in current])
        self.region_cum = _cumulative(np.array([r.population for r in current], dtype=float))
        self.region_full = pa.array(["海南省" + r.full_name for r in current])
        all_regions = regions.all_regions()
        self.id_region_codes = np.array([int(r.code) for r in all_regions], dtype=np.int64)
        self.id_region_index = {r.code: i for i, r in enumerate(all_regions)}
        # (current index, historical index, year abolished) for legacy ID prefixes
        self.legacy: list[tuple[int, int, int]] = []
        for i, region in enumerate(current):
            for old in regions.predecessors(region.code):
                assert old.abolished is not None
                self.legacy.append((i, self.id_region_index[old.code], old.abolished))
        self.age_cum = _cumulative(AGE_BANDS)
        self.ethnic_cum = self._ethnic_matrix(current)
        self.urban = np.array([_URBAN.get(r.code, 0.35) for r in current])
        self._towns(current)
        self.roads = pa.array(places.ROADS)
        self.villages = pa.array([v + "村" for v in places.VILLAGES])
        self.mobile_prefixes = pa.array(places.MOBILE_PREFIXES)
        self._names()

    def _ethnic_matrix(self, current: tuple[regions.Region, ...]) -> npt.NDArray[np.float64]:
        codes = list(ETHNICITIES)
        matrix = np.zeros((len(current), len(codes)))
        for i, region in enumerate(current):
            li, miao = _LI_MIAO.get(region.code, (0.005, 0.0005))
            row = dict.fromkeys(codes, 0.0)
            row.update(_OTHER)
            if region.prefecture == "三亚市":
                row[3] = 0.008  # the Hui (回族) of Sanya's 凤凰镇 and 天涯镇
            row[19], row[6] = li, miao
            row[1] = 1.0 - sum(v for k, v in row.items() if k != 1)
            matrix[i] = [row[c] for c in codes]
        return _cumulative(matrix)

    def _towns(self, current: tuple[regions.Region, ...]) -> None:
        flat: list[str] = []
        start, count = [], []
        for region in current:
            towns = places.TOWNS[region.code]
            start.append(len(flat))
            count.append(len(towns))
            flat.extend(towns)
        self.towns = pa.array(flat)
        self.town_start = np.array(start, dtype=np.int64)
        self.town_count = np.array(count, dtype=np.int64)

    def _names(self) -> None:
        self.surnames = pa.array(names.SURNAMES)
        self.surname_cum = _cumulative(names.SURNAME_WEIGHTS)
        index = {s: i for i, s in enumerate(names.SURNAMES)}

        def mix(table: dict[str, int]) -> tuple[IntArray, npt.NDArray[np.float64]]:
            ids = np.array([index[s] for s in table], dtype=np.int64)
            return ids, _cumulative(np.array(list(table.values()), dtype=float))

        self.li = mix(names.LI_SURNAMES)
        self.miao = mix(names.MIAO_SURNAMES)
        self.zhuang = mix(names.ZHUANG_SURNAMES)
        chars = names.character_table()
        self.chars = pa.array([*chars, ""])  # the last entry is the empty second character
        position = {c: i for i, c in enumerate(chars)}

        def pool(text: str) -> tuple[IntArray, npt.NDArray[np.float64]]:
            ids = np.array([position[c] for c in text], dtype=np.int64)
            return ids, _cumulative(names.zipf_weights(len(text)))

        self.male_chars = pool(names.MALE_CHARS)
        self.female_chars = pool(names.FEMALE_CHARS)
        self.neutral_chars = pool(names.NEUTRAL_CHARS)
        self.uyghur_male = pa.array(names.UYGHUR_MALE)
        self.uyghur_female = pa.array(names.UYGHUR_FEMALE)
        self.tibetan = pa.array(names.TIBETAN_PARTS)
        self.foreign_given = pa.array(names.FOREIGN_GIVEN)
        self.foreign_family = pa.array(names.FOREIGN_FAMILY)
        self.nationalities = pa.array(names.NATIONALITIES)


class PopulationGenerator:
    """Makes the population chunk by chunk; keeps only the ID sequence counters between chunks."""

    def __init__(self, seed: int, *, as_of: date = DEFAULT_AS_OF) -> None:
        self.seed = seed
        self.as_of = np.datetime64(as_of, "D")
        self.t = Tables()
        days = int((self.as_of - _EPOCH).astype(np.int64)) + 1
        self._days = days
        self._counters = np.zeros(len(self.t.id_region_codes) * days * 2, dtype=np.int16)

    def rng(self, chunk: int, stream: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, chunk, stream])

    def chunk(self, index: int, start: int, n: int) -> PersonChunk:
        """People ``start`` .. ``start + n - 1``; call with increasing ``index``."""
        t = self.t
        rng = self.rng(index)
        foreign = rng.random(n) < FOREIGN_SHARE
        region = draw(rng, t.region_cum, n)
        sex = np.where(rng.random(n) < MALE_SHARE, 1, 2).astype(np.int8)
        birth = self._birth_dates(rng, n, foreign)
        ethnic_group = draw_rows(rng, t.ethnic_cum, region)
        ethnicity: npt.NDArray[np.int8] = np.where(foreign, 0, _ETHNIC_CODES[ethnic_group]).astype(
            np.int8
        )
        # Strangers who share name, sex and birth date: copy those from a random other person.
        pairs = round(n * NAMESAKE_SHARE)
        src = dst = np.zeros(0, dtype=np.int64)
        if pairs and n > 1:
            src = rng.integers(0, n, pairs)
            dst = (src + rng.integers(1, n, pairs)) % n
            keep = ~foreign[src] & ~foreign[dst] & (ethnicity[src] == ethnicity[dst])
            src, dst = src[keep], dst[keep]
            dst, first = np.unique(dst, return_index=True)  # each person copies at most once
            src = src[first]
            keep = ~np.isin(src, dst)  # and nobody copies from someone who copied
            src, dst = src[keep], dst[keep]
            sex[dst], birth[dst] = sex[src], birth[src]
        name = self._names(rng, n, sex, birth, ethnicity, foreign)
        if len(dst):
            name = pc.replace_with_mask(name, self._mask(n, dst), take(name, src))
        person_no = np.arange(start, start + n, dtype=np.int64)
        person_id = join("T", digits(person_no, 10))
        namesake = np.full(n, -1, dtype=np.int64)
        namesake[dst] = src + start
        namesake_of = pc.if_else(
            pa.array(namesake >= 0), join("T", digits(np.maximum(namesake, 0), 10)), None
        )
        id18, id15 = self._id_numbers(rng, region, birth, sex, foreign)
        passport = pc.if_else(
            pa.array(foreign),
            join(
                pa.array(np.array(list("EGKPT"))[rng.integers(0, 5, n)]),
                digits(rng.integers(0, 10**8, n), 8),
            ),
            None,
        )
        nationality = pc.if_else(
            pa.array(foreign),
            take(t.nationalities, rng.integers(0, len(t.nationalities), n)),
            "CHN",
        )
        age = (self.as_of - birth).astype(np.int64) / 365.25
        phone = pc.if_else(
            pa.array((age >= 12) & (rng.random(n) < 0.95)), self.mobiles(rng, n), None
        )
        landline = pc.if_else(pa.array(rng.random(n) < 0.1), self.landlines(rng, n), None)
        return PersonChunk(
            start=start,
            person_id=person_id,
            name=name,
            sex=sex,
            birth_date=birth,
            death_date=self._deaths(rng, birth, age),
            ethnicity=ethnicity,
            nationality=nationality,
            region=region,
            id_number=id18,
            id15=id15,
            passport=passport,
            address=self.addresses(rng, region),
            phone=phone,
            landline=landline,
            namesake_of=namesake_of,
        )

    @staticmethod
    def _mask(n: int, idx: IntArray) -> pa.Array:
        mask = np.zeros(n, dtype=bool)
        mask[idx] = True
        return pa.array(mask)

    def _birth_dates(
        self, rng: np.random.Generator, n: int, foreign: BoolArray
    ) -> npt.NDArray[np.datetime64]:
        band = draw(rng, self.t.age_cum, n)
        years = (band + rng.random(n)) * 5.0
        years = np.where(foreign, rng.uniform(18, 70, n), years)
        days = (years * 365.25).astype(np.int64)
        born = self.as_of - days.astype("timedelta64[D]")
        return np.maximum(born, np.datetime64("1901-01-01", "D"))

    def _deaths(
        self,
        rng: np.random.Generator,
        birth: npt.NDArray[np.datetime64],
        age: npt.NDArray[np.float64],
    ) -> npt.NDArray[np.datetime64]:
        # Gompertz mortality (about 6 per 1000 a year overall); deaths of the last three years.
        yearly = np.minimum(0.5, 0.00003 * np.exp(0.092 * age)) + np.where(age < 1, 0.005, 0.0)
        dead = rng.random(len(age)) < 3 * yearly
        window = np.minimum(age * 365.25, 3 * 365.25)
        before = (rng.random(len(age)) * window).astype(np.int64)
        death = self.as_of - before.astype("timedelta64[D]")
        return np.where(dead, np.maximum(death, birth), np.datetime64("NaT", "D"))

    def _names(
        self,
        rng: np.random.Generator,
        n: int,
        sex: npt.NDArray[np.int8],
        birth: npt.NDArray[np.datetime64],
        ethnicity: npt.NDArray[np.int8],
        foreign: BoolArray,
    ) -> pa.Array:
        t = self.t
        surname = draw(rng, t.surname_cum, n)
        for code, (ids, cum) in ((19, t.li), (6, t.miao), (8, t.zhuang)):
            mask = ethnicity == code
            surname[mask] = ids[draw(rng, cum, int(mask.sum()))]
        male = sex == 1
        year = birth.astype("datetime64[Y]").astype(np.int64) + 1970
        single = rng.random(n) < np.where((year >= 1960) & (year < 2000), 0.30, 0.12)
        given = []
        for position in range(2):
            chars = np.empty(n, dtype=np.int64)
            neutral = rng.random(n) < 0.25
            for mask, (ids, cum) in (
                (male & ~neutral, t.male_chars),
                (~male & ~neutral, t.female_chars),
                (neutral, t.neutral_chars),
            ):
                chars[mask] = ids[draw(rng, cum, int(mask.sum()))]
            if position == 1:
                chars[single] = len(t.chars) - 1
            given.append(chars)
        han = join(take(t.surnames, surname), take(t.chars, given[0]), take(t.chars, given[1]))
        uyghur = join(
            pc.if_else(
                pa.array(male),
                take(t.uyghur_male, rng.integers(0, len(t.uyghur_male), n)),
                take(t.uyghur_female, rng.integers(0, len(t.uyghur_female), n)),
            ),
            names.MIDDLE_DOT,
            take(t.uyghur_male, rng.integers(0, len(t.uyghur_male), n)),
        )
        tibetan = join(
            take(t.tibetan, rng.integers(0, len(t.tibetan), n)),
            take(t.tibetan, rng.integers(0, len(t.tibetan), n)),
        )
        latin = join(
            take(t.foreign_given, rng.integers(0, len(t.foreign_given), n)),
            " ",
            take(t.foreign_family, rng.integers(0, len(t.foreign_family), n)),
        )
        name = pc.if_else(pa.array(ethnicity == 5), uyghur, han)
        name = pc.if_else(pa.array(ethnicity == 4), tibetan, name)
        return pc.if_else(pa.array(foreign), latin, name)

    def _id_numbers(
        self,
        rng: np.random.Generator,
        region: IntArray,
        birth: npt.NDArray[np.datetime64],
        sex: npt.NDArray[np.int8],
        foreign: BoolArray,
    ) -> tuple[pa.Array, pa.Array]:
        t = self.t
        n = len(region)
        id_region = np.array([t.id_region_index[c] for c in t.region_code_strings.to_pylist()])[
            region
        ]
        year = birth.astype("datetime64[Y]").astype(np.int64) + 1970
        for current, old, abolished in t.legacy:
            # ID numbers keep the code of first registration: most people born before a code
            # was abolished still carry it.
            mask = (region == current) & (year < abolished) & (rng.random(n) < 0.8)
            id_region[mask] = old
        day = (birth - _EPOCH).astype(np.int64)
        key = (id_region * self._days + day) * 2 + (sex - 1)
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        first = np.r_[True, sorted_key[1:] != sorted_key[:-1]]
        group_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n) - group_start
        ordinal = self._counters[key].astype(np.int64) + rank
        ordinal[foreign] = 0
        if (ordinal >= _SEQ_SLOTS).any():
            raise OverflowError("too many people share a region, birth date and sex")
        np.add.at(self._counters, key[~foreign], 1)
        # Spread sequences over 001-999 by a per-key offset; odd for men, even for women.
        offset = (key * 2654435761) % _SEQ_SLOTS
        seq = np.where(
            sex == 1, 1 + 2 * ((offset + ordinal) % 500), 2 + 2 * ((offset + ordinal) % _SEQ_SLOTS)
        )
        ymd = _ymd(birth)
        body = t.id_region_codes[id_region] * 10**11 + ymd * 1000 + seq
        check = _check_characters(body)
        id18 = pc.if_else(
            pa.array(foreign), None, join(pc.cast(pa.array(body), pa.string()), check)
        )
        legacy = t.id_region_codes[id_region] * 10**9 + (ymd % 1_000_000) * 1000 + seq
        id15 = pc.if_else(
            pa.array(foreign | (year >= LEGACY_ID_BORN_BEFORE)),
            None,
            pc.cast(pa.array(legacy), pa.string()),
        )
        return id18, id15

    def addresses(self, rng: np.random.Generator, region: IntArray) -> pa.Array:
        """Addresses in the given regions: county, town or street, then road or village, 号."""
        t = self.t
        n = len(region)
        town = t.town_start[region] + (rng.random(n) * t.town_count[region]).astype(np.int64)
        number = pc.cast(pa.array(rng.zipf(1.6, n) % 300 + 1), pa.string())
        urban = rng.random(n) < t.urban[region]
        street = pc.if_else(
            pa.array(urban),
            take(t.roads, rng.integers(0, len(t.roads), n)),
            take(t.villages, rng.integers(0, len(t.villages), n)),
        )
        return join(take(t.region_full, region), take(t.towns, town), street, number, "号")

    def mobiles(self, rng: np.random.Generator, n: int) -> pa.Array:
        prefix = take(self.t.mobile_prefixes, rng.integers(0, len(self.t.mobile_prefixes), n))
        return join(prefix, digits(rng.integers(0, 10**8, n), 8))

    def landlines(self, rng: np.random.Generator, n: int) -> pa.Array:
        first = pa.array(np.array(list("3668"))[rng.integers(0, 4, n)])
        return join(places.LANDLINE_AREA + "-", first, digits(rng.integers(0, 10**7, n), 7))


def _ymd(dates: npt.NDArray[np.datetime64]) -> IntArray:
    years = dates.astype("datetime64[Y]")
    months = dates.astype("datetime64[M]")
    year = years.astype(np.int64) + 1970
    month = (months - years).astype(np.int64) + 1
    day = (dates - months).astype(np.int64) + 1
    return np.asarray(year * 10000 + month * 100 + day, dtype=np.int64)


def _check_characters(body: IntArray) -> pa.Array:
    total = np.zeros(len(body), dtype=np.int64)
    rest = body.copy()
    for weight in reversed(idnumber.WEIGHTS):
        total += (rest % 10) * weight
        rest //= 10
    table = pa.array(list(idnumber.CHECK_CHARACTERS))
    return take(table, total % 11)


def generate_population(
    n: int,
    seed: int,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    as_of: date = DEFAULT_AS_OF,
) -> Iterator[PersonChunk]:
    """The true population of ``n`` people, ``chunk_size`` at a time, deterministic per seed."""
    generator = PopulationGenerator(seed, as_of=as_of)
    for index, start in enumerate(range(0, n, chunk_size)):
        yield generator.chunk(index, start, min(chunk_size, n - start))
