"""ORM^O01, OML^O21 and ORU^R01 through the dispatcher, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from healthroam.bootstrap import Platform
from healthroam.errors import Forbidden
from healthroam.exchange.hl7.contract import Handled
from healthroam.exchange.hl7.handlers import patient_id_for, resource_id
from healthroam.exchange.hl7.mapping_encounter import visit_system
from healthroam.exchange.hl7.mapping_orders import placer_system
from healthroam.records.repository import ResourceRepository

from hl7_helpers import HOSPITAL, Gateway, sample

Send = Callable[[str], Handled]
ORDER = resource_id("ServiceRequest", HOSPITAL, placer_system(HOSPITAL), "ORD-778899")
ADMISSION = resource_id("Encounter", HOSPITAL, visit_system(HOSPITAL), "Z20261129-0031")
PATIENT = patient_id_for(HOSPITAL, "00012345")


def test_orm_new_order_then_cancel(gateway: Gateway, send: Send) -> None:
    send("adt_a01_admit.hl7")
    handled = send("orm_o01_new.hl7")
    assert ("ServiceRequest", ORDER) in handled.written
    assert ("Patient", PATIENT) not in handled.written  # a known patient is only looked up
    assert handled.master_index_id is not None
    order = gateway.read("ServiceRequest", ORDER).content
    assert order["status"] == "active"
    assert order["intent"] == "order"
    assert order["priority"] == "stat"
    assert order["subject"] == {"reference": f"Patient/{PATIENT}"}
    assert order["encounter"] == {"reference": f"Encounter/{ADMISSION}"}
    assert order["authoredOn"] == "2026-11-29T15:08:00+08:00"
    assert order["requester"]["display"] == "李建华"
    assert order["code"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "58410-2",
        "display": "血常规(CBC)",
    }
    assert order["code"]["coding"][1]["system"] == f"urn:healthroam:local-code:{HOSPITAL}:99HNLAB"
    assert order["identifier"][0]["value"] == "ORD-778899"
    assert order["reasonCode"][0]["coding"][0]["code"] == "I20.0"
    # the duplicate-test hook saw the order and its note comes back for the ACK
    assert [a["id"] for a in gateway.alerts] == [ORDER]
    assert [n.detail for n in handled.notes] == [f"checked order {ORDER}"]

    cancelled = send("orm_o01_cancel.hl7")
    assert cancelled.written == [("ServiceRequest", ORDER)]
    assert cancelled.notes == []
    stored = gateway.read("ServiceRequest", ORDER)
    assert stored.version == 2
    assert stored.content["status"] == "revoked"
    assert stored.content["code"]["coding"][0]["code"] == "58410-2"  # kept from the order


def test_oml_registers_an_unknown_patient(gateway: Gateway, send: Send) -> None:
    handled = send("oml_o21_new.hl7")
    assert handled.written[0] == ("Patient", PATIENT)
    [order_id] = gateway.ids(handled, "ServiceRequest")
    order = gateway.read("ServiceRequest", order_id).content
    assert order["priority"] == "routine"
    assert order["occurrenceDateTime"] == "2026-11-29T16:00:00+08:00"
    assert "encounter" not in order


def test_oru_creates_report_and_observations_linked_to_order(gateway: Gateway, send: Send) -> None:
    send("adt_a01_admit.hl7")
    send("orm_o01_new.hl7")
    handled = send("oru_r01_results.hl7")
    observations = gateway.ids(handled, "Observation")
    [report_id] = gateway.ids(handled, "DiagnosticReport")
    assert len(observations) == 5
    report = gateway.read("DiagnosticReport", report_id).content
    assert report["status"] == "final"
    assert report["basedOn"] == [{"reference": f"ServiceRequest/{ORDER}"}]
    assert report["subject"] == {"reference": f"Patient/{PATIENT}"}
    assert report["encounter"] == {"reference": f"Encounter/{ADMISSION}"}
    assert report["issued"] == "2026-11-29T17:25:00+08:00"
    assert report["category"][0]["coding"][0]["code"] == "HM"
    assert report["result"] == [{"reference": f"Observation/{o}"} for o in observations]
    assert report["performer"] == [
        {"identifier": {"system": "urn:healthroam:institution", "value": HOSPITAL}}
    ]
    wbc, hb, morph, abo, hbsag = (gateway.read("Observation", o).content for o in observations)
    assert wbc["valueQuantity"] == {
        "value": 11.2,
        "unit": "10^9/L",  # \S\ in OBX-6
        "system": "http://unitsofmeasure.org",
        "code": "10*9/L",
    }
    assert wbc["interpretation"][0]["coding"][0]["code"] == "H"
    assert wbc["referenceRange"][0]["low"]["value"] == 3.5
    assert wbc["code"]["coding"][0]["system"] == "http://loinc.org"
    assert wbc["basedOn"] == [{"reference": f"ServiceRequest/{ORDER}"}]
    assert wbc["effectiveDateTime"] == "2026-11-29T16:05:00+08:00"
    assert hb["valueQuantity"]["code"] == "g/L"
    assert morph["valueString"] == "可见少量异型淋巴细胞\\中性粒细胞核左移"  # \E\
    assert morph["note"] == [{"text": "复查建议|一周后"}]  # NTE with \F\
    assert morph["code"]["coding"][0]["system"] == f"urn:healthroam:local-code:{HOSPITAL}:99HNLAB"
    assert abo["valueCodeableConcept"]["coding"][0]["code"] == "A"
    assert hbsag["valueQuantity"]["comparator"] == "<"
    assert hbsag["referenceRange"][0]["high"]["value"] == 0.05

    # A corrected result for the same order updates the same resources.
    corrected = send_corrected(gateway)
    assert gateway.ids(corrected, "Observation") == observations
    again = gateway.read("Observation", observations[0])
    assert again.version == 2
    assert again.content["status"] == "corrected"
    assert again.content["valueQuantity"]["value"] == 10.8


def send_corrected(gateway: Gateway) -> Handled:
    text = sample("oru_r01_results.hl7")
    text = text.replace("||11.2|", "||10.8|").replace("|H|||F|", "|H|||C|", 1)
    return gateway.send(text.replace("ORU-0001", "ORU-0002"))


def test_oru_for_unknown_patient_registers_them(gateway: Gateway, send: Send) -> None:
    handled = send("oru_r01_results.hl7")
    assert handled.written[0] == ("Patient", PATIENT)
    assert handled.master_index_id is not None
    [report_id] = gateway.ids(handled, "DiagnosticReport")
    report = gateway.read("DiagnosticReport", report_id).content
    assert "basedOn" not in report  # no such order
    assert "encounter" not in report  # no such visit


def test_v23_oru_with_two_patients(gateway: Gateway, send: Send) -> None:
    """A v2.3 ORU without ORC, untyped MRNs, GB sex codes and the results of two patients."""
    send("adt_a04_register.hl7")
    handled = send("oru_r01_v23_two_patients.hl7")
    second = patient_id_for(HOSPITAL, "00055555")
    assert [t for t, _ in handled.written] == [
        "Observation",
        "DiagnosticReport",
        "Patient",
        "Observation",
        "Observation",
        "DiagnosticReport",
    ]
    first_report, second_report = gateway.ids(handled, "DiagnosticReport")
    assert gateway.read("DiagnosticReport", first_report).content["subject"] == {
        "reference": f"Patient/{PATIENT}"
    }
    assert gateway.read("DiagnosticReport", second_report).content["subject"] == {
        "reference": f"Patient/{second}"
    }
    glucose, micro, ph = (
        gateway.read("Observation", o).content for o in gateway.ids(handled, "Observation")
    )
    assert glucose["code"]["coding"] == [
        {
            "system": f"urn:healthroam:local-code:{HOSPITAL}:99HNLAB",
            "code": "GLU",
            "display": "空腹血糖",
        }
    ]
    assert glucose["interpretation"][0]["coding"][0]["code"] == "H"  # ↑
    assert glucose["valueQuantity"]["code"] == "mmol/L"
    assert micro["valueString"] == "白细胞 0-2/HPF\n红细胞 未见"
    assert ph["valueQuantity"] == {"value": 6.0}
    registered = gateway.read("Patient", second).content
    assert registered["gender"] == "female"
    assert registered["identifier"][0]["system"] == f"urn:healthroam:mrn:{HOSPITAL}"
    assert registered["telecom"] == [{"system": "phone", "value": "13700001111", "use": "home"}]


def test_a_sender_without_write_scopes_is_refused(platform: Platform, gateway: Gateway) -> None:
    narrow = Gateway(platform)
    narrow.scopes = "system/Patient.cru"
    with pytest.raises(Forbidden):
        narrow.send(sample("oru_r01_results.hl7"))
    with platform.db.transaction() as conn:
        stored, _ = ResourceRepository(conn).read("Patient", PATIENT)
    assert stored is None


def test_change_and_status_orders(gateway: Gateway, send: Send) -> None:
    send("orm_o01_new.hl7")
    changed = gateway.send(
        sample("orm_o01_new.hl7")
        .replace("ORC|NW|", "ORC|XO|")
        .replace("|^^^^^S|", "|^^^^^R|")
        .replace("ORM-0001", "ORM-0003")
    )
    assert changed.written == [("ServiceRequest", ORDER)]
    assert len(changed.notes) == 1  # a changed active order is checked again
    order = gateway.read("ServiceRequest", ORDER)
    assert (order.version, order.content["priority"], order.content["status"]) == (
        2,
        "routine",
        "active",
    )
    msh, pid = sample("orm_o01_cancel.hl7").split("\r")[:2]
    done = gateway.send("\r".join([msh, pid, "ORC|SC|ORD-778899^HIS|||CM"]))
    assert done.notes == []
    assert gateway.read("ServiceRequest", ORDER).content["status"] == "completed"
    # an unchanged resend writes nothing
    again = gateway.send("\r".join([msh, pid, "ORC|SC|ORD-778899^HIS|||CM"]))
    assert again.written == []
    assert gateway.read("ServiceRequest", ORDER).version == 3
