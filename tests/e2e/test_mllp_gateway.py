"""The real command: `healthroam gateway senders ...` and `healthroam gateway` in a process of
its own, a real MLLP client over a socket, SIGTERM to stop."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from healthroam.bootstrap import Platform
from healthroam.config import Settings
from healthroam.exchange.hl7.mllp import MllpClient
from healthroam.exchange.hl7.service import SenderService
from hl7_testkit import msa, oru

TESTS = Path(__file__).resolve().parents[1]


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHROAM_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH", "")) if p)
    env.update(
        HEALTHROAM_DATABASE_URL=settings.database_url,
        HEALTHROAM_DATA_DIR=str(settings.data_dir),
        HEALTHROAM_TOKEN_SIGNING_KEY_FILE=str(settings.signing_key_path),
        **extra,
    )
    return env


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "healthroam", "gateway", *args],
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_senders_cli_and_gateway_process(
    platform: Platform, settings: Settings, tmp_path: Path
) -> None:
    platform.institutions.add(
        code="H001", name="海南省人民医院", kind="hospital", region="460106", level=3
    )
    added = _cli(
        settings,
        "senders",
        "add",
        "--application",
        "HIS",
        "--facility",
        "H001",
        "--institution",
        "H001",
        "--description",
        "HIS vendor X",
    )
    assert added.returncode == 0, added.stderr
    assert "HIS@H001 -> H001" in added.stdout
    again = _cli(
        settings,
        "senders",
        "add",
        "--application",
        "HIS",
        "--facility",
        "H001",
        "--institution",
        "H001",
    )
    assert again.returncode == 2
    assert "already bound" in again.stderr
    listed = _cli(settings, "senders", "list", "--json")
    assert json.loads(listed.stdout) == [
        {
            "application": "HIS",
            "facility": "H001",
            "institution": "H001",
            "active": True,
            "description": "HIS vendor X",
        }
    ]

    log_path = tmp_path / "gateway.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "healthroam",
                "gateway",
                "--port",
                "0",
                "--handler",
                "hl7_testkit:build",
            ],
            env=_env(settings, HEALTHROAM_GATEWAY_WRITER_THREADS="2"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            port = None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and port is None:
                found = re.search(r"listening on 127\.0\.0\.1:(\d+)", log_path.read_text())
                if found:
                    port = int(found.group(1))
                elif process.poll() is not None:
                    raise AssertionError(log_path.read_text())
                else:
                    time.sleep(0.1)
            assert port, log_path.read_text()
            with MllpClient("127.0.0.1", port, timeout=20) as client:
                assert msa(client.send(oru("E2E-1").encode())) == ("AA", "E2E-1")
                assert msa(client.send(oru("E2E-2", facility="H999").encode())) == ("AR", "E2E-2")
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
    server_log = log_path.read_text()
    assert "hl7 gateway stopped" in server_log
    assert "refused: sender=HIS@H999 control_id=E2E-2 ack=AR error=103" in server_log
    # Personal data never reaches the log.
    assert "黎" not in server_log
    assert "阿妹" not in server_log

    removed = _cli(settings, "senders", "remove", "--application", "HIS", "--facility", "H001")
    assert removed.returncode == 0, removed.stderr
    assert SenderService(platform.db).list() == []


def test_two_gateway_processes_share_one_port(
    platform: Platform, settings: Settings, tmp_path: Path
) -> None:
    import socket
    import threading

    from hl7_testkit import bind

    bind(platform)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_path = tmp_path / "gateway.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "healthroam", "gateway", "--port", str(port),
             "--handler", "hl7_testkit:build", "--processes", "2"],
            env=_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while len(re.findall(r"listening on", log_path.read_text())) < 2:
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
            answers: list[tuple[str, str]] = []

            def send(n: int) -> None:
                with MllpClient("127.0.0.1", port, timeout=30) as client:
                    for m in range(5):
                        answers.append(msa(client.send(oru(f"MP-{n}-{m}").encode())))
                    # A repeat lands on whichever process: the stored ACK either way.
                    answers.append(msa(client.send(oru(f"MP-{n}-0").encode())))

            threads = [threading.Thread(target=send, args=(n,)) for n in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0
    assert len(answers) == 36
    assert {code for code, _ in answers} == {"AA"}
    assert log_path.read_text().count("hl7 gateway stopped") == 2
    from hl7_testkit import Running

    assert Running(platform, None).accepted == 30  # type: ignore[arg-type]
