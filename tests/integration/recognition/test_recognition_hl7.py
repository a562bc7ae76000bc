"""Order alerts through the real HL7 v2 order handler (ORM^O01): the notes reach the ACK's
``Handled.notes`` and the alert is counted once, as an HL7 order."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from healthroam.bootstrap import Platform
from healthroam.db.engine import Database
from healthroam.exchange.hl7.cli import DEFAULT_HANDLER, load_handler
from healthroam.exchange.hl7.contract import Severity
from healthroam.exchange.recognition.model import CHINA_TIME, LOINC
from healthroam.exchange.recognition.repository import RecognitionRepository
from healthroam.security.service import utcnow

from helpers import Province, patient
from hl7_helpers import HOSPITAL, Gateway, add_hospital, sample


def _channels(db: Database, order_id: str) -> set[str]:
    with db.transaction(readonly=True) as conn:
        return RecognitionRepository(conn).channels_of(order_id)


def test_orm_o01_gets_an_alert_note_for_a_result_at_another_hospital(
    platform: Platform, http: TestClient, province: Province
) -> None:
    add_hospital(platform, HOSPITAL, "海口市人民医院")  # level 3, sends the order
    province.institution("HA", level=3)
    headers = province.headers("system/*.cruds", "HA")
    # The sample order's patient (王秀英, 1985-03-12, 460106198503120027), known at HA.
    person = patient("王秀英", born="1985-03-12", sequence=2)
    assert person["identifier"][0]["value"] == "460106198503120027"
    created = http.post("/fhir/Patient", json=person, headers=headers)
    assert created.status_code == 201, created.text
    taken = (utcnow().astimezone(CHINA_TIME) - timedelta(days=2)).date().isoformat()
    result = http.post(
        "/fhir/Observation",
        json={
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "58410-2"}]},
            "subject": {"reference": f"Patient/{created.json()['id']}"},
            "effectiveDateTime": taken,
        },
        headers=headers,
    )
    assert result.status_code == 201, result.text

    gateway = Gateway(platform)
    # The handler `healthroam gateway` runs by default: the mapping with recognition's alerts.
    gateway.handler = load_handler(DEFAULT_HANDLER, platform)
    # The patient is admitted first (ADT^A01): an open visit, the hospital's care relationship
    # under which other hospitals' results may be shown to it.
    gateway.send(sample("adt_a01_admit.hl7"))
    handled = gateway.send(sample("orm_o01_new.hl7"))
    (order_id,) = gateway.ids(handled, "ServiceRequest")
    (note,) = handled.notes
    assert note.severity is Severity.INFORMATION
    assert f"Observation/{result.json()['id']}" in note.detail
    assert "recognised (same-or-higher-level)" in note.detail
    assert "at HA" in note.detail

    today = utcnow().astimezone(CHINA_TIME).date()
    (row,) = platform.recognition.counts(today, today)
    assert (row.test_id, row.institution, row.alerts, row.orders) == ("cbc", HOSPITAL, 1, 1)
    assert _channels(platform.db, order_id) == {"hl7"}
