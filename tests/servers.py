"""Running the real server in a subprocess for end-to-end and browser tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from healthroam.config import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def server_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a healthroam process that uses the test's database and keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHROAM_")}
    env.update(
        HEALTHROAM_DATABASE_URL=settings.database_url,
        HEALTHROAM_DATA_DIR=str(settings.data_dir),
        HEALTHROAM_TOKEN_SIGNING_KEY_FILE=str(settings.signing_key_path),
        **extra,
    )
    return env


@contextmanager
def running_server(
    settings: Settings, log_path: Path, *, workers: int = 1, **extra: str
) -> Iterator[str]:
    """`python -m healthroam serve` on a free port with ``workers`` processes; yields its base
    URL once /readyz answers."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = ["serve", "--port", str(port), "--workers", str(workers)]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "healthroam", *command],
            env=server_env(settings, HEALTHROAM_PUBLIC_BASE_URL=base, **extra),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            # Generous: on a busy two-core machine the server can take half a minute to start.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            else:
                raise AssertionError(log_path.read_text())
            yield base
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def bearer_token(base: str, client_id: str, secret: str) -> dict[str, str]:
    """Authorization header from the client-credentials grant."""
    token = httpx.post(
        f"{base}/auth/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, secret),
        timeout=10,
    )
    token.raise_for_status()
    return {"Authorization": f"Bearer {token.json()['access_token']}"}
