"""MLLP framing without sockets: the FrameDecoder state machine."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from healthroam.exchange.hl7.mllp import BadFraming, Frame, FrameDecoder, Oversized, frame


def test_frame_wraps_in_vt_fs_cr() -> None:
    assert frame(b"MSH|x") == b"\x0bMSH|x\x1c\r"


def test_two_frames_in_one_chunk_and_one_frame_in_many_chunks() -> None:
    decoder = FrameDecoder(1_000)
    assert decoder.feed(frame(b"A") + frame(b"B")) == [Frame(b"A"), Frame(b"B")]
    data = frame(b"MSH|split")
    events = []
    for byte in data:
        events += decoder.feed(bytes([byte]))
    assert events == [Frame(b"MSH|split")]
    assert not decoder.pending


def test_newlines_between_frames_are_tolerated() -> None:
    decoder = FrameDecoder(1_000)
    assert decoder.feed(frame(b"A") + b"\r\n" + frame(b"B") + b"\n") == [Frame(b"A"), Frame(b"B")]


def test_data_before_start_block_is_bad_framing() -> None:
    decoder = FrameDecoder(1_000)
    [event] = decoder.feed(b"MSH|no vt\x1c\r")
    assert isinstance(event, BadFraming)
    assert decoder.failed
    assert decoder.feed(frame(b"A")) == []  # finished: the connection must close


def test_start_block_inside_message_and_fs_without_cr() -> None:
    assert isinstance(FrameDecoder(100).feed(b"\x0bAB\x0bC\x1c\r")[0], BadFraming)
    assert isinstance(FrameDecoder(100).feed(b"\x0bAB\x1cX")[0], BadFraming)
    decoder = FrameDecoder(100)
    assert decoder.feed(b"\x0bAB\x1c") == []  # waiting for CR
    assert decoder.feed(b"\r") == [Frame(b"AB")]


def test_oversized_keeps_the_head_to_answer() -> None:
    decoder = FrameDecoder(10)
    [event] = decoder.feed(b"\x0bMSH|0123456789")
    assert isinstance(event, Oversized)
    assert event.head.startswith(b"MSH|")
    assert event.limit == 10
    exact = FrameDecoder(10)
    assert exact.feed(frame(b"0123456789")) == [Frame(b"0123456789")]
    over = FrameDecoder(10)
    assert isinstance(over.feed(frame(b"0123456789A"))[0], Oversized)


@given(st.lists(st.binary(max_size=50).filter(lambda b: b"\x0b" not in b and b"\x1c" not in b)))
def test_any_split_of_valid_frames_decodes_the_same(payloads: list[bytes]) -> None:
    stream = b"".join(frame(p) for p in payloads)
    decoder = FrameDecoder(1_000)
    events = []
    for i in range(0, len(stream), 7):
        events += decoder.feed(stream[i : i + 7])
    assert events == [Frame(p) for p in payloads]


@given(st.binary(max_size=300))
def test_random_bytes_never_raise(data: bytes) -> None:
    decoder = FrameDecoder(64)
    for event in decoder.feed(data):
        assert isinstance(event, Frame | BadFraming | Oversized)
