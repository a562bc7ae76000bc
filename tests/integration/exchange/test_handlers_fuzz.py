"""Mutated sample messages never crash a handler: each is applied or refused with a
HealthroamError (an Hl7Problem naming a field, or the record service's own error), inside a
real transaction on SQLite and PostgreSQL."""

from __future__ import annotations

import hl7
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healthroam.errors import HealthroamError
from healthroam.exchange.hl7.contract import Hl7Problem

from hl7_helpers import Gateway, sample

TEMPLATES = [
    sample(name)
    for name in (
        "adt_a04_register.hl7",
        "adt_a01_admit.hl7",
        "adt_a40_merge.hl7",
        "orm_o01_new.hl7",
        "oml_o21_new.hl7",
        "oru_r01_results.hl7",
        "oru_r01_v23_two_patients.hl7",
    )
]
PIECES = st.sampled_from(
    [
        "",
        '""',
        "^",
        "~",
        "&",
        "\\",
        "\\F\\",
        "\\X0\\",
        "\\XZZ\\",
        "99999999999999",
        "-1",
        "1e9",
        "<",
        "^^^^^^^^^^",
        "张",
        "\u0000",
        " ",
        "NNCHN",
        "MR",
        "ZZ",
        "20261399",
        "+9999",
    ]
)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from(TEMPLATES)).split("\r")
    for _ in range(draw(st.integers(1, 4))):
        index = draw(st.integers(1, len(lines) - 1))  # keep MSH parseable
        fields = lines[index].split("|")
        kind = draw(st.integers(0, 3))
        if kind == 0 and len(fields) > 1:  # replace a field
            fields[draw(st.integers(1, len(fields) - 1))] = draw(PIECES)
        elif kind == 1 and len(fields) > 1:  # insert into a field
            position = draw(st.integers(1, len(fields) - 1))
            fields[position] = fields[position] + draw(PIECES)
        elif kind == 2 and len(lines) > 2:  # drop a segment
            del lines[index]
            continue
        else:  # truncate the segment
            fields = fields[: draw(st.integers(1, len(fields)))]
        lines[index] = "|".join(fields)
    return "\r".join(lines)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=mutated())
def test_mutated_messages_are_applied_or_refused(gateway: Gateway, text: str) -> None:
    try:
        message = hl7.parse(text)
    except Exception:  # python-hl7 refused it: the transport's business, not the handlers'
        return
    refused: HealthroamError | None = None
    try:
        gateway.send_parsed(message)
    except HealthroamError as error:  # anything else fails the test
        refused = error
    if isinstance(refused, Hl7Problem):
        assert refused.location is not None
    if refused is not None:
        assert refused.detail
