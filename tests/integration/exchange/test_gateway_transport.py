"""MLLP transport over real sockets: concurrency, TLS, size limit, bad framing, idle timeout."""

from __future__ import annotations

import datetime as dt
import logging
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from healthroam.bootstrap import Platform
from healthroam.exchange.hl7.gateway import server_ssl_context
from healthroam.exchange.hl7.mllp import MllpClient, frame
from hl7_testkit import (
    Running,
    ack_of,
    bind,
    msa,
    oru,
    running_gateway_fixture,
    start,
)

_running = pytest.fixture(name="running")(running_gateway_fixture)


def test_many_connections_at_once_all_acknowledged(running: Running) -> None:
    answers: dict[str, str] = {}
    lock = threading.Lock()

    def sender(n: int) -> None:
        with running.client() as client:
            for m in range(15):
                control_id = f"C{n}-{m}"
                code, echoed = msa(client.send(oru(control_id, values=(str(m),)).encode()))
                with lock:
                    answers[echoed] = code

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 120
    assert set(answers.values()) == {"AA"}
    assert running.accepted == 120
    assert len(running.observations()) == 120
    # Group commit: fewer transactions than messages is allowed, never more.
    assert running.gateway.committer.messages == 120
    assert running.gateway.committer.batches <= 120


def test_pipelined_messages_on_one_connection_are_answered_in_order(running: Running) -> None:
    with running.client() as client:
        client.send_raw(b"".join(frame(oru(f"PL-{n}").encode()) for n in range(5)))
        echoed = [msa(client.receive())[1] for _ in range(5)]
    assert echoed == [f"PL-{n}" for n in range(5)]


def _closed(sock: socket.socket, timeout: float = 10) -> bool:
    """Whether the server closes the connection (reads until EOF; frames are ignored)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65_536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def test_bad_framing_closes_the_connection_and_the_server_keeps_serving(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="healthroam.exchange.hl7")
    for garbage in (
        b"MSH|^~\\&|no start block\r\x1c\r",
        b"\x0bMSH|\x0bnested\x1c\r",
        b"\x0bx\x1cz",
    ):
        with socket.create_connection(("127.0.0.1", running.port)) as sock:
            sock.sendall(garbage)
            assert _closed(sock)
    assert "bad MLLP framing" in caplog.text
    with running.client() as client:
        assert msa(client.send(oru("AFTER-1").encode())) == ("AA", "AFTER-1")


def test_oversized_message_gets_ar_then_close(platform: Platform) -> None:
    bind(platform)
    with start(platform, max_message_bytes=4_096) as gateway:
        assert gateway.port is not None
        big = oru("BIG-1", values=("x" * 10_000,)).encode()
        with MllpClient("127.0.0.1", gateway.port, timeout=10) as client:
            client.send_raw(frame(big))
            answer = client.receive()
            assert msa(answer) == ("AR", "BIG-1")
            assert "larger than 4096 bytes" in str(ack_of(answer).segment("ERR")(8))
            assert _closed(client.sock)
        # A message that is too large and has no MSH to answer: just closed.
        with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
            sock.sendall(b"\x0b" + b"y" * 8_000)
            assert _closed(sock)
        with MllpClient("127.0.0.1", gateway.port, timeout=10) as client:
            assert msa(client.send(oru("SMALL-1").encode())) == ("AA", "SMALL-1")


def test_idle_connection_is_closed(platform: Platform) -> None:
    bind(platform)
    with start(platform, idle_timeout_seconds=0.3) as gateway:
        assert gateway.port is not None
        with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
            started = time.monotonic()
            assert _closed(sock, timeout=10)
            assert time.monotonic() - started < 5
        # Half a message, then silence: closed too.
        with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
            sock.sendall(b"\x0bMSH|^~\\&|HIS")
            assert _closed(sock, timeout=10)


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "gateway.pem", tmp_path / "gateway.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_tls_connection(platform: Platform, tmp_path: Path) -> None:
    bind(platform)
    cert_file, key_file = _self_signed(tmp_path)
    with start(platform, ssl_context=server_ssl_context(cert_file, key_file)) as gateway:
        assert gateway.port is not None
        client_context = ssl.create_default_context(cafile=str(cert_file))
        with MllpClient(
            "127.0.0.1",
            gateway.port,
            timeout=10,
            ssl_context=client_context,
            server_hostname="localhost",
        ) as client:
            assert msa(client.send(oru("TLS-1").encode())) == ("AA", "TLS-1")
            assert isinstance(client.sock, ssl.SSLSocket)
        # A plain-text client gets no answer: the connection is closed.
        with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
            sock.sendall(frame(oru("PLAIN-1").encode()))
            assert _closed(sock)
    assert len(running_observations(platform)) == 1


def running_observations(platform: Platform) -> list[dict[str, Any]]:
    return Running(platform, None).observations()  # type: ignore[arg-type]


def test_search_parameters_are_compiled_before_the_port_opens(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first message must not wait for the FHIR search parameters to compile.
    from healthroam.records import search_params

    monkeypatch.setattr(search_params, "_index", None)  # as in a new process
    with start(platform) as gateway:
        assert gateway.port is not None
        assert search_params._index is not None
