"""COSE_Sign1 (RFC 9052) over cbor2, with SM2-with-SM3 (tongsuopy) and ES256 (cryptography).

Signing and verifying go through two small protocols so a key store or HSM can supply keys
later: a :class:`Signer` has ``key_id``, ``algorithm`` and ``sign(data) -> bytes``; verifying
takes a lookup from key id to a :class:`SignatureVerifier`.

Signatures are the fixed-length ``r || s`` form (64 bytes) for both algorithms, as RFC 9053
prescribes for ECDSA. SM2 signing uses the GB/T 32918 Z value with the default user ID
``1234567812345678``: tongsuopy's ``EVP_DigestSign`` computes ``SM3(Z || M)`` itself (checked by
``tests/unit/cards/test_cose.py`` against an independent pure-Python verification).

Algorithm numbers: ES256 is -7 (IANA). SM2-with-SM3 has no IANA COSE value, so healthroam uses
-65537, the first value of the registry's private-use range (< -65536); it only means
something inside healthroam's trust domain, and the trust list binds each key id to one
algorithm so a verifier never trusts the header's number on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes as c_hashes
from cryptography.hazmat.primitives.asymmetric import ec as c_ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from tongsuopy.crypto import hashes as t_hashes
from tongsuopy.crypto import serialization as t_serialization
from tongsuopy.crypto.asymciphers import ec as t_ec

from healthroam.errors import InvalidInput

ALG_ES256 = -7
ALG_SM2_SM3 = -65537  # private use (< -65536); see the module docstring
ALGORITHM_NAMES = {ALG_ES256: "ES256", ALG_SM2_SM3: "SM2-SM3"}

HEADER_ALG = 1
HEADER_KID = 4
COSE_SIGN1_TAG = 18
CWT_TAG = 61

# Group orders, to refuse r or s outside [1, n-1] before calling into OpenSSL.
_SM2_N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
_P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_ORDERS = {ALG_ES256: _P256_N, ALG_SM2_SM3: _SM2_N}


class CoseError(InvalidInput):
    """A COSE/CBOR structure was refused; ``reason`` is a machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail, expression="credential")
        self.reason = reason


# --- strict CBOR ------------------------------------------------------------------------------


def _reject_tag(*_: Any) -> Any:
    raise ValueError("CBOR tags are not allowed here")


# Every tag cbor2 decodes itself (some have side effects or unbounded cost, e.g. a regular
# expression or a bigfloat with a huge exponent); all others go to ``tag_hook``.
_NO_TAGS = {
    t: _reject_tag
    for t in (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261)
}
_NO_TAGS.update({1004: _reject_tag, 55799: _reject_tag})


def loads_strict(data: bytes) -> Any:
    """Decode CBOR with no tags, no duplicate map keys, no indefinite lengths, depth <= 8."""
    try:
        return cbor2.loads(
            data,
            tag_hook=_reject_tag,
            semantic_decoders=_NO_TAGS,
            max_depth=8,
            allow_indefinite=False,
            allow_duplicate_keys=False,
        )
    except Exception as exc:  # cbor2 raises several types for hostile input
        raise CoseError("bad-cbor", "not valid CBOR for this format") from exc


def dumps(value: Any) -> bytes:
    """Deterministic CBOR (RFC 8949 section 4.2 core deterministic encoding)."""
    return cbor2.dumps(value, canonical=True)


# --- keys ---------------------------------------------------------------------------------------


@runtime_checkable
class Signer(Protocol):
    """Anything that signs for one key: a software key here, a key store or HSM later."""

    @property
    def key_id(self) -> str: ...

    @property
    def algorithm(self) -> int: ...

    def sign(self, data: bytes) -> bytes:
        """The raw ``r || s`` signature of ``data`` (the hash is part of the algorithm)."""
        ...


class SignatureVerifier(Protocol):
    """A public key able to check signatures of one algorithm."""

    @property
    def algorithm(self) -> int: ...

    def verify(self, signature: bytes, data: bytes) -> bool: ...


KeyLookup = Callable[[str], SignatureVerifier | None]


def _raw_to_der(signature: bytes, order: int) -> bytes | None:
    if len(signature) != 64:
        return None
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if not (0 < r < order and 0 < s < order):
        return None
    return encode_dss_signature(r, s)


def _der_to_raw(der: bytes) -> bytes:
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


_SM3_SIG = t_ec.ECDSA(t_hashes.SM3())
_ES256_SIG = c_ec.ECDSA(c_hashes.SHA256())


@dataclass(frozen=True, slots=True)
class Sm2Signer:
    """A software SM2 key (SM2-with-SM3, default user ID) held in process memory."""

    key_id: str
    private_key: t_ec.EllipticCurvePrivateKey
    algorithm: int = ALG_SM2_SM3

    @classmethod
    def generate(cls, key_id: str) -> Sm2Signer:
        return cls(key_id, t_ec.generate_private_key(t_ec.SM2()))

    def sign(self, data: bytes) -> bytes:
        return _der_to_raw(self.private_key.sign(data, _SM3_SIG))

    def public_key_bytes(self) -> bytes:
        """The uncompressed point (65 bytes, 0x04 || x || y)."""
        return bytes(
            self.private_key.public_key().public_bytes(
                t_serialization.Encoding.X962, t_serialization.PublicFormat.UncompressedPoint
            )
        )

    def verifier(self) -> Sm2Verifier:
        return Sm2Verifier.from_public_bytes(self.public_key_bytes())


