"""PKCS#11 key backend (HSM), tested against Debian's SoftHSM2.

Signing keys are EC P-256 key pairs generated inside the token (``CKA_SENSITIVE``, not
extractable), labelled with their key id and given a random ``CKA_ID``; the signer finds its
private key through the public key whose point matches the one on record (so a token shared by
several databases, or reused after a reset, never signs with the wrong key). Signing hashes
with SHA-256 in process and asks the token for a raw ``CKM_ECDSA`` signature, which PKCS#11
returns as ``r || s`` -- exactly the COSE form. SoftHSM2 has no SM2 or SM4; a vendor HSM that
has them (``CKM_SM2_SM3`` and friends are vendor-defined) plugs in as its own
:class:`~healthroam.keys.backends.KeyBackend`.

One session per process and token, shared by the signers under a lock (PKCS#11 sessions are
not safe to use from two threads at once).
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes

from healthroam.cards.cose import ALG_ES256
from healthroam.errors import InvalidInput
from healthroam.keys.backends import GeneratedKey, Pkcs11Config, SignerSpec

_SESSIONS: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()


def _session(config: Pkcs11Config) -> Any:
    import pkcs11

    with _LOCK:
        session = _SESSIONS.get((config.module, config.token_label))
        if session is None:
            try:
                lib = pkcs11.lib(config.module)
                token = lib.get_token(token_label=config.token_label)
                session = token.open(user_pin=config.pin, rw=True)
            except (pkcs11.PKCS11Error, RuntimeError, OSError) as exc:
                raise InvalidInput(
                    f"cannot open PKCS#11 token '{config.token_label}' "
                    f"({type(exc).__name__}); check the module, token label and PIN",
                    expression="pkcs11",
                ) from None
            _SESSIONS[(config.module, config.token_label)] = session
        return session


def close_sessions() -> None:
    """Close this process's PKCS#11 sessions (tests, shutdown)."""
    with _LOCK:
        for session in _SESSIONS.values():
            session.close()
        _SESSIONS.clear()


@dataclass
class Pkcs11Signer:
    """An ES256 signer whose private key never leaves the token."""

    key_id: str
    private_key: Any = field(repr=False)
    algorithm: int = ALG_ES256

    def sign(self, data: bytes) -> bytes:
        from pkcs11 import Mechanism

        digest = hashes.Hash(hashes.SHA256())
        digest.update(data)
        with _LOCK:
            signature: bytes = self.private_key.sign(digest.finalize(), mechanism=Mechanism.ECDSA)
        return signature


class Pkcs11Backend:
    name = "pkcs11"

    def __init__(self, config: Pkcs11Config) -> None:
        self.config = config

    def generate(self, key_id: str, algorithm: str) -> GeneratedKey:
        from pkcs11 import Attribute, KeyType
        from pkcs11.util.ec import encode_named_curve_parameters

        if algorithm != "ES256":
            raise InvalidInput(
                f"the PKCS#11 backend makes ES256 keys only, not {algorithm} (SoftHSM2 has no "
                "SM2); set card_signing_algorithm=ES256 or plug in a vendor backend",
                expression="algorithm",
            )
        session = _session(self.config)
        with _LOCK:
            params = session.create_domain_parameters(
                KeyType.EC,
                {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
                local=True,
            )
            public, _private = params.generate_keypair(
                store=True,
                label=key_id,
                id=secrets.token_bytes(16),
                private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
            )
            point = bytes(public[Attribute.EC_POINT])
        return GeneratedKey(_unwrap_point(point), None)

    def signer_spec(
        self, key_id: str, algorithm: str, secret: bytes | None, public_key: bytes | None = None
    ) -> SignerSpec:
        return SignerSpec(self.name, key_id, algorithm, pkcs11=self.config, public_key=public_key)

    def signer(self, key_id: str, algorithm: str, public_key: bytes | None = None) -> Pkcs11Signer:
        from pkcs11 import Attribute, ObjectClass
        from pkcs11.exceptions import NoSuchKey

        if algorithm != "ES256":
            raise InvalidInput("PKCS#11 keys are ES256", expression="algorithm")
        session = _session(self.config)
        with _LOCK:
            key_ids = [
                bytes(obj[Attribute.ID])
                for obj in session.get_objects(
                    {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: key_id}
                )
                if public_key is None or _unwrap_point(bytes(obj[Attribute.EC_POINT])) == public_key
            ]
            if len(key_ids) != 1:
                raise InvalidInput(
                    f"key {key_id} is not in PKCS#11 token '{self.config.token_label}'"
                    if not key_ids
                    else f"key {key_id} is ambiguous in PKCS#11 token '{self.config.token_label}'",
                    expression="keyId",
                )
            try:
                key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=key_ids[0])
            except NoSuchKey:
                raise InvalidInput(
                    f"key {key_id} has no private half in the token", expression="keyId"
                ) from None
        return Pkcs11Signer(key_id, key)


def _unwrap_point(value: bytes) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING around the uncompressed point (65 bytes)."""
    if len(value) == 67 and value[0] == 0x04 and value[1] == 65:
        return value[2:]
    if len(value) == 65 and value[0] == 0x04:
        return value
    raise InvalidInput("token returned an unexpected EC point", expression="pkcs11")
