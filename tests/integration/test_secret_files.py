"""Secret files created on first start by several processes at once (decision 0048): every
process ends up with the same key, and the file is never seen half written."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from healthroam.keys.sealing import load_or_create_kek
from healthroam.secret_files import write_once
from healthroam.security.tokens import load_or_create_signing_key

# One server process's first start: load (or create) both files, print what it holds.
_START = """
import sys
from pathlib import Path
from cryptography.hazmat.primitives import serialization
from healthroam.keys.sealing import load_or_create_kek
from healthroam.security.tokens import load_or_create_signing_key
key = load_or_create_signing_key(Path(sys.argv[1]))
public = key.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
)
print(public.hex(), load_or_create_kek(Path(sys.argv[2])).hex())
"""


def _public_key(path: Path) -> bytes:
    key = load_or_create_signing_key(path)
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_processes_starting_together_share_one_signing_key_and_one_kek(tmp_path: Path) -> None:
    # Separate interpreters started together, like Uvicorn's worker processes (not a
    # multiprocessing pool: a pool whose worker dies waits for its lost task for ever).
    token, kek = tmp_path / "keys" / "token.pem", tmp_path / "keys" / "kek.bin"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    starts = [
        subprocess.Popen(
            [sys.executable, "-c", _START, str(token), str(kek)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for _ in range(8)
    ]
    held = []
    for start in starts:
        out, errors = start.communicate(timeout=120)
        assert start.returncode == 0, errors
        held.append(tuple(out.split()))
    assert len(set(held)) == 1
    assert bytes.fromhex(held[0][0]) == _public_key(token)
    assert bytes.fromhex(held[0][1]) == load_or_create_kek(kek)
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["kek.bin", "token.pem"]


def test_write_once_keeps_the_first_content_private(tmp_path: Path) -> None:
    path = tmp_path / "secret.bin"
    assert write_once(path, b"first") == b"first"
    assert write_once(path, b"second") == b"first"
    assert path.read_bytes() == b"first"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret.bin"]  # no temporary left behind