@dataclass(frozen=True, slots=True)
class Sm2Verifier:
    """An SM2 public key; build it once per key (point decoding is not free)."""

    public_key: t_ec.EllipticCurvePublicKey
    algorithm: int = ALG_SM2_SM3

    @classmethod
    def from_public_bytes(cls, point: bytes) -> Sm2Verifier:
        try:
            key = t_ec.EllipticCurvePublicKey.from_encoded_point(t_ec.SM2(), bytes(point))
        except Exception as exc:
            raise InvalidInput("not an SM2 public key point", expression="publicKey") from exc
        return cls(key)

    def verify(self, signature: bytes, data: bytes) -> bool:
        der = _raw_to_der(signature, _SM2_N)
        if der is None:
            return False
        try:
            self.public_key.verify(der, data, _SM3_SIG)
        except Exception:  # tongsuopy raises its own InvalidSignature or InternalError
            return False
        return True


@dataclass(frozen=True, slots=True)
class Es256Signer:
    """A software P-256 key (ES256) held in process memory."""

    key_id: str
    private_key: c_ec.EllipticCurvePrivateKey
    algorithm: int = ALG_ES256

    @classmethod
    def generate(cls, key_id: str) -> Es256Signer:
        return cls(key_id, c_ec.generate_private_key(c_ec.SECP256R1()))

    def sign(self, data: bytes) -> bytes:
        return _der_to_raw(self.private_key.sign(data, _ES256_SIG))

    def public_key_bytes(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    def verifier(self) -> Es256Verifier:
        return Es256Verifier.from_public_bytes(self.public_key_bytes())


@dataclass(frozen=True, slots=True)
class Es256Verifier:
    """A P-256 public key (ES256)."""

    public_key: c_ec.EllipticCurvePublicKey
    algorithm: int = ALG_ES256

    @classmethod
    def from_public_bytes(cls, point: bytes) -> Es256Verifier:
        try:
            key = c_ec.EllipticCurvePublicKey.from_encoded_point(c_ec.SECP256R1(), bytes(point))
        except Exception as exc:
            raise InvalidInput("not a P-256 public key point", expression="publicKey") from exc
        return cls(key)

    def verify(self, signature: bytes, data: bytes) -> bool:
        der = _raw_to_der(signature, _P256_N)
        if der is None:
            return False
        try:
            self.public_key.verify(der, data, _ES256_SIG)
        except InvalidSignature:
            return False
        return True


def verifier_for(algorithm: int, public_key: bytes) -> SignatureVerifier:
    """A verifier for an algorithm number and an uncompressed public point."""
    if algorithm == ALG_SM2_SM3:
        return Sm2Verifier.from_public_bytes(public_key)
    if algorithm == ALG_ES256:
        return Es256Verifier.from_public_bytes(public_key)
    raise InvalidInput("unsupported signature algorithm", expression="algorithm")


# --- COSE_Sign1 -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sign1:
    """A decoded, not yet verified COSE_Sign1."""

    protected: bytes
    algorithm: int
    key_id: str
    payload: bytes
    signature: bytes

    def to_be_signed(self, external_aad: bytes = b"") -> bytes:
        return sig_structure(self.protected, self.payload, external_aad)


def sig_structure(protected: bytes, payload: bytes, external_aad: bytes = b"") -> bytes:
    """The bytes that are signed: ["Signature1", protected, external_aad, payload]."""
    return dumps(["Signature1", protected, external_aad, payload])


def sign1(payload: bytes, signer: Signer, external_aad: bytes = b"") -> bytes:
    """A tagged COSE_Sign1 carrying ``payload``; alg and kid go in the protected header."""
    protected = dumps({HEADER_ALG: signer.algorithm, HEADER_KID: signer.key_id.encode("utf-8")})
    signature = signer.sign(sig_structure(protected, payload, external_aad))
    return dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {}, payload, signature]))


def decode_sign1(data: bytes) -> Sign1:
    """Parse a (tagged or untagged) COSE_Sign1 without verifying it."""
    if data[:1] == b"\xd2":  # tag 18 in one byte; strip it so no tag reaches the decoder
        data = data[1:]
    obj = loads_strict(data)
    if not (isinstance(obj, list) and len(obj) == 4):
        raise CoseError("bad-structure", "not a COSE_Sign1 array of four items")
    protected, unprotected, payload, signature = obj
    if not (
        isinstance(protected, bytes)
        and isinstance(unprotected, dict)
        and isinstance(payload, bytes)
        and isinstance(signature, bytes)
    ):
        raise CoseError("bad-structure", "COSE_Sign1 items have the wrong types")
    if unprotected:
        raise CoseError("bad-structure", "unprotected header must be empty")
    header = loads_strict(protected) if protected else {}
    if not isinstance(header, dict):
        raise CoseError("bad-structure", "protected header is not a map")
    alg = header.get(HEADER_ALG)
    kid = header.get(HEADER_KID)
    if type(alg) is not int:
        raise CoseError("bad-structure", "protected header lacks an integer alg")
    if not isinstance(kid, bytes):
        raise CoseError("bad-structure", "protected header lacks a byte-string kid")
    if set(header) - {HEADER_ALG, HEADER_KID}:
        raise CoseError("bad-structure", "protected header has unknown parameters")
    try:
        key_id = kid.decode("utf-8")
    except UnicodeDecodeError:
        raise CoseError("bad-structure", "kid is not UTF-8") from None
    return Sign1(protected, alg, key_id, payload, signature)


def verify_sign1(message: Sign1, lookup: KeyLookup, external_aad: bytes = b"") -> None:
    """Check the signature of a decoded COSE_Sign1 with the key its kid names."""
    verifier = lookup(message.key_id)
    if verifier is None:
        raise CoseError("unknown-key-id", "signing key id is not in the trust list")
    if verifier.algorithm != message.algorithm:
        raise CoseError("algorithm-mismatch", "header algorithm differs from the key's")
    if not verifier.verify(message.signature, message.to_be_signed(external_aad)):
        raise CoseError("bad-signature", "signature does not verify")
