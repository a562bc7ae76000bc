"""Search conditions take pooled aliases of the index tables (decision 0051): distinct within
one condition (a nested EXISTS sharing its outer one's alias would be correlated to it), the
same objects again for the next condition."""

from __future__ import annotations

import re

from sqlalchemy.dialects import postgresql

from healthroam.db.schema import fhir_resources
from healthroam.db.tables_records import fhir_idx_reference
from healthroam.records.repository import _Compiler
from healthroam.records.search import parse_search


def test_aliases_are_distinct_within_a_condition_and_reused_by_the_next() -> None:
    first, second = _Compiler("http://x/fhir"), _Compiler("http://x/fhir")
    taken = [first.alias(fhir_idx_reference) for _ in range(3)]
    assert len({id(a) for a in taken}) == 3
    assert [id(second.alias(fhir_idx_reference)) for _ in range(3)] == [id(a) for a in taken]


def test_a_chain_on_a_reference_gets_two_reference_aliases() -> None:
    request = parse_search("Observation", [("subject:Patient.organization", "Organization/o1")])
    for _ in range(2):  # the second time from the pool
        compiler = _Compiler("http://x/fhir", postgres=True, text_engine="postgresql")
        condition = compiler.clause("Observation", fhir_resources.c.id, request.clauses[0])
        sql = str(condition.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]
        names = set(re.findall(r"fhir_idx_reference AS (\w+)", sql))
        assert len(names) == 2, sql
