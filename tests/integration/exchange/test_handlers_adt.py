"""ADT messages through the dispatcher, in real transactions, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable

import hl7
from fastapi.testclient import TestClient
from sqlalchemy import text as text_sql

from healthroam.bootstrap import Platform
from healthroam.exchange.hl7.contract import Handled
from healthroam.exchange.hl7.handlers import patient_id_for, resource_id
from healthroam.exchange.hl7.mapping_encounter import visit_system
from healthroam.exchange.hl7.mapping_patient import mrn_system
from healthroam.registry.repository import RegistryRepository

from helpers import Province
from hl7_helpers import HOSPITAL, Gateway, sample

Send = Callable[[str], Handled]
ADMISSION = resource_id("Encounter", HOSPITAL, visit_system(HOSPITAL), "Z20261129-0031")


def master_of(platform: Platform, patient_id: str) -> str:
    with platform.db.transaction() as conn:
        repo = RegistryRepository(conn)
        source = repo.source_by_fhir_id(patient_id)
        assert source is not None
        master = repo.master(source.master_id)
        assert master is not None
        return master.master_index_id


def test_a04_registers_patient_and_outpatient_visit(gateway: Gateway, send: Send) -> None:
    handled = send("adt_a04_register.hl7")
    patient_id = patient_id_for(HOSPITAL, "00012345")
    assert handled.written[0] == ("Patient", patient_id)
    assert handled.master_index_id is not None
    patient = gateway.read("Patient", patient_id).content
    assert patient["name"][0] == {
        "use": "official",
        "text": "王秀英",
        "family": "王",
        "given": ["秀英"],
    }
    assert patient["name"][1]["family"] == "WANG"
    assert patient["gender"] == "female"
    assert patient["birthDate"] == "1985-03-12"
    assert {"system": mrn_system(HOSPITAL), "value": "00012345"}.items() <= patient["identifier"][
        0
    ].items()
    assert patient["identifier"][1]["system"] == "urn:oid:2.16.156.10011.1.3"
    # \S\ and \T\ in XAD.2 are a literal component and subcomponent separator
    assert patient["address"][0]["line"] == ["海秀东路12号", "3栋^2单元&501室"]
    assert patient["address"][0]["district"] == "460106"
    assert {"system": "email", "value": "xiuying.wang@example.cn", "use": "home"} in patient[
        "telecom"
    ]
    assert patient["maritalStatus"]["coding"][0]["code"] == "M"  # GB/T 2261.2 "20"
    [encounter_id] = gateway.ids(handled, "Encounter")
    encounter = gateway.read("Encounter", encounter_id).content
    assert encounter["status"] == "arrived"
    assert encounter["class"]["code"] == "AMB"
    assert encounter["subject"] == {"reference": f"Patient/{patient_id}"}
    assert encounter["period"] == {"start": "2026-11-29T08:30:00+08:00"}
    assert encounter["participant"][0]["individual"]["display"] == "李建华"


def test_hl7_and_fhir_registrations_meet_in_one_master_person(
    platform: Platform, gateway: Gateway, send: Send, http: TestClient, province: Province
) -> None:
    handled = send("adt_a04_register.hl7")
    other = province.institution("H002")
    response = http.post(
        "/fhir/Patient",
        json={
            "resourceType": "Patient",
            "name": [{"text": "王秀英"}],
            "gender": "female",
            "birthDate": "1985-03-12",
            "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": "460106198503120027"}],
        },
        headers=province.headers(institution=other),
    )
    assert response.status_code == 201, response.text
    assert response.headers["X-Master-Index-Id"] == handled.master_index_id
    assert response.headers["X-Match-Outcome"] == "linked"


def test_fhir_patient_of_the_same_hospital_is_updated_by_hl7(
    platform: Platform, gateway: Gateway, http: TestClient, province: Province
) -> None:
    """A Patient the hospital wrote over FHIR with its MRN system is the one ADT updates."""
    client = province.client("system/Patient.cruds", HOSPITAL)
    headers = {"Authorization": f"Bearer {province.token(client)}"}
    response = http.post(
        "/fhir/Patient",
        json={
            "resourceType": "Patient",
            "name": [{"text": "王秀英"}],
            "birthDate": "1985-03-12",
            "identifier": [{"system": mrn_system(HOSPITAL), "value": "00012345"}],
        },
        headers=headers,
    )
    assert response.status_code == 201, response.text
    fhir_id = response.json()["id"]
    handled = gateway.send(sample("adt_a28_person.hl7").replace("00077001", "00012345"))
    assert handled.written == [("Patient", fhir_id)]
    assert gateway.read("Patient", fhir_id).version == 2


def test_a01_a08_a03_a13_follow_one_admission(gateway: Gateway, send: Send) -> None:
    send("adt_a01_admit.hl7")
    patient_id = patient_id_for(HOSPITAL, "00012345")
    encounter = gateway.read("Encounter", ADMISSION).content
    assert encounter["status"] == "in-progress"
    assert encounter["class"]["code"] == "IMP"
    assert encounter["location"][0]["location"]["display"] == "心内科病区 0312 02"
    assert encounter["reasonCode"][0]["coding"][0]["code"] == "I20.0"
    codes = {p["type"][0]["coding"][0]["code"] for p in encounter["participant"]}
    assert codes == {"ATND", "ADM"}

    send("adt_a08_update.hl7")
    patient = gateway.read("Patient", patient_id)
    assert patient.version == 2
    assert patient.content["address"][0]["line"] == ["龙华路88号"]
    assert patient.content["telecom"][0]["value"] == "13907559999"
    updated = gateway.read("Encounter", ADMISSION)
    assert updated.version == 2
    assert updated.content["status"] == "in-progress"  # A08 keeps the status
    assert updated.content["location"][0]["location"]["display"] == "心内科病区 0315 01"

    again = gateway.send(sample("adt_a08_update.hl7").replace("A08-0001", "A08-0002"))
    assert again.written == []  # nothing changed: no new versions
    assert again.master_index_id is not None
    assert gateway.read("Patient", patient_id).version == 2
    assert gateway.read("Encounter", ADMISSION).version == 2

    send("adt_a03_discharge.hl7")
    discharged = gateway.read("Encounter", ADMISSION).content
    assert discharged["status"] == "finished"
    assert discharged["period"] == {
        "start": "2026-11-29T14:55:00+08:00",
        "end": "2026-12-03T09:30:00+08:00",
    }
    assert discharged["hospitalization"]["dischargeDisposition"] == {"text": "01"}

    send("adt_a13_cancel_discharge.hl7")
    reopened = gateway.read("Encounter", ADMISSION).content
    assert reopened["status"] == "in-progress"
    assert reopened["period"] == {"start": "2026-11-29T14:55:00+08:00"}


def test_a11_cancels_the_admission(gateway: Gateway, send: Send) -> None:
    send("adt_a01_admit.hl7")
    handled = send("adt_a11_cancel_admit.hl7")
    assert ("Encounter", ADMISSION) in handled.written
    assert gateway.read("Encounter", ADMISSION).content["status"] == "cancelled"


def test_a28_a31_person_only(gateway: Gateway, send: Send) -> None:
    added = send("adt_a28_person.hl7")
    assert [t for t, _ in added.written] == ["Patient"]
    patient_id = patient_id_for(HOSPITAL, "00077001")
    patient = gateway.read("Patient", patient_id).content
    assert patient["address"][0]["line"] == ["滨海大道|北段66号"]  # \F\
    assert patient["telecom"][0]["value"] == "089866554433"
    assert patient["maritalStatus"]["coding"][0]["code"] == "W"
    updated = send("adt_a31_update.hl7")
    assert updated.written == [("Patient", patient_id)]
    assert updated.master_index_id == added.master_index_id
    patient = gateway.read("Patient", patient_id).content
    assert patient["telecom"] == [{"system": "phone", "value": "13876540001", "use": "mobile"}]


def test_a40_merges_prior_record_into_survivor(
    platform: Platform, gateway: Gateway, send: Send
) -> None:
    # The hospital registered the same man twice, the second time under a misspelt name
    # and without his ID number, so the registry kept two persons.
    msh, evn, _, pv1 = sample("adt_a28_person.hl7").split("\r")
    prior = gateway.send(
        "\r".join([msh, evn, "PID|1||00099888^^^H001^MR||程^建华^^^^^L||19630801|M", pv1])
    )
    survivor = send("adt_a28_person.hl7")
    assert prior.master_index_id != survivor.master_index_id
    prior_id = patient_id_for(HOSPITAL, "00099888")
    survivor_id = patient_id_for(HOSPITAL, "00077001")

    merged = send("adt_a40_merge.hl7")
    assert merged.master_index_id == survivor.master_index_id
    assert set(merged.written) == {("Patient", survivor_id), ("Patient", prior_id)}
    old = gateway.read("Patient", prior_id).content
    assert old["active"] is False
    assert old["link"] == [
        {"other": {"reference": f"Patient/{survivor_id}"}, "type": "replaced-by"}
    ]
    new = gateway.read("Patient", survivor_id).content
    assert new["link"] == [{"other": {"reference": f"Patient/{prior_id}"}, "type": "replaces"}]
    assert master_of(platform, prior_id) == master_of(platform, survivor_id)
    with platform.db.transaction() as conn:
        repo = RegistryRepository(conn)
        gone = repo.master_by_index_id(str(prior.master_index_id))
        assert gone is not None
        assert gone.status == "merged"
        source = repo.source_by_fhir_id(prior_id)
        assert source is not None
        assert source.link_type == "steward"

    # Results sent later under the prior MRN land on the surviving Patient.
    results = gateway.send(
        sample("oru_r01_results.hl7")
        .replace("00012345", "00099888")
        .replace("~460106198503120027^^^&2.16.156.10011.1.3&ISO^NNCHN", "")
    )
    [report_id] = gateway.ids(results, "DiagnosticReport")
    report = gateway.read("DiagnosticReport", report_id).content
    assert report["subject"] == {"reference": f"Patient/{survivor_id}"}


def test_concurrent_first_registrations_of_one_mrn_give_one_patient(
    platform: Platform, gateway: Gateway
) -> None:
    """Two transactions register the same new MRN at once: the second waits for the first
    (PostgreSQL: on the primary key; SQLite: on the write lock) and becomes version 2."""
    text = sample("adt_a28_person.hl7")
    patient_id = patient_id_for(HOSPITAL, "00077001")
    second: list[Handled] = []
    errors: list[BaseException] = []

    def other() -> None:
        try:
            # the same person, a newer phone number: it must become version 2
            second.append(gateway.send(text.replace("66554433", "66554434")))
        except BaseException as error:  # reported below
            errors.append(error)

    message = hl7.parse(text)
    with platform.db.transaction() as conn:
        gateway.handler(conn, gateway.context(message), message)
        thread = threading.Thread(target=other)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive()  # blocked behind the first transaction
    thread.join(30)
    assert errors == []
    assert second[0].written == [("Patient", patient_id)]
    stored = gateway.read("Patient", patient_id)
    assert stored.version == 2
    assert stored.content["telecom"][0]["value"] == "089866554434"
    with platform.db.transaction() as conn:
        rows = conn.execute(
            text_sql("select count(*) from fhir_resources where resource_type = 'Patient'")
        ).scalar_one()
    assert rows == 1


def test_a40_with_a_new_survivor_and_the_golden_record(
    platform: Platform, gateway: Gateway, send: Send, http: TestClient, province: Province
) -> None:
    """The survivor MRN is new: it is created from the PID, matched to the prior record's
    person by the registry, and the A40 pins both records there."""
    send("adt_a28_person.hl7")
    text = (
        sample("adt_a40_merge.hl7")
        .replace("00099888", "00077001")
        .replace("PID|1||00077001", "PID|1||00088000")
    )
    handled = gateway.send(text)
    prior_id = patient_id_for(HOSPITAL, "00077001")
    survivor_id = patient_id_for(HOSPITAL, "00088000")
    assert master_of(platform, prior_id) == master_of(platform, survivor_id)
    assert handled.master_index_id == master_of(platform, survivor_id)
    golden = http.get(
        f"/fhir/Patient/{handled.master_index_id}",
        headers=province.headers("system/Patient.rs", institution=province.institution("H009")),
    )
    assert golden.status_code == 200, golden.text
    links = {link["other"]["reference"] for link in golden.json()["link"]}
    assert {f"Patient/{prior_id}", f"Patient/{survivor_id}"} <= links


def test_a13_without_admission_time_still_drops_the_end(gateway: Gateway, send: Send) -> None:
    send("adt_a01_admit.hl7")
    send("adt_a03_discharge.hl7")
    text = sample("adt_a13_cancel_discharge.hl7").replace("|20261129145500", "|")
    gateway.send(text)
    reopened = gateway.read("Encounter", ADMISSION).content
    assert reopened["status"] == "in-progress"
    assert reopened["period"] == {"start": "2026-11-29T14:55:00+08:00"}
