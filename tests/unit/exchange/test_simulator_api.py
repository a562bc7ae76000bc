"""The simulator's FHIR side without a server: which hospitals talk FHIR, valid Bundles with
conditional Patient creates and urn:uuid references, and the credentials file."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from healthroam.errors import InvalidInput
from healthroam.exchange.simulator import Summary, hospitals, people
from healthroam.exchange.simulator_api import (
    MRN_SYSTEM,
    NATIONAL_ID_SYSTEM,
    BundleFactory,
    api_hospitals,
    load_credentials,
)
from healthroam.records.validation import validate_resource


def test_the_fhir_share_is_spread_over_the_hospitals() -> None:
    every = hospitals(10)
    assert api_hospitals(every, 0) == []
    assert api_hospitals(every, 1) == every
    half = api_hospitals(every, 0.5)
    assert [every.index(h) for h in half] == [1, 3, 5, 7, 9]
    assert len(api_hospitals(every, 0.3)) == 3
    with pytest.raises(InvalidInput):
        api_hospitals(every, 1.5)


def test_a_visit_is_a_valid_transaction_bundle() -> None:
    hospital = hospitals(1)[0]
    factory = BundleFactory(hospital, random.Random(1))
    population = people(2026, 50)
    with_id = next(p for p in population if p.id_number)
    bundle = factory.visit(with_id, datetime(2026, 11, 1, 8, tzinfo=UTC))
    validate_resource(bundle, "Bundle")
    assert bundle["type"] == "transaction"
    entries = bundle["entry"]
    assert [e["resource"]["resourceType"] for e in entries] == [
        "Patient",
        "Encounter",
        "ServiceRequest",
        "Observation",
        "DiagnosticReport",
    ]
    for entry in entries:
        validate_resource(entry["resource"])
        assert entry["fullUrl"].startswith("urn:uuid:")
        assert entry["request"]["method"] == "POST"
    patient = entries[0]
    mrn = f"{MRN_SYSTEM}{hospital.code}"
    assert patient["request"]["ifNoneExist"] == f"identifier={mrn}|{with_id.mrn}"
    systems = {i["system"] for i in patient["resource"]["identifier"]}
    assert mrn in systems
    assert NATIONAL_ID_SYSTEM in systems
    urls = {e["resource"]["resourceType"]: e["fullUrl"] for e in entries}
    report = entries[4]["resource"]
    assert report["subject"] == {"reference": urls["Patient"]}
    assert report["result"] == [{"reference": urls["Observation"]}]
    assert report["basedOn"] == [{"reference": urls["ServiceRequest"]}]
    assert entries[3]["resource"]["encounter"] == {"reference": urls["Encounter"]}
    # A second visit gets new fullUrls and order numbers.
    again = factory.visit(with_id, datetime(2026, 11, 2, 8, tzinfo=UTC))
    assert {e["fullUrl"] for e in again["entry"]}.isdisjoint(urls.values())


def test_credentials_file_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="--setup"):
        load_credentials(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(InvalidInput, match="not a simulator clients file"):
        load_credentials(bad)


def test_call_tally() -> None:
    summary = Summary()
    summary.record_call("check-in", 201, True, 0.2)
    summary.record_call("check-in", 400, False, 0.1, "400 replayed")
    summary.record_call("check-in", None, False, 0.1, "ConnectError")
    tally = summary.calls["check-in"]
    assert (tally.sent, tally.ok, tally.errors) == (3, 1, 2)
    assert tally.statuses == {"400": 1, "no answer": 1}
    assert tally.first_error == "400 replayed"
    assert tally.percentile(0.95) == 0.2


def test_missing_clients_are_refused_before_any_traffic() -> None:
    from healthroam.exchange.simulator import SimulatorConfig, simulate
    from healthroam.exchange.simulator_api import CLERK, ApiOptions, Credentials

    clerk = {CLERK: Credentials("c", "s", "HNWJW")}
    config = SimulatorConfig(port=1, count=2, people=10, api=ApiOptions("http://x", clerk))
    with pytest.raises(InvalidInput, match="no API client for hospital"):
        simulate(config)
    with pytest.raises(InvalidInput, match="card-office"):
        simulate(SimulatorConfig(port=1, count=2, people=10, api=ApiOptions("http://x", {})))
