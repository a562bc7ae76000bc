"""The gateway over real sockets on SQLite and PostgreSQL: ACK semantics, idempotency,
senders, versions, character sets."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from healthroam.db.schema import audit_inbox
from healthroam.db.tables_exchange import hl7_rejections
from healthroam.exchange.hl7.service import SenderService
from hl7_testkit import (
    Running,
    ack_of,
    msa,
    oru,
    running_gateway_fixture,
)

_running = pytest.fixture(name="running")(running_gateway_fixture)


def test_aa_only_after_the_data_and_the_log_row_are_committed(running: Running) -> None:
    with running.client() as client:
        answer = client.send(oru("MSG0001").encode())
    # The ACK arrived: a fresh connection (another transaction) already sees everything.
    assert msa(answer) == ("AA", "MSG0001")
    assert running.accepted == 1
    [observation] = running.observations()
    assert observation["subject"]["display"] == "黎阿妹"
    assert observation["valueString"] == "5.6"
    ack = ack_of(answer)
    msh = ack.segment("MSH")
    # Sender and receiver swapped; ACK^R01^ACK in v2.5.1; a control id of its own.
    assert (str(msh(3)), str(msh(4)), str(msh(5)), str(msh(6))) == (
        "HEALTHROAM",
        "HN",
        "HIS",
        "H001",
    )
    assert str(msh(9)) == "ACK^R01^ACK"
    assert str(msh(10)) not in ("", "MSG0001")
    assert str(msh(12)) == "2.5.1"
    assert b"\rERR" not in answer
    # The write is audited as the sender's principal, attributed to its institution.
    with running.platform.db.transaction(readonly=True) as conn:
        audits = conn.execute(
            select(audit_inbox.c.client_id, audit_inbox.c.institution_code).where(
                audit_inbox.c.resource_type == "Observation"
            )
        ).all()
    assert [(a.client_id, a.institution_code) for a in audits] == [("hl7:HIS@H001", "H001")]


def test_repeated_control_id_gets_the_same_ack_and_writes_nothing_twice(running: Running) -> None:
    message = oru("DUP-1").encode()
    with running.client() as client:
        first = client.send(message)
        again = client.send(message)
    with running.client() as other:  # also from another connection
        third = other.send(message)
    assert msa(first) == ("AA", "DUP-1")
    assert first == again == third  # byte for byte, MSH-7 and MSH-10 included
    assert running.accepted == 1
    assert len(running.observations()) == 1
    # Another sender may use the same control id: the key is (MSH-3, MSH-4, MSH-10).
    SenderService(running.platform.db).add(
        application="LIS", facility="H001", institution_code="H001"
    )
    with running.client() as client:
        assert msa(client.send(oru("DUP-1", application="LIS").encode())) == ("AA", "DUP-1")
    assert running.accepted == 2


def test_concurrent_repeats_of_one_control_id_write_once(running: Running) -> None:
    message = oru("RACE-1").encode()
    answers: list[bytes] = []

    def send() -> None:
        with running.client() as client:
            answers.append(client.send(message))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(answers)) == 1
    assert msa(answers[0]) == ("AA", "RACE-1")
    assert len(running.observations()) == 1


def test_unknown_and_inactive_senders_get_ar_and_nothing_is_written(running: Running) -> None:
    with running.client() as client:
        answer = client.send(oru("U-1", application="RIS", facility="H999").encode())
        ack = ack_of(answer)
        assert msa(answer) == ("AR", "U-1")
        err = ack.segment("ERR")
        assert str(err(2)) == "MSH^1^4^1"
        assert str(err(3)(1)(1)) == "103"
        assert str(err(4)) == "E"
        assert "unknown sender" in str(err(8))
        SenderService(running.platform.db).set_active("HIS", "H001", False)
        assert msa(client.send(oru("U-2").encode())) == ("AR", "U-2")
    assert running.observations() == []
    assert running.accepted == 0
    with running.platform.db.transaction(readonly=True) as conn:
        rows = conn.execute(select(hl7_rejections).order_by(hl7_rejections.c.id)).all()
    assert [(r.control_id, r.ack_code, r.error_code) for r in rows] == [
        ("U-1", "AR", "103"),
        ("U-2", "AR", "103"),
    ]
    # A rejected control id is not final: once the sender is enabled the resend is applied.
    SenderService(running.platform.db).set_active("HIS", "H001", True)
    with running.client() as client:
        assert msa(client.send(oru("U-2").encode())) == ("AA", "U-2")


def test_unsupported_versions_and_message_types(running: Running) -> None:
    with running.client() as client:
        v26 = client.send(oru("V-26", version="2.6").encode())
        assert msa(v26) == ("AR", "V-26")
        err = ack_of(v26).segment("ERR")
        assert (str(err(2)), str(err(3)(1)(1))) == ("MSH^1^12^1", "203")
        # An older version than 2.3: the ERR is in the old shape (ERR-1), the text in MSA-3.
        v22 = client.send(oru("V-22", version="2.2").encode())
        assert msa(v22) == ("AR", "V-22")
        old = ack_of(v22)
        assert str(old.segment("ERR")(1)) == "MSH^1^12^203&Unsupported version id&HL70357"
        assert "not supported" in str(old.segment("MSA")(3))
        adt = client.send(oru("T-1", message_type="ADT^A04^ADT_A01").encode())
        assert msa(adt) == ("AR", "T-1")
        assert str(ack_of(adt).segment("ERR")(3)(1)(1)) == "200"
        training = client.send(oru("P-1").replace("|P|2.5.1|", "|T|2.5.1|").encode())
        assert msa(training) == ("AR", "P-1")
        assert str(ack_of(training).segment("ERR")(3)(1)(1)) == "202"
    assert running.observations() == []


def test_v23_ack_shape_and_message_delimiters(running: Running) -> None:
    """A v2.3 sender with its own delimiters gets its ACK in those delimiters, old ERR shape."""
    text = oru("D-1", version="2.3", delimiters="#$*%@", values=("", "x"))
    with running.client() as client:
        answer = client.send(text.encode())
    assert answer.startswith(b"MSH#$*%@#HEALTHROAM#HN#HIS#H001#")
    ack = ack_of(answer)
    assert str(ack.segment("MSA")(1)) == "AE"
    assert str(ack.segment("MSH")(9)) == "ACK$R01"  # v2.3: no message structure component
    assert str(ack.segment("ERR")(1)) == "OBX$1$5$101@Required field missing@HL70357"


def test_ae_rolls_back_the_whole_message_and_a_corrected_resend_is_applied(
    running: Running,
) -> None:
    with running.client() as client:
        bad = client.send(oru("AE-1", values=("5.6", "")).encode())
        assert msa(bad) == ("AE", "AE-1")
        err = ack_of(bad).segment("ERR")
        assert (str(err(2)), str(err(3)(1)(1))) == ("OBX^2^5^1", "101")
        assert running.observations() == []  # the first OBX's Observation was rolled back
        good = client.send(oru("AE-1", values=("5.6", "6.1")).encode())
        assert msa(good) == ("AA", "AE-1")
    assert len(running.observations()) == 2


def test_notes_become_warnings_on_an_aa(running: Running) -> None:
    with running.client() as client:
        answer = client.send(oru("N-1", status="P").encode())
    ack = ack_of(answer)
    assert str(ack.segment("MSA")(1)) == "AA"
    err = ack.segment("ERR")
    assert (str(err(2)), str(err(3)(1)(1)), str(err(4))) == ("OBX^1^11^1", "0", "W")
    assert str(err(8)) == "preliminary result stored"


def test_gb18030_round_trip(running: Running) -> None:
    text = oru("GB-1", charset="GB 18030-2000", family="欧阳", given="娜娜")
    with running.client() as client:
        answer = client.send(text.encode("gb18030"))
        assert msa(answer, "gb18030") == ("AA", "GB-1")
        assert str(ack_of(answer, "gb18030").segment("MSH")(18)) == "GB 18030-2000"
        # The spelling without a space is accepted too.
        text2 = oru("GB-2", charset="GB18030", family="符", given="㑇")
        assert msa(client.send(text2.encode("gb18030")), "gb18030") == ("AA", "GB-2")
    names = sorted(o["subject"]["display"] for o in running.observations())
    assert names == sorted(["欧阳娜娜", "符㑇"])


def test_undecodable_bytes_get_ar_naming_msh18(running: Running) -> None:
    with running.client() as client:
        ascii_with_latin = oru("CS-1", charset="ASCII", family="Müller", given="Anna")
        answer = client.send(ascii_with_latin.encode("latin-1"))
        assert msa(answer) == ("AR", "CS-1")
        err = ack_of(answer).segment("ERR")
        assert str(err(2)) == "MSH^1^18^1"
        assert "not valid ASCII" in str(err(8))
        # UTF-8 declared, GB18030 sent.
        mixed = oru("CS-2", family="欧阳").encode("gb18030")
        assert msa(client.send(mixed)) == ("AR", "CS-2")
        unknown = oru("CS-3", charset="KS X 1001").encode()
        answer = client.send(unknown)
        assert msa(answer) == ("AR", "CS-3")
        assert str(ack_of(answer).segment("ERR")(3)(1)(1)) == "103"
        # Latin-1 declared and sent: fine.
        latin = oru("CS-4", charset="8859/1", family="Müller", given="Anna").encode("latin-1")
        assert msa(client.send(latin), "latin-1") == ("AA", "CS-4")
    assert [o["subject"]["display"] for o in running.observations()] == ["MüllerAnna"]


def test_default_charset_and_newline_segment_separators(running: Running) -> None:
    text = oru("NL-1", charset="").replace("\r", "\r\n")
    with running.client() as client:
        answer = client.send(text.encode())
    assert msa(answer) == ("AA", "NL-1")
    assert len(ack_of(answer).segment("MSH")) < 19  # no MSH-18: the default, as received
