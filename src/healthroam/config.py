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

from pydantic import Field, SecretStr
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
    audit_seal_interval_ms: int = Field(
        default=200,
        ge=0,
        description="How often the API server seals waiting audit entries into the hash chain "
        "(milliseconds; 0 turns the background sealer off: `audit verify` and audit searches "
        "still seal first).",
    )
    # --- registry
    registry_steward_agencies: str = Field(
        default="HNWJW,HNGXT",
        description="Comma-separated codes of the agencies that co-own the population registry; "
        "their clients (scope `system/MasterPerson.*`, naming the person in `X-End-User`) act "
        "as data stewards.",
    )
    registry_candidate_limit: int = Field(
        default=500,
        ge=10,
        description="Most source records the real-time matcher scores for one new record "
        "(those sharing a blocking key).",
    )
    registry_matching_file: Path | None = Field(
        default=None,
        description="Fellegi-Sunter model (m/u probabilities, thresholds) to match with. "
        "Default: the trained file shipped in the package (`registry/data/matching.json`).",
    )
    default_purpose_of_use: str = Field(
        default="TREAT",
        description="Purpose of use recorded in the audit trail when a request states none "
        "(HL7 v3 PurposeOfUse code).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Level of application logs (which never carry personal data)."
    )

    # --- keys and cards (health card issue: cards/, keys/) ---------------------------------
    card_keystore_passphrase: SecretStr | None = Field(
        default=None,
        description="Passphrase that encrypts card keys at rest (scrypt -> AES-256-GCM). When "
        "unset, a random key-encryption key file is used instead (`card_keystore_kek_file`).",
    )
    card_keystore_kek_file: Path | None = Field(
        default=None,
        description="File holding the 32-byte key-encryption key of the software keystore. "
        "Default: `<data_dir>/keys/card-kek.bin`, created (mode 0600) on first use.",
    )
    card_key_backend: Literal["software", "pkcs11"] = Field(
        default="software",
        description="Where new card signing keys live: `software` (encrypted in the database) "
        "or `pkcs11` (an HSM through a PKCS#11 module; ES256 only with SoftHSM2).",
    )
    card_signing_algorithm: Literal["SM2", "ES256"] = Field(
        default="SM2",
        description="Algorithm of new root, issuing and trust-list keys: `SM2` (SM2 with SM3) "
        "or `ES256` (P-256).",
    )
    card_pkcs11_module: Path = Field(
        default=Path("/usr/lib/softhsm/libsofthsm2.so"),
        description="PKCS#11 module (shared library) of the HSM, for `card_key_backend=pkcs11`.",
    )
    card_pkcs11_token_label: str = Field(
        default="healthroam", description="Label of the PKCS#11 token that holds card keys."
    )
    card_pkcs11_pin: SecretStr | None = Field(
        default=None, description="User PIN of the PKCS#11 token."
    )
    card_key_rotation_lead_seconds: int = Field(
        default=86_400,
        ge=0,
        description="How long a rotated issuing or QR key is published before it starts "
        "signing, so terminals holding a cached trust list already know it.",
    )
    card_trust_list_max_age_seconds: int = Field(
        default=7 * 86_400,
        ge=60,
        description="Maximum age written into the trust list: terminals refuse offline "
        "credentials once their copy is older than this.",
    )
    card_trust_list_refresh_seconds: int = Field(
        default=300,
        ge=0,
        description="How long the server reuses a signed trust list before signing a new one "
        "(card status changes reach terminals within this time).",
    )
    card_validity_years: int = Field(
        default=10, ge=1, le=30, description="Validity of resident health cards, in years."
    )
    card_temporary_validity_days: int = Field(
        default=90,
        ge=1,
        description="Validity of temporary cards (visitors without a national ID), in days.",
    )
    card_credential_validity_days: int = Field(
        default=365,
        ge=1,
        description="Validity of a signed offline emergency credential, in days (never past "
        "the card's own validity).",
    )
    card_dynamic_code_window_seconds: int = Field(
        default=60, ge=5, le=600, description="How long a dynamic QR code is accepted."
    )
    card_issuer_code: str = Field(
        default="HNWJW",
        pattern=r"^[0-9A-Z]{1,20}$",
        description="Code of the issuing organisation written into static QR codes and bulk "
        "issued cards (1-20 of [0-9A-Z]).",
    )
    card_default_region: str = Field(
        default="460000",
        pattern=r"^[0-9]{6}$",
        description="GB/T 2260 code used for a person with no region of residence, and the "
        "region of the province-wide issuing key.",
    )
    card_issue_workers: int = Field(
        default=2,
        ge=0,
        le=64,
        description="Processes that sign credentials during bulk issuance (0: sign in the "
        "main process).",
    )
    card_issue_batch_size: int = Field(
        default=2_000,
        ge=1,
        le=100_000,
        description="Cards per bulk-issuance batch (one transaction and one resume point each).",
    )
    card_use_log_flush_ms: int = Field(
        default=2,
        ge=0,
        le=1_000,
        description="Group-commit window of card verifications: after the first waiting use, "
        "wait this many milliseconds before writing the batch (spent codes, use-log rows and "
        "audit records in one transaction). 0: no wait, a batch is whatever arrived while the "
        "previous one was being written. A verification answers only after its batch is "
        "committed.",
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
    def steward_agencies(self) -> tuple[str, ...]:
        return tuple(c.strip() for c in self.registry_steward_agencies.split(",") if c.strip())

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
