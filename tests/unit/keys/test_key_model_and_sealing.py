from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from healthroam.cards.cose import verifier_for
from healthroam.errors import InvalidInput
from healthroam.keys.backends import SoftwareBackend, open_signer
from healthroam.keys.model import (
    KeyPurpose,
    KeyRecord,
    current,
    key_id_for,
    region_chain,
    rotation_times,
)
from healthroam.keys.sealing import KeySealer, KeystoreLocked, load_or_create_kek

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def record(key_id: str, start: int, end: int | None, version: int = 1) -> KeyRecord:
    return KeyRecord(
        key_id, KeyPurpose.ISSUING, "SM2", "460000", version, "software", b"", start, end, None, NOW
    )


def test_key_ids_fit_qr_and_cose_key_ids() -> None:
    assert key_id_for(KeyPurpose.QR, 3) == "QR0003"
    assert key_id_for(KeyPurpose.ISSUING, 123456) == "IS123456"


def test_region_chain_falls_back_to_prefecture_province_default() -> None:
    assert region_chain("460106", "460000") == ["460106", "460100", "460000"]
    assert region_chain("110105", "460000") == ["110105", "110100", "110000", "460000"]


def test_current_is_the_newest_key_in_use_and_rotation_overlaps() -> None:
    start, publish_until = rotation_times(1000, lead=100, keep_publishing=5000)
    assert (start, publish_until) == (1100, 6100)
    old, new = record("IS0001", 0, start), record("IS0002", start, None, 2)
    assert current([old, new], 1050) is old  # the successor is published but not signing
    assert current([old, new], 1100) is new
    assert old.published_at(1100)
    assert current([], 5) is None


def test_seal_round_trip_and_binding(tmp_path: Path) -> None:
    kek = load_or_create_kek(tmp_path / "kek.bin")
    assert load_or_create_kek(tmp_path / "kek.bin") == kek
    assert (tmp_path / "kek.bin").stat().st_mode & 0o777 == 0o600
    sealer = KeySealer(kek=kek)
    blob = sealer.seal(b"secret key bytes", b"IS0001|issuing|SM2")
    assert b"secret key bytes" not in blob
    assert sealer.open(blob, b"IS0001|issuing|SM2") == b"secret key bytes"
    with pytest.raises(KeystoreLocked):  # moved to another key's row
        sealer.open(blob, b"IS0002|issuing|SM2")
    with pytest.raises(KeystoreLocked, match="wrong passphrase or key-encryption key"):
        KeySealer(kek=bytes(32)).open(blob, b"IS0001|issuing|SM2")


def test_passphrase_sealing() -> None:
    sealer = KeySealer(passphrase="correct horse battery staple")
    blob = sealer.seal(b"k" * 16, b"QR0001|qr|SM4")
    other = KeySealer(passphrase="correct horse battery staple")  # a new process
    assert other.open(blob, b"QR0001|qr|SM4") == b"k" * 16
    with pytest.raises(KeystoreLocked):
        KeySealer(passphrase="wrong horse battery staple").open(blob, b"QR0001|qr|SM4")
    with pytest.raises(KeystoreLocked, match="passphrase"):
        KeySealer(kek=bytes(32)).open(blob, b"QR0001|qr|SM4")


def test_short_passphrase_is_refused() -> None:
    with pytest.raises(InvalidInput, match="12 characters"):
        KeySealer(passphrase="short")


@pytest.mark.parametrize("algorithm", ["SM2", "ES256"])
def test_software_keys_sign_after_a_round_trip_through_their_secret(algorithm: str) -> None:
    backend = SoftwareBackend()
    generated = backend.generate("IS0009", algorithm)
    assert generated.public_key is not None
    spec = backend.signer_spec("IS0009", algorithm, generated.secret)
    assert generated.secret is not None
    assert generated.secret.hex() not in repr(spec)
    signer = open_signer(spec)
    verifier = verifier_for(signer.algorithm, generated.public_key)
    assert verifier.verify(signer.sign(b"data"), b"data")
