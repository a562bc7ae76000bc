"""The hospital simulator against a real gateway: well-formed traffic of every message kind,
in UTF-8 and GB 18030 and three HL7 versions, all acknowledged."""

from __future__ import annotations

from typing import Any

from healthroam.bootstrap import Platform
from healthroam.exchange.hl7.contract import (
    AckCode,
    ErrorCode,
    Handled,
    Hl7Problem,
    Location,
    MessageContext,
)
from healthroam.exchange.hl7.gateway import GatewayConfig, running_gateway
from healthroam.exchange.hl7.service import GatewayService
from healthroam.exchange.simulator import SimulatorConfig, setup_senders, simulate

EXPECTED = {("ADT", "A04"), ("ADT", "A01"), ("ADT", "A08"), ("ADT", "A03"), ("ORM", "O01"),
            ("ORU", "R01")}  # fmt: skip


def test_simulated_hospitals_send_well_formed_messages(platform: Platform) -> None:
    seen: list[tuple[str, str, str, str]] = []

    def checking_handler(conn: Any, context: MessageContext, message: Any) -> Handled:
        if (context.message_type, context.trigger_event) not in EXPECTED:
            raise Hl7Problem(
                "unexpected type",
                location=Location("MSH", field=9),
                error_code=ErrorCode.UNSUPPORTED_MESSAGE_TYPE,
                ack=AckCode.REJECT,
            )
        pid = message.segment("PID")
        surname = message.unescape(str(pid(5)(1)(1)))
        if not surname or not str(pid(3)(1)(1)):
            raise Hl7Problem("PID-3/PID-5 missing", location=Location("PID", field=5))
        seen.append((context.sender.facility, context.version, context.message_type, surname))
        return Handled()

    assert setup_senders(platform, 3) == 3
    assert setup_senders(platform, 3) == 0  # idempotent
    service = GatewayService(platform.db, checking_handler)
    with running_gateway(service, GatewayConfig(port=0)) as gateway:
        assert gateway.port is not None
        summary = simulate(
            SimulatorConfig(port=gateway.port, count=3, rate=60, seconds=4, people=200)
        )
    assert summary.sent >= 30
    assert summary.no_ack == 0
    assert summary.codes == {"AA": summary.sent}
    assert {"ADT^A04", "ORM^O01", "ORU^R01"} <= set(summary.by_type)
    assert {v for _, v, _, _ in seen} == {"2.5.1", "2.4", "2.3.1"}
    # Chinese names arrive intact from the UTF-8 and from the GB 18030 hospital.
    assert all(len(name) >= 1 and "?" not in name for _, _, _, name in seen)
    assert summary.percentile(0.95) > 0
