"""Secret files created on first start (the token signing key, the card key-encryption key),
safely when several processes start at once (``healthroam serve --workers N``, decision 0048).

The file appears complete or not at all: the content is written to a private temporary file
beside it, which is then hard-linked to the final name (``link`` fails if the name exists). The
process that loses the race reads the winner's file, so every process uses the same key.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_once(path: Path, data: bytes) -> bytes:
    """Create ``path`` (mode 0600) holding ``data`` unless it exists; return the content the
    file holds afterwards (``data``, or what another process wrote first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return path.read_bytes()
        return data
    finally:
        os.unlink(temporary)
