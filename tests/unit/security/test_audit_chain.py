from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

from healthroam.security.audit import GENESIS_HASH, Action, AuditRecord, Outcome, chain_hash

RECORD = AuditRecord(
    recorded_at=datetime(2026, 11, 25, 8, 30, 0, 123456, tzinfo=UTC),
    action=Action.READ,
    event_type="rest",
    subtype="read",
    outcome=Outcome.SUCCESS,
    purpose_of_use="TREAT",
    client_id="c1",
    institution_code="H001",
    resource_type="Patient",
    resource_id="p1",
    patient_ref="Patient/p1",
)


def test_hash_is_sm3_sized_and_deterministic() -> None:
    first = chain_hash(GENESIS_HASH, 1, RECORD)
    assert len(first) == 32
    assert first == chain_hash(GENESIS_HASH, 1, RECORD)


def test_any_field_seq_or_predecessor_changes_the_hash() -> None:
    base = chain_hash(GENESIS_HASH, 1, RECORD)
    assert chain_hash(GENESIS_HASH, 2, RECORD) != base
    assert chain_hash(b"\x01" * 32, 1, RECORD) != base
    for change in (
        {"client_id": "c2"},
        {"purpose_of_use": "HPAYMT"},
        {"outcome": Outcome.MINOR_FAILURE},
        {"patient_ref": None},
        {"recorded_at": RECORD.recorded_at + timedelta(microseconds=1)},
    ):
        assert chain_hash(GENESIS_HASH, 1, replace(RECORD, **change)) != base


def test_time_zone_spelling_does_not_change_the_hash() -> None:
    # PostgreSQL returns aware times in the session zone, SQLite naive UTC: same instant.
    naive_utc = replace(RECORD, recorded_at=RECORD.recorded_at.replace(tzinfo=None))
    shanghai = replace(
        RECORD, recorded_at=RECORD.recorded_at.astimezone(timezone(timedelta(hours=8)))
    )
    base = chain_hash(GENESIS_HASH, 1, RECORD)
    assert chain_hash(GENESIS_HASH, 1, naive_utc) == base
    assert chain_hash(GENESIS_HASH, 1, shanghai) == base


def test_canonical_time_is_the_strftime_spelling() -> None:
    from healthroam.security.audit import _canonical_time

    for moment in (
        RECORD.recorded_at,
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),  # no microseconds: still six digits
        datetime(1999, 12, 31, 23, 59, 59, 999999),
        datetime(2026, 6, 1, 0, 0, 0, 1, tzinfo=timezone(timedelta(hours=8))),
        datetime(999, 1, 1, 0, 0, 0),
    ):
        plain = moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
        assert _canonical_time(moment) == plain.strftime("%Y-%m-%dT%H:%M:%S.%f")


def test_a_row_hashes_like_its_record() -> None:
    """The sealer hashes the inbox's rows (fields by name, codes for action and outcome)."""
    from healthroam.security.audit import FIELD_NAMES, canonical_row_bytes, row_hash

    for record in (
        RECORD,
        replace(RECORD, query='a "quoted" \\ 引号 \t\n', detail=None, patient_ref=None),
        replace(RECORD, action=Action.EXECUTE, outcome=Outcome.MAJOR_FAILURE, end_user="张三"),
    ):
        values = {name: getattr(record, name) for name in FIELD_NAMES}
        values["action"], values["outcome"] = record.action.value, record.outcome.value
        assert row_hash(GENESIS_HASH, canonical_row_bytes(7, values)) == chain_hash(
            GENESIS_HASH, 7, record
        )
