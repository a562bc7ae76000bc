"""The real Python FHIR clients, fhirpy and fhirclient, against the real server."""

from __future__ import annotations

from typing import Any

import pytest
from fhirclient.models.codeableconcept import CodeableConcept
from fhirclient.models.coding import Coding
from fhirclient.models.fhirreference import FHIRReference
from fhirclient.models.observation import Observation
from fhirclient.models.quantity import Quantity
from fhirclient.server import FHIRServer
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound

from healthroam.bootstrap import Platform

from helpers import national_id
from servers import bearer_token

SCOPES = "system/Patient.cruds system/Observation.cruds"


def _hospital_headers(platform: Platform, server: str) -> dict[str, str]:
    platform.institutions.add(
        code="H001", name="海南省人民医院", kind="hospital", region="460106", level=3
    )
    client = platform.clients.add(institution_code="H001", scopes=SCOPES)
    assert client.client_secret
    return bearer_token(server, client.client.client_id, client.client_secret)


def _patient_body(id_number: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": id_number}],
        "name": [{"use": "official", "text": "王小明", "family": "王", "given": ["小明"]}],
        "gender": "male",
        "birthDate": "1990-01-01",
    }


def test_fhirpy_creates_searches_updates_and_deletes(platform: Platform, server: str) -> None:
    headers = _hospital_headers(platform, server)
    client = SyncFHIRClient(f"{server}/fhir", authorization=headers["Authorization"])
    id_number = national_id("460106", "19900101", 123)

    patient = client.resource("Patient", **_patient_body(id_number))
    patient.save()
    assert patient.id
    assert patient["meta"]["versionId"] == "1"

    observation = client.resource(
        "Observation",
        status="final",
        code={"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
        subject=patient.to_reference(),
        valueQuantity={"value": 135, "unit": "g/L", "system": "http://unitsofmeasure.org"},
        effectiveDateTime="2026-11-20T09:30:00+08:00",
    )
    observation.save()

    found = (
        client.resources("Observation")
        .search(subject=f"Patient/{patient.id}", code="http://loinc.org|718-7")
        .fetch_all()
    )
    assert [o.id for o in found] == [observation.id]
    assert found[0]["valueQuantity"]["value"] == 135
    assert client.resources("Observation").search(code="http://loinc.org|2345-7").fetch() == []

    observation["status"] = "amended"
    observation.save()
    again = client.reference("Observation", observation.id).to_resource()
    assert again["status"] == "amended"
    assert again["meta"]["versionId"] == "2"

    observation.delete()  # type: ignore[no-untyped-call]
    with pytest.raises(ResourceNotFound):
        client.reference("Observation", observation.id).to_resource()


def test_fhirpy_gets_an_operation_outcome_for_an_invalid_resource(
    platform: Platform, server: str
) -> None:
    headers = _hospital_headers(platform, server)
    client = SyncFHIRClient(f"{server}/fhir", authorization=headers["Authorization"])
    bad = client.resource("Observation", status="final", code={"text": "Hb"}, valueX=1)
    with pytest.raises(OperationOutcome) as raised:
        bad.save()
    issue = raised.value.resource["issue"][0]
    assert issue["severity"] == "error"
    assert any("valueX" in e for e in issue["expression"])


def test_fhirclient_models_round_trip(platform: Platform, server: str) -> None:
    headers = _hospital_headers(platform, server)
    fhir = FHIRServer(None, base_uri=f"{server}/fhir")
    fhir.session.headers.update(headers)
    id_number = national_id("460106", "19850615", 124)
    created = fhir.post_json("Patient", _patient_body(id_number) | {"gender": "female"})
    assert created.status_code == 201
    patient_id = created.json()["id"]

    observation = Observation()
    observation.status = "final"
    observation.code = CodeableConcept()
    coding = Coding()
    coding.system, coding.code = "http://loinc.org", "2345-7"
    observation.code.coding = [coding]
    observation.subject = FHIRReference()
    observation.subject.reference = f"Patient/{patient_id}"
    observation.valueQuantity = Quantity()
    observation.valueQuantity.value = 5.4
    observation.valueQuantity.unit = "mmol/L"
    observation.valueQuantity.system = "http://unitsofmeasure.org"
    observation.valueQuantity.code = "mmol/L"
    response = observation.create(fhir)
    assert response is not None
    observation_id = response["id"]

    read = Observation.read(observation_id, fhir)
    assert read.valueQuantity.value == 5.4
    assert read.subject.reference == f"Patient/{patient_id}"

    results = list(
        Observation.where({"subject": f"Patient/{patient_id}"}).perform_resources_iter(fhir)
    )
    assert [r.id for r in results] == [observation_id]

    read.status = "corrected"
    read.update(fhir)
    assert Observation.read(observation_id, fhir).status == "corrected"

    # GET /fhir/Patient is the registry's PDQm search: the client sees the master person,
    # whose golden Patient reads back through the same client.
    golden = fhir.request_json(f"Patient?identifier=urn:oid:2.16.156.10011.1.3|{id_number}")
    assert golden["total"] == 1
    master = golden["entry"][0]["resource"]
    assert master["gender"] == "female"
    assert fhir.request_json(f"Patient/{master['id']}")["id"] == master["id"]
