"""Encryption at rest of software keys: AES-256-GCM under a key-encryption key (KEK).

The KEK comes from a passphrase (scrypt, n=2^15, r=8, p=1, a random salt per sealing
process) or from a 32-byte key file. A sealed blob is::

    b"HK1" | mode (0 file, 1 scrypt) | salt (16) | nonce (12) | ciphertext + tag

and its associated data names the key (``key_id|purpose|algorithm``), so a blob cannot be
moved to another key's row.
"""

from __future__ import annotations

import secrets
import threading
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from healthroam.errors import InvalidInput
from healthroam.secret_files import write_once

MAGIC = b"HK1"
MODE_FILE, MODE_SCRYPT = 0, 1
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1


class KeystoreLocked(InvalidInput):
    """The keystore cannot be opened with the configured passphrase or KEK file."""


def load_or_create_kek(path: Path) -> bytes:
    """The 32-byte KEK in ``path``, created with mode 0600 if the file does not exist."""
    if path.exists():
        data = path.read_bytes()
        if len(data) != 32:
            raise KeystoreLocked(
                "key-encryption key file must hold exactly 32 bytes", expression="kekFile"
            )
        return data
    # Several server processes may get here at once: one file wins, every process reads it.
    data = write_once(path, secrets.token_bytes(32))
    if len(data) != 32:
        raise KeystoreLocked(
            "key-encryption key file must hold exactly 32 bytes", expression="kekFile"
        )
    return data


class KeySealer:
    """Seals and opens key material with one configured KEK source."""

    def __init__(self, *, passphrase: str | None = None, kek: bytes | None = None) -> None:
        if (passphrase is None) == (kek is None):
            raise InvalidInput("give exactly one of passphrase and kek", expression="keystore")
        if kek is not None and len(kek) != 32:
            raise InvalidInput("key-encryption key must be 32 bytes", expression="keystore")
        if passphrase is not None and len(passphrase) < 12:
            raise InvalidInput(
                "keystore passphrase must be at least 12 characters", expression="passphrase"
            )
        self._passphrase = passphrase.encode("utf-8") if passphrase is not None else None
        self._kek = kek
        self._salt = secrets.token_bytes(16) if passphrase is not None else bytes(16)
        self._derived: dict[bytes, bytes] = {}
        self._lock = threading.Lock()

    def _key(self, mode: int, salt: bytes) -> bytes:
        if mode == MODE_FILE:
            if self._kek is None:
                raise KeystoreLocked(
                    "key was sealed with a KEK file but a passphrase is configured",
                    expression="keystore",
                )
            return self._kek
        if self._passphrase is None:
            raise KeystoreLocked(
                "key was sealed with a passphrase but a KEK file is configured",
                expression="keystore",
            )
        with self._lock:
            found = self._derived.get(salt)
            if found is None:
                kdf = Scrypt(salt=salt, length=32, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
                found = self._derived[salt] = kdf.derive(self._passphrase)
        return found

    def seal(self, secret: bytes, associated: bytes) -> bytes:
        mode = MODE_FILE if self._kek is not None else MODE_SCRYPT
        nonce = secrets.token_bytes(12)
        ciphertext = AESGCM(self._key(mode, self._salt)).encrypt(nonce, secret, associated)
        return MAGIC + bytes((mode,)) + self._salt + nonce + ciphertext

    def open(self, blob: bytes, associated: bytes) -> bytes:
        if len(blob) < 3 + 1 + 16 + 12 + 16 or blob[:3] != MAGIC or blob[3] not in (0, 1):
            raise KeystoreLocked("sealed key has an unknown format", expression="keystore")
        mode, salt, nonce, ciphertext = blob[3], blob[4:20], blob[20:32], blob[32:]
        try:
            return AESGCM(self._key(mode, salt)).decrypt(nonce, ciphertext, associated)
        except InvalidTag:
            raise KeystoreLocked(
                "card keystore cannot be opened: wrong passphrase or key-encryption key file",
                expression="keystore",
            ) from None
