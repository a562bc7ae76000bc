"""COSE_Sign1 and the two signature algorithms, with SM2 checked independently of tongsuopy."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from hypothesis import given
from hypothesis import strategies as st

from healthroam.cards.cose import (
    ALG_ES256,
    ALG_SM2_SM3,
    CoseError,
    Es256Signer,
    Sm2Signer,
    decode_sign1,
    loads_strict,
    sign1,
    verify_sign1,
)

# GB/T 32918.5 recommended curve parameters
P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
A = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
G = (
    0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7,
    0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0,
)
Point = tuple[int, int] | None


def _add(p: Point, q: Point) -> Point:
    if p is None:
        return q
    if q is None:
        return p
    if p[0] == q[0] and (p[1] + q[1]) % P == 0:
        return None
    if p == q:
        lam = (3 * p[0] * p[0] + A) * pow(2 * p[1], -1, P) % P
    else:
        lam = (q[1] - p[1]) * pow(q[0] - p[0], -1, P) % P
    x = (lam * lam - p[0] - q[0]) % P
    return (x, (lam * (p[0] - x) - p[1]) % P)


def _mul(k: int, p: Point) -> Point:
    r: Point = None
    while k:
        if k & 1:
            r = _add(r, p)
        p = _add(p, p)
        k >>= 1
    return r


def _sm3(data: bytes) -> bytes:
    h = hashes.Hash(hashes.SM3())
    h.update(data)
    return h.finalize()


def sm2_verify_reference(public: bytes, message: bytes, sig: bytes, user_id: bytes) -> bool:
    """GB/T 32918.2 verification written from the standard: e = SM3(Z || M)."""
    x, y = int.from_bytes(public[1:33], "big"), int.from_bytes(public[33:], "big")
    z = _sm3(
        (len(user_id) * 8).to_bytes(2, "big")
        + user_id
        + b"".join(v.to_bytes(32, "big") for v in (A, B, G[0], G[1], x, y))
    )
    e = int.from_bytes(_sm3(z + message), "big")
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    t = (r + s) % N
    point = _add(_mul(s, G), _mul(t, (x, y)))
    assert point is not None
    return (e + point[0]) % N == r


def test_tongsuopy_sm2_uses_default_user_id_z_value(sm2_signer: Sm2Signer) -> None:
    message = b"healthroam"
    sig = sm2_signer.sign(message)
    public = sm2_signer.public_key_bytes()
    assert sm2_verify_reference(public, message, sig, b"1234567812345678")
    assert not sm2_verify_reference(public, message, sig, b"")


@pytest.mark.parametrize("signer_name", ["sm2_signer", "es256_signer"])
def test_sign1_round_trip_and_tamper(signer_name: str, request: pytest.FixtureRequest) -> None:
    signer = request.getfixturevalue(signer_name)
    lookup = {signer.key_id: signer.verifier()}.get
    data = sign1(b"payload", signer)
    assert data[0] == 0xD2  # tag 18
    message = decode_sign1(data)
    assert message.algorithm in (ALG_SM2_SM3, ALG_ES256)
    verify_sign1(message, lookup)
    with pytest.raises(CoseError) as info:
        verify_sign1(message, lookup, external_aad=b"other")
    assert info.value.reason == "bad-signature"
    with pytest.raises(CoseError) as info:
        verify_sign1(message, lambda _: None)
    assert info.value.reason == "unknown-key-id"


def test_algorithm_mismatch(sm2_signer: Sm2Signer, es256_signer: Es256Signer) -> None:
    message = decode_sign1(sign1(b"x", sm2_signer))
    with pytest.raises(CoseError) as info:
        verify_sign1(message, {sm2_signer.key_id: es256_signer.verifier()}.get)
    assert info.value.reason == "algorithm-mismatch"


@pytest.mark.parametrize(
    "value",
    [
        cbor2.CBORTag(1, 0),
        cbor2.CBORTag(35, "a+"),
        cbor2.CBORTag(5, [2**64, 1]),
        cbor2.CBORTag(99999, 0),
        [cbor2.CBORTag(0, "2020-01-01T00:00:00Z")],
    ],
)
def test_strict_cbor_refuses_tags(value: object) -> None:
    with pytest.raises(CoseError) as info:
        loads_strict(cbor2.dumps(value))
    assert info.value.reason == "bad-cbor"


def test_strict_cbor_refuses_duplicates_and_indefinite() -> None:
    for raw in (bytes.fromhex("a201020103"), bytes.fromhex("9f01ff")):
        with pytest.raises(CoseError):
            loads_strict(raw)


@given(st.binary(max_size=300))
def test_decode_sign1_fuzz(raw: bytes) -> None:
    with contextlib.suppress(CoseError):
        decode_sign1(raw)
