"""HL7 resource ids: UUIDv5 of (type, institution, business key) in the gateway's namespace,
computed without the UUID object and once per name (decision 0060) - the same text as
``str(uuid.uuid5(...))`` for any name, the same id on every call."""

from __future__ import annotations

import uuid

import pytest

from healthroam.exchange.hl7.handlers import ID_NAMESPACE, patient_id_for, resource_id
from healthroam.exchange.hl7.mapping_patient import mrn_system


@pytest.mark.parametrize(
    "key",
    [
        ("Patient", "H460100001", "urn:oid:2.16.156.10011.1.H460100001.mrn", "00012345"),
        ("Encounter", "H460100001", "urn:visit", "V-2026-000001"),
        ("Observation", "H460100001", "F12345", "718-7^Hemoglobin^LN|", "1"),
        ("Patient", "医院", "系统", "王伟 \u00e9\U0001f600"),
        ("DiagnosticReport", "", ""),
        ("Patient", "x" * 300, "|" * 10),
    ],
)
def test_ids_are_the_uuid5_of_the_joined_key(key: tuple[str, ...]) -> None:
    expected = str(uuid.uuid5(ID_NAMESPACE, "|".join(key)))
    assert resource_id(*key) == expected
    assert resource_id(*key) == expected  # the remembered one
    assert uuid.UUID(expected).version == 5


def test_a_patients_id_is_the_uuid5_of_its_mrn_key() -> None:
    system = mrn_system("H460100001")
    expected = uuid.uuid5(ID_NAMESPACE, f"Patient|H460100001|{system}|00012345")
    assert patient_id_for("H460100001", "00012345") == str(expected)
