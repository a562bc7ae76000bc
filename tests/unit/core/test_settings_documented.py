"""Every setting has a default, help text and a line in docs/settings.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from healthroam.config import Settings

DOC = Path(__file__).resolve().parents[3] / "docs" / "settings.md"


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_setting_has_help_and_is_documented(name: str) -> None:
    field = Settings.model_fields[name]
    assert field.description, f"{name} has no help text"
    assert not field.is_required(), f"{name} has no default"
    assert f"`HEALTHROAM_{name.upper()}`" in DOC.read_text(), f"{name} missing from {DOC.name}"


def test_environment_and_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "healthroam.toml"
    config.write_text('port = 9001\nlog_level = "DEBUG"\n')
    monkeypatch.setenv("HEALTHROAM_CONFIG", str(config))
    monkeypatch.setenv("HEALTHROAM_PORT", "9002")
    settings = Settings()
    assert settings.port == 9002  # the environment beats the file
    assert settings.log_level == "DEBUG"


def test_unknown_setting_in_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "healthroam.toml"
    config.write_text("prot = 9001\n")
    monkeypatch.setenv("HEALTHROAM_CONFIG", str(config))
    with pytest.raises(ValueError, match="prot"):
        Settings()
