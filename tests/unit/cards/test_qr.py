from __future__ import annotations

import contextlib
from datetime import datetime

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from healthroam.cards.qr import (
    BEIJING,
    DynamicCodeVerifier,
    InMemoryReplayStore,
    QrCodeRejected,
    StaticCode,
    make_dynamic_code,
    parse_static_code,
    render_qr,
)

KEY = bytes.fromhex("0123456789abcdeffedcba9876543210")
EHC_ID = "666DA7824C1609D1767A60802E55E83795E19322C11662CDA59E4A904E2CCBDA"
T0 = int(datetime(2026, 11, 25, 9, 30, 15, tzinfo=BEIJING).timestamp())


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def verifier(now: float = T0 + 1, **kw: object) -> DynamicCodeVerifier:
    return DynamicCodeVerifier({"K1": KEY}, 60, Clock(now), **kw)  # type: ignore[arg-type]


def reason(v: DynamicCodeVerifier, text: str) -> str:
    with pytest.raises(QrCodeRejected) as info:
        v.verify(text)
    return info.value.reason


def test_validity_field_is_sm4_of_the_time_digits() -> None:
    text = make_dynamic_code(EHC_ID, "K1", KEY, T0)
    validity = text.split(":")[4]
    dec = Cipher(algorithms.SM4(KEY), modes.ECB()).decryptor()
    plain = dec.update(bytes.fromhex(validity)) + dec.finalize()
    assert plain == bytes.fromhex("20261125093015") + bytes(9)


def test_round_trip_and_replay() -> None:
    v = verifier()
    text = make_dynamic_code(EHC_ID, "K1", KEY, T0)
    code = v.verify(text)
    assert (code.ehc_id, code.key_id, code.generated_at) == (EHC_ID, "K1", T0)
    assert reason(v, text) == "replayed"
    # another second gives another code, accepted once
    v.verify(make_dynamic_code(EHC_ID, "K1", KEY, T0 + 1))


def test_window_expiry_and_future() -> None:
    text = make_dynamic_code(EHC_ID, "K1", KEY, T0)
    verifier(T0 + 60).verify(text)
    assert reason(verifier(T0 + 61), text) == "expired"
    verifier(T0 - 5).verify(text)  # within the default 5 s skew
    assert reason(verifier(T0 - 6), text) == "from-future"


def test_key_rotation_and_unknown_key() -> None:
    k2 = bytes(16)
    v = DynamicCodeVerifier({"K1": KEY, "K2": k2}, 60, Clock(T0))
    v.verify(make_dynamic_code(EHC_ID, "K2", k2, T0))
    assert reason(v, make_dynamic_code(EHC_ID, "K3", k2, T0)) == "unknown-key-id"
    # right key id, wrong key: the check value fails
    assert reason(v, make_dynamic_code(EHC_ID, "K1", k2, T0)) == "bad-check"


def test_validity_cannot_be_moved_to_another_card() -> None:
    text = make_dynamic_code(EHC_ID, "K1", KEY, T0)
    other = make_dynamic_code("A" * 64, "K1", KEY, T0)
    spliced = ":".join(other.split(":")[:3] + text.split(":")[3:])
    assert reason(verifier(), spliced) == "bad-check"


def test_replay_store_expires_and_bounds() -> None:
    store = InMemoryReplayStore(max_entries=2)
    assert store.add_if_absent("a", 10, 0)
    assert not store.add_if_absent("a", 10, 5)
    assert store.add_if_absent("a", 20, 11)  # expired entry may come back
    assert store.add_if_absent("b", 20, 11)
    assert store.add_if_absent("c", 20, 11)
    assert len(store) == 2
    assert store.evicted_live == 1


GOOD = make_dynamic_code(EHC_ID, "K1", KEY, T0)
F = GOOD.split(":")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "bad-prefix"),
        ("ehcid:" + GOOD[6:], "bad-prefix"),
        ("EHCID:D2:" + GOOD[9:], "bad-version"),
        (GOOD + ":00", "bad-field-count"),
        (":".join(F[:-1]), "bad-field-count"),
        (":".join([*F[:2], EHC_ID[:-1], *F[3:]]), "bad-length"),
        (":".join([*F[:2], EHC_ID.lower(), *F[3:]]), "non-hex"),
        (":".join([*F[:3], "k1", *F[4:]]), "bad-key-id"),
        (":".join([*F[:3], "K123456789", *F[4:]]), "bad-key-id"),
        (":".join([*F[:4], F[4][:-2], F[5]]), "bad-length"),
        (":".join([*F[:4], F[4][:-1] + "G", F[5]]), "non-hex"),
        (":".join([*F[:5], F[5][:-1] + "0" if F[5][-1] != "0" else F[5][:-1] + "1"]), "bad-check"),
        ("EHCID:" + "X" * 500, "too-long"),
    ],
)
def test_malformed_dynamic_codes(text: str, why: str) -> None:
    assert reason(verifier(), text) == why


def test_bad_validity_with_correct_mac() -> None:
    import healthroam.cards.qr as qr

    pk = qr._ProtectionKey(KEY)
    validity = pk.encryptor.update(bytes.fromhex("20261399093015") + bytes(9)).hex().upper()
    body = f"EHCID:D1:{EHC_ID}:K1:{validity}"
    assert reason(verifier(), f"{body}:{pk.check(body.encode())}") == "bad-validity"


def test_static_code() -> None:
    code = StaticCode(EHC_ID, "460100", "12460000MB0000000X")
    text = code.text()
    assert parse_static_code(text) == code
    broken = text[:-1] + ("0" if text[-1] != "0" else "1")
    with pytest.raises(QrCodeRejected) as info:
        parse_static_code(broken)
    assert info.value.reason == "bad-check"
    with pytest.raises(QrCodeRejected) as info:
        parse_static_code(text.replace(":460100:", ":46010:"))
    assert info.value.reason == "bad-region"


def test_render_qr() -> None:
    assert render_qr(GOOD, "png").startswith(b"\x89PNG")
    assert b"<svg" in render_qr(GOOD, "svg")


alnum = st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ:", max_size=200)


@settings(max_examples=500)
@given(
    st.text(max_size=200)
    | alnum.map(lambda s: "EHCID:D1:" + s)
    | alnum.map(lambda s: "EHCID:S1:" + s)
)
def test_fuzz_parsers_only_raise_qr_rejected(text: str) -> None:
    v = verifier()
    for parse in (v.verify, parse_static_code):
        with contextlib.suppress(QrCodeRejected):
            parse(text)


@settings(max_examples=300)
@given(st.integers(0, len(GOOD) - 1), st.sampled_from("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ:"))
def test_fuzz_single_character_changes(pos: int, char: str) -> None:
    text = GOOD[:pos] + char + GOOD[pos + 1 :]
    if text == GOOD:
        return
    with pytest.raises(QrCodeRejected):
        verifier().verify(text)
