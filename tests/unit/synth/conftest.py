from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pytest

from healthroam.synth.population import PersonChunk, PopulationGenerator
from healthroam.synth.sources import SourceBatch, SourceDeriver
from healthroam.synth.writer import people_table

SAMPLE = 20_000


@dataclass
class Province:
    generator: PopulationGenerator
    deriver: SourceDeriver
    chunks: list[PersonChunk]
    batches: list[SourceBatch]
    people: pa.Table

    def records(self, source_prefix: str) -> pa.Table:
        return pa.concat_tables(
            [b.records for b in self.batches if b.source.startswith(source_prefix)]
        )

    def links(self, source_prefix: str = "") -> pa.Table:
        return pa.concat_tables(
            [b.links for b in self.batches if b.source.startswith(source_prefix)]
        )


def build(seed: int, n: int, chunk_size: int) -> Province:
    generator = PopulationGenerator(seed)
    deriver = SourceDeriver(generator)
    chunks, batches = [], []
    for index, start in enumerate(range(0, n, chunk_size)):
        chunk = generator.chunk(index, start, min(chunk_size, n - start))
        chunks.append(chunk)
        batches.extend(deriver.derive(index, chunk))
    people = pa.concat_tables([people_table(c, generator) for c in chunks])
    return Province(generator, deriver, chunks, batches, people)


@pytest.fixture(scope="session")
def province() -> Province:
    """20,000 people in chunks of 5,000, so cross-chunk state (ID counters) is exercised."""
    return build(seed=7, n=SAMPLE, chunk_size=5_000)
