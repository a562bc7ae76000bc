"""Where key material lives: the software keystore or an HSM (PKCS#11).

A backend makes keys and hands out :class:`~healthroam.cards.cose.Signer` objects; the rest of
healthroam only ever sees the ``Signer`` protocol (``key_id``, ``algorithm``, ``sign``), so a
vendor SM2/SM4 HSM plugs in by implementing :class:`KeyBackend` (see
docs/decisions/0007-key-management.md).

:class:`SignerSpec` is a picklable recipe for a signer, so bulk-issuance worker processes can
open their own signer (a software key, or their own HSM session).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec as c_ec
from tongsuopy.crypto.asymciphers import ec as t_ec

from healthroam.cards.cose import Es256Signer, Signer, Sm2Signer
from healthroam.errors import InvalidInput
from healthroam.keys.model import SIGNING_ALGORITHMS, SYMMETRIC_ALGORITHM


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    """A new key: its public point (signing keys) and, for software keys, the secret."""

    public_key: bytes | None
    secret: bytes | None  # software: 32-byte private scalar or 16-byte SM4 key; HSM: None


@dataclass(frozen=True, slots=True)
class Pkcs11Config:
    module: str
    token_label: str
    pin: str


@dataclass(frozen=True, slots=True)
class SignerSpec:
    """Everything needed to open a signer in another process."""

    backend: str
    key_id: str
    algorithm: str
    secret: bytes | None = None
    pkcs11: Pkcs11Config | None = None
    public_key: bytes | None = None  # lets an HSM find its key among same-labelled ones

    def __repr__(self) -> str:  # never print the secret
        return f"SignerSpec({self.backend}, {self.key_id}, {self.algorithm})"


class KeyBackend(Protocol):
    """What a key store must do. Software and PKCS#11 implement it; so can a vendor HSM."""

    name: str

    def generate(self, key_id: str, algorithm: str) -> GeneratedKey: ...

    def signer_spec(
        self, key_id: str, algorithm: str, secret: bytes | None, public_key: bytes | None
    ) -> SignerSpec: ...


def software_signer(key_id: str, algorithm: str, secret: bytes) -> Signer:
    value = int.from_bytes(secret, "big")
    if algorithm == "SM2":
        return Sm2Signer(key_id, t_ec.derive_private_key(value, t_ec.SM2()))
    if algorithm == "ES256":
        return Es256Signer(key_id, c_ec.derive_private_key(value, c_ec.SECP256R1()))
    raise InvalidInput(f"{algorithm} is not a signing algorithm", expression="algorithm")


class SoftwareBackend:
    """Keys generated in process; the keystore seals their secrets before storing them."""

    name = "software"

    def generate(self, key_id: str, algorithm: str) -> GeneratedKey:
        if algorithm == SYMMETRIC_ALGORITHM:
            return GeneratedKey(None, secrets.token_bytes(16))
        if algorithm == "SM2":
            sm2 = Sm2Signer.generate(key_id)
            value = sm2.private_key.private_numbers().private_value
            return GeneratedKey(sm2.public_key_bytes(), value.to_bytes(32, "big"))
        if algorithm == "ES256":
            es = Es256Signer.generate(key_id)
            value = es.private_key.private_numbers().private_value
            return GeneratedKey(es.public_key_bytes(), value.to_bytes(32, "big"))
        raise InvalidInput(f"unknown key algorithm {algorithm}", expression="algorithm")

    def signer_spec(
        self, key_id: str, algorithm: str, secret: bytes | None, public_key: bytes | None = None
    ) -> SignerSpec:
        if secret is None or algorithm not in SIGNING_ALGORITHMS:
            raise InvalidInput(f"key {key_id} cannot sign", expression="keyId")
        return SignerSpec(self.name, key_id, algorithm, secret=secret)


def open_signer(spec: SignerSpec) -> Signer:
    """A live signer from a spec (in this process)."""
    if spec.backend == "software":
        if spec.secret is None:
            raise InvalidInput(f"key {spec.key_id} has no secret", expression="keyId")
        return software_signer(spec.key_id, spec.algorithm, spec.secret)
    if spec.backend == "pkcs11":
        from healthroam.keys.pkcs11 import Pkcs11Backend

        if spec.pkcs11 is None:
            raise InvalidInput("PKCS#11 signer spec lacks its token", expression="keyId")
        return Pkcs11Backend(spec.pkcs11).signer(spec.key_id, spec.algorithm, spec.public_key)
    raise InvalidInput(f"unknown key backend {spec.backend}", expression="backend")
