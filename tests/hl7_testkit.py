"""Test kit of the HL7 gateway: a small real message handler for tests and benchmarks (ORU^R01
results become Observations written through the platform's RecordService (audited, in the gateway's
transaction). Not the platform's mapping (that is healthroam.exchange.hl7.handlers).

Also builds messages: ``oru(...)`` returns ER7 text with the given delimiters and charset.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import hl7
from sqlalchemy import func, select

from healthroam.bootstrap import Platform
from healthroam.db.schema import fhir_resources
from healthroam.db.tables_exchange import hl7_messages, hl7_rejections
from healthroam.exchange.hl7.contract import (
    AckCode,
    ErrorCode,
    Handled,
    Hl7Problem,
    Location,
    MessageContext,
    MessageHandler,
    Note,
    Severity,
)
from healthroam.exchange.hl7.gateway import Gateway, GatewayConfig, running_gateway
from healthroam.exchange.hl7.mllp import MllpClient
from healthroam.exchange.hl7.service import GatewayService, SenderService
from healthroam.records.service import RecordService
from healthroam.records.validation import validate_resource


def observation_handler(records: RecordService) -> MessageHandler:
    def handle(conn: Any, context: MessageContext, message: Any) -> Handled:
        if (context.message_type, context.trigger_event) != ("ORU", "R01"):
            raise Hl7Problem(
                f"{context.message_type}^{context.trigger_event} is not handled here",
                location=Location("MSH", field=9),
                error_code=ErrorCode.UNSUPPORTED_MESSAGE_TYPE,
                ack=AckCode.REJECT,
            )
        pid = message.segment("PID")
        family = message.unescape(str(pid(5)(1)(1)))
        given = message.unescape(str(pid(5)(1)(2))) if len(pid(5)(1)) > 1 else ""
        handled = Handled()
        for n, obx in enumerate(message.segments("OBX"), start=1):
            value = message.unescape(str(obx(5))) if len(obx) > 5 else ""
            if not value:
                raise Hl7Problem(
                    "OBX-5 (observation value) is required",
                    location=Location("OBX", sequence=n, field=5),
                    error_code=ErrorCode.REQUIRED_FIELD_MISSING,
                )
            resource = validate_resource(
                {
                    "resourceType": "Observation",
                    "status": "preliminary" if str(obx(11)) == "P" else "final",
                    "code": {
                        "coding": [{"system": "http://loinc.org", "code": str(obx(3)(1)(1))}],
                        "text": message.unescape(str(obx(3)(1)(2))),
                    },
                    "subject": {"display": f"{family}{given}"},
                    "valueString": value,
                },
                "Observation",
            )
            created = records.create_in(conn, context.principal, "Observation", resource)
            handled.written.append(("Observation", created.stored.id))
            if str(obx(11)) == "P":
                handled.notes.append(
                    Note(
                        "preliminary result stored",
                        severity=Severity.WARNING,
                        location=Location("OBX", sequence=n, field=11),
                    )
                )
        return handled

    return handle


def build(platform: Any) -> MessageHandler:
    """The factory ``healthroam gateway --handler hl7_testkit:build`` calls."""
    return observation_handler(platform.records)


def build_null(platform: Any) -> MessageHandler:
    """A handler that accepts every message and writes nothing (transport-only benchmarks)."""

    def handle(conn: Any, context: MessageContext, message: Any) -> Handled:
        return Handled()

    return handle


def oru(
    control_id: str,
    *,
    application: str = "HIS",
    facility: str = "H001",
    version: str = "2.5.1",
    charset: str = "UNICODE UTF-8",
    family: str = "黎",
    given: str = "阿妹",
    values: tuple[str, ...] = ("5.6",),
    status: str = "F",
    message_type: str = "ORU^R01^ORU_R01",
    delimiters: str = "|^~\\&",
) -> str:
    f, c, r, e, s = list(delimiters)
    enc = c + r + e + s
    msh = f.join(
        [
            "MSH",
            enc,
            application,
            facility,
            "HEALTHROAM",
            "HN",
            "20261129103000",
            "",
            message_type.replace("^", c),
            control_id,
            "P",
            version,
            "",
            "",
            "",
            "",
            "",
            charset,
        ]
    )
    pid = f.join(["PID", "1", "", f"P1001{c}{c}{c}H001{c}MR", "", f"{family}{c}{given}"])
    obr = f.join(["OBR", "1", "", "LAB1", f"2345-7{c}Glucose{c}LN"])
    segments = [msh, pid, obr]
    for n, value in enumerate(values, start=1):
        segments.append(
            f.join(
                [
                    "OBX",
                    str(n),
                    "ST",
                    f"2345-7{c}Glucose{c}LN",
                    "",
                    value,
                    "mmol/L",
                    "",
                    "",
                    "",
                    "",
                    status,
                ]
            )
        )
    return "\r".join(segments) + "\r"


@dataclass
class Running:
    platform: Platform
    gateway: Gateway

    @property
    def port(self) -> int:
        assert self.gateway.port is not None
        return self.gateway.port

    def client(self, **kwargs: Any) -> MllpClient:
        return MllpClient("127.0.0.1", self.port, timeout=20, **kwargs)

    def count(self, table: Any) -> int:
        with self.platform.db.transaction(readonly=True) as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

    def observations(self) -> list[dict[str, Any]]:
        with self.platform.db.transaction(readonly=True) as conn:
            rows = conn.execute(
                select(fhir_resources.c.content).where(
                    fhir_resources.c.resource_type == "Observation"
                )
            )
            return [r.content for r in rows]

    @property
    def accepted(self) -> int:
        return self.count(hl7_messages)

    @property
    def rejected(self) -> int:
        return self.count(hl7_rejections)


def bind(platform: Platform, application: str = "HIS", facility: str = "H001") -> None:
    platform.institutions.add(
        code=facility, name="海南省人民医院", kind="hospital", region="460106", level=3
    )
    SenderService(platform.db).add(
        application=application, facility=facility, institution_code=facility
    )


def start(platform: Platform, **config: Any) -> AbstractContextManager[Gateway]:
    service = GatewayService(platform.db, observation_handler(platform.records))
    return running_gateway(service, GatewayConfig(host="127.0.0.1", port=0, **config))


def ack_of(payload: bytes, encoding: str = "utf-8") -> Any:
    """The ACK as a python-hl7 message."""
    return hl7.parse(payload.decode(encoding))


def msa(payload: bytes, encoding: str = "utf-8") -> tuple[str, str]:
    message = ack_of(payload, encoding)
    segment = message.segment("MSA")
    return str(segment(1)), str(segment(2))


def running_gateway_fixture(platform: Platform) -> Iterator[Running]:
    """A gateway on an ephemeral port with sender HIS@H001 bound. A test module makes it its
    ``running`` fixture: ``_running = pytest.fixture(name="running")(running_gateway_fixture)``
    (not in a conftest.py, which the mapping tests' folder has)."""
    bind(platform)
    with start(platform, idle_timeout_seconds=30) as gateway:
        yield Running(platform, gateway)
