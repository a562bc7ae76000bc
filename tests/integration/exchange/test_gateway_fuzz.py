"""Malformed input against the real server (hypothesis): bad framing, no MSH, wrong or mixed
encodings, truncated, oversized, random bytes. The server answers each complete frame with an
ACK (a NAK unless the mutation left a valid message) or closes the connection; it never
crashes, and the next good connection is served."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healthroam.bootstrap import Platform
from healthroam.exchange.hl7.mllp import END, START, Frame, FrameDecoder, frame
from hl7_testkit import Running, bind, msa, oru, start

MAX = 8_192
GOOD = oru("GOOD", family="欧阳", given="娜娜")


@pytest.fixture
def small_gateway(platform: Platform) -> Iterator[Running]:
    bind(platform)
    with start(platform, max_message_bytes=MAX, idle_timeout_seconds=20) as gateway:
        yield Running(platform, gateway)


def _mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for position, value in edits:
        if out:
            out[position % len(out)] = value
    return bytes(out)


payloads = st.one_of(
    st.binary(max_size=2_000),  # random bytes, unframed
    st.binary(max_size=2_000).map(frame),  # random bytes, framed
    st.builds(  # a good message with bytes changed
        lambda edits: frame(_mutate(GOOD.encode(), edits)),
        st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    ),
    st.integers(1, len(GOOD.encode()) + 2).map(lambda n: frame(GOOD.encode())[:n]),  # truncated
    st.just(frame(GOOD.replace("MSH", "XYZ", 1).encode())),  # no MSH
    st.just(frame(GOOD.split("\r", 1)[1].encode())),  # MSH missing, other segments there
    st.just(frame(GOOD.encode("gb18030"))),  # GB18030 bytes, UTF-8 declared
    st.just(frame(GOOD.replace("UNICODE UTF-8", "ASCII").encode())),  # ASCII declared
    st.just(frame(GOOD.encode() + "黎".encode("gb18030"))),  # mixed encodings
    st.just(frame(GOOD.replace("UNICODE UTF-8", "UNICODE").encode())),  # not ASCII-based
    st.just(frame(GOOD.replace("|^~\\&|", "|^^^^|", 1).encode())),  # duplicate delimiters
    st.just(frame(GOOD.replace("|^~\\&|", "|", 1).encode())),  # no encoding characters
    st.just(START + b"MSH|^~\\&|" + b"x" * (MAX + 10) + END + b"\r"),  # oversized
    st.just(frame(b"MSH")),
    st.just(frame(b"")),
    st.just(START + START + GOOD.encode() + END + b"\r"),
    st.just(frame(GOOD.encode()) + b"garbage between frames"),
    st.just(frame(GOOD.encode())[:-1] + b"X"),  # FS not followed by CR
)


def _exchange(port: int, data: bytes) -> tuple[list[bytes], bool]:
    """Send, half-close, read to the end: (frames received, whether the stream was MLLP)."""
    decoder = FrameDecoder(1 << 20)
    frames: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return frames, True  # closed on us mid-send: allowed
        while True:
            try:
                chunk = sock.recv(65_536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            for event in decoder.feed(chunk):
                if not isinstance(event, Frame):
                    return frames, False
                frames.append(event.payload)
    return frames, True


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=payloads)
def test_malformed_input_never_crashes_the_server(
    small_gateway: Running, data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="healthroam.exchange.hl7")
    frames, well_formed = _exchange(small_gateway.port, data)
    assert well_formed, "the server's answer must itself be MLLP"
    for payload in frames:
        text = payload.decode("utf-8", errors="replace")
        assert text.startswith("MSH"), text[:40]
        assert "\rMSA|" in text
        code = text.split("\rMSA|", 1)[1][:2]
        assert code in ("AA", "AE", "AR")
    # Still serving: a good message on a new connection is accepted (or a stored repeat).
    with small_gateway.client() as client:
        assert msa(client.send(GOOD.encode())) == ("AA", "GOOD")
    # No connection ended in the catch-all (an unexpected exception), no personal data logged.
    assert not [
        r for r in caplog.records if r.getMessage().endswith(")") and " failed (" in r.getMessage()
    ]
    assert "欧阳" not in caplog.text
