"""`healthroam clinicians` in a real process: the password comes from a file or a hidden
prompt and is never printed; bad input is one line and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from healthroam.bootstrap import Platform
from healthroam.clinicians.service import LoginRefused
from healthroam.config import Settings

PASSWORD = "a long password 1"


def _run(
    settings: Settings, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHROAM_")}
    env.update(
        HEALTHROAM_DATABASE_URL=settings.database_url,
        HEALTHROAM_DATA_DIR=str(settings.data_dir),
        HEALTHROAM_TOKEN_SIGNING_KEY_FILE=str(settings.signing_key_path),
    )
    return subprocess.run(
        [sys.executable, "-m", "healthroam", "clinicians", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_add_list_disable(platform: Platform, settings: Settings, tmp_path: Path) -> None:
    platform.institutions.add(
        code="H001", name="海南省人民医院", kind="hospital", region="460106", level=3
    )
    secret = tmp_path / "pw.txt"
    secret.write_text(PASSWORD + "\n")
    added = _run(
        settings,
        "add",
        "dr.li",
        "--institution",
        "H001",
        "--name",
        "李医生",
        "--password-file",
        str(secret),
    )
    assert added.returncode == 0, added.stderr
    assert PASSWORD not in added.stdout + added.stderr
    assert platform.clinicians.login("dr.li", PASSWORD, source_address="10.0.0.1").token

    prompted = _run(
        settings,
        "add",
        "nurse.wang",
        "--institution",
        "H001",
        "--name",
        "王护士",
        stdin=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert prompted.returncode == 0, prompted.stderr
    assert PASSWORD not in prompted.stdout + prompted.stderr
    assert platform.clinicians.login("nurse.wang", PASSWORD, source_address="10.0.0.1").token

    again = _run(
        settings,
        "add",
        "dr.li",
        "--institution",
        "H001",
        "--name",
        "李医生",
        "--password-file",
        str(secret),
    )
    assert again.returncode == 2
    assert "already exists" in again.stderr
    assert "Traceback" not in again.stderr

    listed = _run(settings, "list")
    assert "dr.li" in listed.stdout
    assert "nurse.wang" in listed.stdout
    assert PASSWORD not in listed.stdout

    assert _run(settings, "disable", "dr.li").returncode == 0
    with pytest.raises(LoginRefused):
        platform.clinicians.login("dr.li", PASSWORD, source_address="10.0.0.1")
    missing = _run(settings, "disable", "nobody")
    assert missing.returncode == 2
    assert "no clinician" in missing.stderr
