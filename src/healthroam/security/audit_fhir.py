"""Render audit records as FHIR R4 AuditEvent resources in the IHE BALP shape."""

from __future__ import annotations

import base64
from datetime import UTC
from typing import Any

from healthroam.security.audit import Action, AuditRecord

_BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/"
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_PROFILES = {
    (Action.CREATE, True): "IHE.BasicAudit.PatientCreate",
    (Action.CREATE, False): "IHE.BasicAudit.Create",
    (Action.READ, True): "IHE.BasicAudit.PatientRead",
    (Action.READ, False): "IHE.BasicAudit.Read",
    (Action.UPDATE, True): "IHE.BasicAudit.PatientUpdate",
    (Action.UPDATE, False): "IHE.BasicAudit.Update",
    (Action.DELETE, True): "IHE.BasicAudit.PatientDelete",
    (Action.DELETE, False): "IHE.BasicAudit.Delete",
    (Action.EXECUTE, True): "IHE.BasicAudit.PatientQuery",
    (Action.EXECUTE, False): "IHE.BasicAudit.Query",
}
_EVENT_TYPE = {
    "rest": ("http://terminology.hl7.org/CodeSystem/audit-event-type", "rest", "RESTful Operation"),
    "query": (
        "http://terminology.hl7.org/CodeSystem/audit-event-type",
        "rest",
        "RESTful Operation",
    ),
    "auth": (_DCM, "110114", "User Authentication"),
    "admin": (
        "http://terminology.hl7.org/CodeSystem/audit-event-type",
        "rest",
        "RESTful Operation",
    ),
}


def to_audit_event(
    seq: int, record: AuditRecord, server_name: str = "healthroam"
) -> dict[str, Any]:
    recorded = record.recorded_at
    if recorded.tzinfo is None:
        recorded = recorded.replace(tzinfo=UTC)
    system, code, display = _EVENT_TYPE.get(record.event_type, _EVENT_TYPE["rest"])
    is_patient = record.patient_ref is not None
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(seq),
        "meta": {"profile": [_BALP + _PROFILES[(record.action, is_patient)]]},
        "type": {"system": system, "code": code, "display": display},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": record.subtype}],
        "action": str(record.action),
        "recorded": recorded.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "outcome": str(record.outcome),
        "purposeOfEvent": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                        "code": record.purpose_of_use,
                    }
                ]
            }
        ],
        "agent": [],
        "source": {
            "observer": {"display": server_name},
            "type": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                    "display": "Application Server",
                }
            ],
        },
        "entity": [],
    }
    if record.outcome != "0" and record.detail:
        event["outcomeDesc"] = record.detail
    if record.client_id:
        client_agent: dict[str, Any] = {
            "type": {"coding": [{"system": _DCM, "code": "110153", "display": "Source Role ID"}]},
            "who": {
                "identifier": {"system": "urn:healthroam:client-id", "value": record.client_id}
            },
            "requestor": record.end_user is None,
        }
        if record.source_address:
            client_agent["network"] = {"address": record.source_address, "type": "2"}
        event["agent"].append(client_agent)
        if record.institution_code:
            event["agent"].append(
                {
                    "type": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-RoleClass",
                                "code": "PROV",
                                "display": "healthcare provider",
                            }
                        ]
                    },
                    "who": {
                        "identifier": {
                            "system": "urn:healthroam:institution",
                            "value": record.institution_code,
                        }
                    },
                    "requestor": False,
                }
            )
    if record.end_user:
        event["agent"].append(
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                            "code": "IRCP",
                            "display": "information recipient",
                        }
                    ]
                },
                "who": {"identifier": {"value": record.end_user}},
                "requestor": True,
            }
        )
    event["agent"].append(
        {
            "type": {
                "coding": [{"system": _DCM, "code": "110152", "display": "Destination Role ID"}]
            },
            "who": {"display": server_name},
            "requestor": False,
        }
    )
    if record.patient_ref:
        event["entity"].append(
            {
                "what": {"reference": record.patient_ref},
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "1",
                    "display": "Person",
                },
                "role": {
                    "system": "http://terminology.hl7.org/CodeSystem/object-role",
                    "code": "1",
                    "display": "Patient",
                },
            }
        )
    if record.subtype == "import" and record.outcome == "0" and record.detail:
        # A bulk import's entry names every resource it wrote for one patient (decision 0036).
        for reference in record.detail.split():
            event["entity"].append(
                {
                    "what": {"reference": reference},
                    "type": {
                        "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                        "code": "2",
                        "display": "System Object",
                    },
                    "role": {
                        "system": "http://terminology.hl7.org/CodeSystem/object-role",
                        "code": "4",
                        "display": "Domain Resource",
                    },
                }
            )
    elif record.resource_type:
        what = (
            {"reference": f"{record.resource_type}/{record.resource_id}"}
            if record.resource_id
            else {"display": record.resource_type}
        )
        entity: dict[str, Any] = {
            "what": what,
            "type": {
                "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                "code": "2",
                "display": "System Object",
            },
            "role": {
                "system": "http://terminology.hl7.org/CodeSystem/object-role",
                "code": "4" if record.query is None else "24",
                "display": "Domain Resource" if record.query is None else "Query",
            },
        }
        if record.query is not None:
            entity["query"] = base64.b64encode(record.query.encode()).decode()
        event["entity"].append(entity)
    return event
