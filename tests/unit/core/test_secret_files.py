"""Secret files created on first start by several processes at once (decision 0048): every
process ends up with the same key, and the file is never seen half written."""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from healthroam.keys.sealing import load_or_create_kek
from healthroam.secret_files import write_once
from healthroam.security.tokens import load_or_create_signing_key


def _public_key(path: str) -> bytes:
    key = load_or_create_signing_key(Path(path))
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _kek(path: str) -> bytes:
    return load_or_create_kek(Path(path))


def test_processes_starting_together_share_one_signing_key_and_one_kek(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")  # like Uvicorn's worker processes
    with context.Pool(4) as pool:
        keys = pool.map(_public_key, [str(tmp_path / "keys" / "token.pem")] * 8)
        keks = pool.map(_kek, [str(tmp_path / "keys" / "kek.bin")] * 8)
    assert len(set(keys)) == 1
    assert len(set(keks)) == 1
    assert keys[0] == _public_key(str(tmp_path / "keys" / "token.pem"))
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["kek.bin", "token.pem"]


def test_write_once_keeps_the_first_content_private(tmp_path: Path) -> None:
    path = tmp_path / "secret.bin"
    assert write_once(path, b"first") == b"first"
    assert write_once(path, b"second") == b"first"
    assert path.read_bytes() == b"first"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret.bin"]  # no temporary left behind
