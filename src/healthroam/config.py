"""Typed settings, read once from ``HEALTHROAM_*`` variables and an optional TOML file.

Precedence (highest first): explicit keyword arguments, environment variables, the TOML file
named by ``HEALTHROAM_CONFIG``, then the defaults below. Every field carries its help text in
``description``; ``docs/settings.md`` must list each one (a test checks).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_FILE_VARIABLE = "HEALTHROAM_CONFIG"


class Settings(BaseSettings):
    """All of healthroam's settings. Construct through :func:`get_settings` in applications."""

    model_config = SettingsConfigDict(
        env_prefix="HEALTHROAM_", extra="forbid", frozen=True, validate_default=True
    )

    database_url: str = Field(
        default="sqlite:///./var/healthroam.db",
        description="SQLAlchemy URL of the database: `sqlite:///path` (embedded, the default) "
        "or `postgresql+psycopg://user@host:5432/dbname`.",
    )
    database_pool_size: int = Field(
        default=10, ge=1, description="Connections kept open per process (PostgreSQL only)."
    )
    sqlite_busy_timeout_ms: int = Field(
        default=30_000,
        ge=0,
        description="How long an SQLite writer waits for the lock before failing (milliseconds).",
    )
    data_dir: Path = Field(
        default=Path("./var"),
        description="Folder for local state: the SQLite file, keys, exports, resume files.",
    )
    host: str = Field(default="127.0.0.1", description="Address `healthroam serve` listens on.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port `healthroam serve` uses.")
    public_base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="The platform's external base URL; the token endpoint's audience for "
        "`private_key_jwt` client assertions is this plus `/auth/token`.",
    )
    token_issuer: str = Field(
        default="urn:healthroam:auth",
        description="`iss` claim of the access tokens this platform signs.",
    )
    token_ttl_seconds: int = Field(
        default=300, ge=30, le=3600, description="Lifetime of an access token in seconds."
    )
    token_signing_key_file: Path | None = Field(
        default=None,
        description="PEM file of the P-256 key that signs access tokens (ES256). Default: "
        "`<data_dir>/keys/token-signing.pem`, created on first start.",
    )
    client_assertion_max_lifetime_seconds: int = Field(
        default=300,
        ge=30,
        description="Longest `exp - now` accepted in a `private_key_jwt` client assertion "
        "(SMART Backend Services asks for at most five minutes).",
    )
    default_purpose_of_use: str = Field(
        default="TREAT",
        description="Purpose of use recorded in the audit trail when a request states none "
        "(HL7 v3 PurposeOfUse code).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Level of application logs (which never carry personal data)."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_VARIABLE)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @property
    def signing_key_path(self) -> Path:
        return self.token_signing_key_file or self.data_dir / "keys" / "token-signing.pem"

    @property
    def token_endpoint(self) -> str:
        return self.public_base_url.rstrip("/") + "/auth/token"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
