"""Sender bindings: namespace ids and the principal a sender's messages write as."""

from __future__ import annotations

import pytest

from healthroam.errors import InvalidInput
from healthroam.exchange.hl7.contract import Sender
from healthroam.exchange.hl7.senders import HL7_SCOPES, check_namespace_id, principal_for


@pytest.mark.parametrize("value", ["HIS", "H460105 01", "海南省人民医院", " LIS "])
def test_namespace_ids_accepted(value: str) -> None:
    assert check_namespace_id(value, "application") == value.strip()


@pytest.mark.parametrize("value", ["", "  ", "A|B", "A^B", "A~B", "A\\B", "A&B", "A\rB", "x" * 181])
def test_namespace_ids_refused(value: str) -> None:
    with pytest.raises(InvalidInput):
        check_namespace_id(value, "facility")


def test_principal_acts_for_the_institution_with_hl7_scopes() -> None:
    principal = principal_for(Sender("HIS", "H001", "H001"), source_address="10.0.0.5:40000")
    assert principal.client_id == "hl7:HIS@H001"
    assert principal.institution_code == "H001"
    assert principal.source_address == "10.0.0.5:40000"
    assert principal.scopes == HL7_SCOPES
    for resource_type in ("Patient", "Encounter", "Observation", "DiagnosticReport",
                          "ServiceRequest"):  # fmt: skip
        assert principal.scopes.allows(resource_type, "c")
    assert not principal.scopes.allows("MasterPerson", "r")
    long = principal_for(Sender("A" * 100, "F" * 100, "H001"))
    assert len(long.client_id) == 64  # fits the audit trail's column
