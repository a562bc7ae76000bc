"""MLLP, the Minimal Lower Layer Protocol: each HL7 message travels as <VT> message <FS><CR>.

:class:`FrameDecoder` is the framing state machine without any I/O (fed bytes, it yields
events), so the server and the tests share it. :class:`MllpClient` is a small blocking client
for tests, benchmarks and the hospital simulator.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from dataclasses import dataclass

START = b"\x0b"  # VT, start block
END = b"\x1c"  # FS, end block
CR = b"\x0d"
TRAILER = END + CR
# Bytes tolerated between frames: some senders end each frame with an extra newline.
_INTERFRAME = frozenset(b"\r\n")


def frame(payload: bytes) -> bytes:
    """Wrap one encoded message for the wire."""
    return START + payload + TRAILER


@dataclass(frozen=True, slots=True)
class Frame:
    """A complete message (the bytes between the start and end blocks)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Oversized:
    """A message grew past the size limit; ``head`` is its beginning (enough for its MSH)."""

    head: bytes
    limit: int


@dataclass(frozen=True, slots=True)
class BadFraming:
    """The byte stream is not MLLP; ``reason`` says why (never quotes the data)."""

    reason: str


Event = Frame | Oversized | BadFraming

HEAD_BYTES = 4_096  # how much of an oversized message is kept to answer it


class FrameDecoder:
    """Splits a byte stream into MLLP frames.

    After an :class:`Oversized` or :class:`BadFraming` event the decoder is finished: the
    connection cannot be resynchronised safely and must be closed."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self._in_frame = False
        self.failed = False

    @property
    def pending(self) -> bool:
        """Whether a frame has started and not ended (the peer is mid-message)."""
        return self._in_frame

    def feed(self, data: bytes) -> list[Event]:
        if self.failed:
            return []
        self._buffer += data
        events: list[Event] = []
        while self._buffer:
            if not self._in_frame:
                skip = 0
                while skip < len(self._buffer) and self._buffer[skip] in _INTERFRAME:
                    skip += 1
                del self._buffer[:skip]
                if not self._buffer:
                    break
                if self._buffer[0] != START[0]:
                    return self._fail(events, BadFraming("data before the start block (VT)"))
                del self._buffer[:1]
                self._in_frame = True
            end = self._buffer.find(END)
            stray = self._buffer.find(START, 0, end if end >= 0 else len(self._buffer))
            if stray >= 0:
                return self._fail(events, BadFraming("start block (VT) inside a message"))
            if end < 0:
                if len(self._buffer) > self.max_size:
                    return self._fail(
                        events, Oversized(bytes(self._buffer[:HEAD_BYTES]), self.max_size)
                    )
                break
            if end > self.max_size:
                return self._fail(
                    events, Oversized(bytes(self._buffer[:HEAD_BYTES]), self.max_size)
                )
            if end + 1 >= len(self._buffer):
                break  # FS seen, CR not yet
            if self._buffer[end + 1] != CR[0]:
                return self._fail(events, BadFraming("end block (FS) not followed by CR"))
            events.append(Frame(bytes(self._buffer[:end])))
            del self._buffer[: end + 2]
            self._in_frame = False
        return events

    def _fail(self, events: list[Event], event: Event) -> list[Event]:
        self.failed = True
        self._buffer.clear()
        events.append(event)
        return events


class MllpError(Exception):
    """The peer closed the connection or broke the framing."""


class MllpClient:
    """A blocking MLLP client: send a message, wait for its ACK."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        max_size: int = 16 * 1_048_576,
    ) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            try:
                sock = ssl_context.wrap_socket(sock, server_hostname=server_hostname or host)
            except BaseException:
                sock.close()
                raise
        self.sock = sock
        self._decoder = FrameDecoder(max_size)
        self._ready: list[bytes] = []

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, payload: bytes) -> bytes:
        """Send one message and return the payload of the answer."""
        self.sock.sendall(frame(payload))
        return self.receive()

    def receive(self) -> bytes:
        while not self._ready:
            data = self.sock.recv(65_536)
            if not data:
                raise MllpError("connection closed by the server")
            for event in self._decoder.feed(data):
                if not isinstance(event, Frame):
                    raise MllpError(f"bad answer from the server: {event}")
                self._ready.append(event.payload)
        return self._ready.pop(0)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> MllpClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
