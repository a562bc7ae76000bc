"""Source records derived from the true population: the population base (人口库), the
hospitals and the insurer (医保), each with its own keys and its own errors.

For every chunk of people, :class:`SourceDeriver` returns one record table per source and one
ground-truth table linking each record key to the true person id and the errors it carries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from healthroam.synth import corrupt, names
from healthroam.synth.corrupt import Error, ErrorRates
from healthroam.synth.places import Institution, institutions
from healthroam.synth.population import (
    ETHNICITIES,
    IntArray,
    PersonChunk,
    PopulationGenerator,
    digits,
    draw,
    draw_rows,
    join,
    take,
)

POPULATION = "population"
INSURER = "insurer"
ID_TYPE_RESIDENT = "01"  # 居民身份证 (WS 364 identity document type code)
ID_TYPE_PASSPORT = "03"  # 护照
INSURED_SHARE = 0.96
FOREIGN_INSURED_SHARE = 0.2
EMPLOYEE_SCHEME_SHARE = 0.35  # 城镇职工 among working-age insured; the rest 城乡居民

LINK_SCHEMA = pa.schema(
    [
        ("record_key", pa.string()),
        ("source", pa.string()),
        ("person_id", pa.string()),
        ("error_flags", pa.int32()),
        ("errors", pa.string()),
    ]
)


def hospital_source(institution: Institution) -> str:
    return f"hospital-{institution.code}"


@dataclass(frozen=True, slots=True)
class SourceBatch:
    """One chunk of one source: its records and the ground truth for them."""

    source: str
    records: pa.Table
    links: pa.Table


@dataclass(slots=True)
class _Fields:
    """The identifying fields of a selection of people, as one source recorded them."""

    person: IntArray  # index into the chunk
    name: pa.Array
    sex: npt.NDArray[np.int8]
    birth: npt.NDArray[np.datetime64]
    id_type: pa.Array
    id_number: pa.Array
    phone: pa.Array
    address: pa.Array
    flags: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def _affine(values: IntArray, multiplier: int, offset: int, modulus: int) -> IntArray:
    """A bijection on 0 .. modulus-1 (multiplier coprime to modulus): opaque, unique keys."""
    return np.asarray((values * multiplier + offset) % modulus, dtype=np.int64)


def _dates(values: npt.NDArray[np.datetime64]) -> pa.Array:
    return pa.array(values.astype("datetime64[D]"), type=pa.date32(), from_pandas=True)


class SourceDeriver:
    """Turns population chunks into source records; keeps per-hospital record counters."""

    def __init__(
        self,
        generator: PopulationGenerator,
        *,
        hospitals: tuple[Institution, ...] | None = None,
        population_rates: ErrorRates = corrupt.POPULATION_RATES,
        hospital_rates: ErrorRates = corrupt.HOSPITAL_RATES,
        insurer_rates: ErrorRates = corrupt.INSURER_RATES,
    ) -> None:
        self.generator = generator
        self.hospitals = hospitals if hospitals is not None else institutions()
        self.population_rates = population_rates
        self.hospital_rates = hospital_rates
        self.insurer_rates = insurer_rates
        self._mrn_next = {h.code: 0 for h in self.hospitals}
        self._hospital_cum = self._hospital_choice()
        self._ethnicity_names = pa.array([ETHNICITIES.get(c, "") for c in range(100)])

    def _hospital_choice(self) -> npt.NDArray[np.float64]:
        current = self.generator.t.regions
        weights = np.zeros((len(current), len(self.hospitals)))
        for i, region in enumerate(current):
            for j, h in enumerate(self.hospitals):
                same = h.region_code == region.code
                if h.level == 3:
                    near = h.region_code[:4] == region.code[:4] and region.code[:2] != "69"
                    weights[i, j] = 1.0 + 30.0 * same + 8.0 * near
                elif h.level == 2:
                    weights[i, j] = 40.0 if same else 0.3
                else:
                    weights[i, j] = 25.0 if same else 0.0
        cum = np.cumsum(weights, axis=1)
        return np.asarray(cum / cum[:, -1:])

    def derive(self, index: int, chunk: PersonChunk) -> list[SourceBatch]:
        """Every source's records for this chunk (call with increasing ``index``)."""
        rng = self.generator.rng(index, stream=1)
        batches = [self._population(rng, chunk), self._insurer(rng, chunk)]
        batches.extend(self._hospitals(rng, chunk))
        return batches

    # -- selection and errors ---------------------------------------------------------------

    def _fields(self, chunk: PersonChunk, person: IntArray) -> _Fields:
        foreign = chunk.foreign[person]
        ident = pc.coalesce(take(chunk.id_number, person), take(chunk.passport, person))
        return _Fields(
            person=person,
            name=take(chunk.name, person),
            sex=chunk.sex[person],
            birth=chunk.birth_date[person],
            id_type=pc.if_else(pa.array(foreign), ID_TYPE_PASSPORT, ID_TYPE_RESIDENT),
            id_number=ident,
            phone=take(chunk.phone, person),
            address=take(chunk.address, person),
            flags=np.zeros(len(person), dtype=np.int64),
        )

    def _apply(
        self, rng: np.random.Generator, chunk: PersonChunk, f: _Fields, rates: ErrorRates
    ) -> None:
        m = len(f.person)
        rate = dict(rates.items())

        def chance(error: Error) -> npt.NDArray[np.bool_]:
            return np.asarray(rng.random(m) < rate[error])

        def rewrite(error: Error, values: pa.Array, mask: npt.NDArray[np.bool_], fn) -> pa.Array:  # type: ignore[no-untyped-def]
            old = values.filter(pa.array(mask)).to_pylist()
            new = [None if v is None else fn(v) for v in old]
            changed = np.zeros(m, dtype=bool)
            changed[np.flatnonzero(mask)] = [a != b for a, b in zip(old, new, strict=True)]
            f.flags[changed] |= int(error)
            return corrupt.replace(values, mask, new)

        f.name = rewrite(Error.TYPO, f.name, chance(Error.TYPO), lambda s: corrupt.typo(s, rng))
        f.name = rewrite(
            Error.HOMOPHONE, f.name, chance(Error.HOMOPHONE), lambda s: corrupt.homophone(s, rng)
        )
        mask = chance(Error.BIRTH_DATE_TRANSPOSED)
        if mask.any():
            old = f.birth[mask].astype(object)
            latest = self.generator.as_of.astype(date)
            new = np.array(
                [corrupt.transpose_date(d, rng, latest) for d in old], dtype="datetime64[D]"
            )
            changed = np.zeros(m, dtype=bool)
            changed[np.flatnonzero(mask)] = new != f.birth[mask]
            f.birth = f.birth.copy()
            f.birth[mask] = new
            f.flags[changed] |= int(Error.BIRTH_DATE_TRANSPOSED)
        id15 = take(chunk.id15, f.person)
        mask = chance(Error.ID_LEGACY15) & np.asarray(id15.is_valid())
        f.id_number = corrupt.replace(f.id_number, mask, id15.filter(pa.array(mask)))
        f.flags[mask] |= int(Error.ID_LEGACY15)
        has_id = np.asarray(f.id_number.is_valid())
        f.id_number = rewrite(
            Error.ID_MISTYPED,
            f.id_number,
            chance(Error.ID_MISTYPED) & has_id,
            lambda s: corrupt.mistype_id(s, rng),
        )
        mask = chance(Error.ID_MISSING) & has_id
        if mask.any():
            keep = pa.array(~mask)
            f.id_number = pc.if_else(keep, f.id_number, None)
            f.id_type = pc.if_else(keep, f.id_type, None)
            f.flags[mask] &= ~int(Error.ID_MISTYPED | Error.ID_LEGACY15)
            f.flags[mask] |= int(Error.ID_MISSING)
        mask = chance(Error.ADDRESS_MOVED)
        if mask.any():
            region = chunk.region[f.person[mask]]
            moved = rng.random(len(region)) < 0.5
            region = np.where(moved, draw(rng, self.generator.t.region_cum, len(region)), region)
            f.address = corrupt.replace(f.address, mask, self.generator.addresses(rng, region))
            f.flags[mask] |= int(Error.ADDRESS_MOVED)
        mask = chance(Error.PHONE_CHANGED) & np.asarray(f.phone.is_valid())
        f.phone = corrupt.replace(f.phone, mask, self.generator.mobiles(rng, int(mask.sum())))
        f.flags[mask] |= int(Error.PHONE_CHANGED)
        mask = chance(Error.TRADITIONAL)
        f.name = rewrite(Error.TRADITIONAL, f.name, mask, names.to_traditional)
        traditional = names.to_traditional
        f.address = corrupt.replace(
            f.address, mask, [traditional(a) for a in f.address.filter(pa.array(mask)).to_pylist()]
        )
        f.flags[mask] |= int(Error.TRADITIONAL)  # the address always changes script

    def _links(self, source: str, keys: pa.Array, chunk: PersonChunk, f: _Fields) -> pa.Table:
        unique, inverse = np.unique(f.flags, return_inverse=True)
        labels = pa.array([corrupt.error_names(int(u)) for u in unique])
        return pa.table(
            [
                keys,
                pa.array(np.full(len(keys), source)),
                take(chunk.person_id, f.person),
                pa.array(f.flags.astype(np.int32)),
                take(labels, inverse.astype(np.int64)),
            ],
            schema=LINK_SCHEMA,
        )

    # -- sources ----------------------------------------------------------------------------

    def _population(self, rng: np.random.Generator, chunk: PersonChunk) -> SourceBatch:
        person = np.flatnonzero(~chunk.foreign)
        f = self._fields(chunk, person)
        self._apply(rng, chunk, f, self.population_rates)
        global_no = person + chunk.start
        keys = join("POP-", digits(_affine(global_no, 3_141_592_653, 2_718_281_828, 10**10), 10))
        ethnicity = chunk.ethnicity[person].astype(np.int64)
        records = pa.table(
            {
                "record_key": keys,
                "name": f.name,
                "sex": pa.array(f.sex),
                "birth_date": _dates(f.birth),
                "ethnicity_code": digits(ethnicity, 2),
                "ethnicity": take(self._ethnicity_names, ethnicity),
                "id_number": f.id_number,
                "region_code": take(self.generator.t.region_code_strings, chunk.region[person]),
                "address": f.address,
                "phone": f.phone,
                "death_date": _dates(chunk.death_date[person]),
            }
        )
        return SourceBatch(POPULATION, records, self._links(POPULATION, keys, chunk, f))

    def _insurer(self, rng: np.random.Generator, chunk: PersonChunk) -> SourceBatch:
        n = len(chunk)
        share = np.where(chunk.foreign, FOREIGN_INSURED_SHARE, INSURED_SHARE)
        person = np.flatnonzero(rng.random(n) < share)
        f = self._fields(chunk, person)
        self._apply(rng, chunk, f, self.insurer_rates)
        number = join(
            "46", digits(_affine(person + chunk.start, 2_654_435_761, 1_013_904_223, 10**10), 10)
        )
        age = (self.generator.as_of - chunk.birth_date[person]).astype(np.int64) / 365.25
        employee = (age >= 18) & (age < 65) & (rng.random(len(person)) < EMPLOYEE_SCHEME_SHARE)
        dead = ~np.isnat(chunk.death_date[person])
        records = pa.table(
            {
                "record_key": join("INS-", number),
                "insurance_number": number,
                "name": f.name,
                "sex": pa.array(f.sex),
                "birth_date": _dates(f.birth),
                "id_type": f.id_type,
                "id_number": f.id_number,
                "phone": f.phone,
                "address": f.address,
                "region_code": take(self.generator.t.region_code_strings, chunk.region[person]),
                "scheme": pc.if_else(pa.array(employee), "employee", "resident"),
                "status": pc.if_else(pa.array(dead), "terminated", "active"),
            }
        )
        links = self._links(INSURER, records["record_key"].combine_chunks(), chunk, f)
        return SourceBatch(INSURER, records, links)

    def _hospitals(self, rng: np.random.Generator, chunk: PersonChunk) -> list[SourceBatch]:
        n = len(chunk)
        age = (self.generator.as_of - chunk.birth_date).astype(np.int64) / 365.25
        visits = np.where(
            age >= 60,
            draw(rng, np.cumsum([0.15, 0.40, 0.28, 0.17]), n),
            np.where(
                age < 6,
                draw(rng, np.cumsum([0.20, 0.45, 0.25, 0.10]), n),
                draw(rng, np.cumsum([0.35, 0.40, 0.17, 0.08]), n),
            ),
        )
        pairs = []
        for visit in range(3):
            person = np.flatnonzero(visits > visit)
            hospital = draw_rows(rng, self._hospital_cum, chunk.region[person])
            pairs.append(hospital * n + person)
        pair = np.unique(np.concatenate(pairs))
        hospital_of, person_of = np.divmod(pair, n)
        batches = []
        for j, h in enumerate(self.hospitals):
            person = person_of[hospital_of == j]
            duplicate = rng.random(len(person)) < self.hospital_rates.duplicate
            person = np.concatenate([person, person[duplicate]])
            order = rng.permutation(len(person))
            person = person[order]
            is_duplicate = (np.arange(len(person)) >= len(person) - duplicate.sum())[order]
            f = self._fields(chunk, person)
            f.flags[is_duplicate] |= int(Error.DUPLICATE)
            self._apply(rng, chunk, f, self.hospital_rates)
            counter = np.arange(len(person), dtype=np.int64) + self._mrn_next[h.code]
            self._mrn_next[h.code] += len(person)
            mrn = digits(_affine(counter, 48_271 + 2 * j, 7_654_321 * (j + 1), 10**8), 8)
            source = hospital_source(h)
            keys = join(h.code + "-", mrn)
            records = pa.table(
                {
                    "record_key": keys,
                    "hospital_code": pa.array(np.full(len(person), h.code)),
                    "mrn": mrn,
                    "name": f.name,
                    "sex": pa.array(f.sex),
                    "birth_date": _dates(f.birth),
                    "id_type": f.id_type,
                    "id_number": f.id_number,
                    "phone": f.phone,
                    "address": f.address,
                    "registered_on": _dates(self._registered(rng, chunk, person)),
                }
            )
            batches.append(SourceBatch(source, records, self._links(source, keys, chunk, f)))
        return batches

    def _registered(
        self, rng: np.random.Generator, chunk: PersonChunk, person: IntArray
    ) -> npt.NDArray[np.datetime64]:
        start = np.maximum(chunk.birth_date[person], np.datetime64("2005-01-01", "D"))
        end = np.where(
            np.isnat(chunk.death_date[person]), self.generator.as_of, chunk.death_date[person]
        )
        span = np.maximum((end - start).astype(np.int64), 0)
        days = (rng.random(len(person)) * span).astype(np.int64).astype("timedelta64[D]")
        return np.asarray(start + days, dtype="datetime64[D]")
