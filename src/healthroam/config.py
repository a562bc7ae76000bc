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
        default=20,
        ge=1,
        description="Connections kept open per process (PostgreSQL only); as many again may "
        "open for a burst and are closed when returned.",
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
    server_workers: int | None = Field(
        default=None,
        ge=1,
        description="Server processes `healthroam serve` starts on PostgreSQL (`--workers` "
        "overrides it). Default: the machine's CPU count. SQLite always serves from one "
        "process (decision 0048).",
    )
    server_leader_poll_ms: int = Field(
        default=1000,
        ge=50,
        description="How often each server process tries to become the leader that runs the "
        "once-only background jobs (the audit sealer), and the leader checks its database "
        "session (milliseconds; PostgreSQL only). A dead leader is replaced within about this.",
    )
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
    sqlite_statistics_interval_seconds: float = Field(
        default=300,
        ge=0,
        description="SQLite only: how often the API server checks whether the FHIR store grew or "
        "shrank by a tenth since its planner statistics were taken, and refreshes them (a sampled "
        "`ANALYZE`; also at start-up). Without them SQLite plans searches on common codes "
        "quadratically. 0 turns it off. PostgreSQL keeps its own (autovacuum).",
    )
    # --- FHIR Bulk Data export
    bulk_export_interval_ms: int = Field(
        default=500,
        ge=10,
        description="How often the API server's export worker looks for accepted `$export` "
        "jobs, or jobs whose runner died (milliseconds; a kick-off also wakes it at once). "
        "An idle look is one read, no write.",
    )
    bulk_export_file_max_resources: int = Field(
        default=100_000,
        ge=1,
        description="Resources per NDJSON output file of an `$export` (larger types are split "
        "into several files).",
    )
    bulk_import_max_mb: int = Field(
        default=512,
        ge=1,
        description="Largest NDJSON body `POST /fhir/$import` accepts, in MiB (larger loads: "
        "split them, or run `healthroam records import` on the server).",
    )
    bulk_import_processes: int = Field(
        default=2,
        ge=0,
        le=64,
        description="Worker processes that parse, validate and index the lines of an "
        "`$import` (or `healthroam records import`) larger than one chunk of 1,000 lines "
        "(0: all in the server process).",
    )
    bulk_export_retention_hours: int = Field(
        default=24,
        ge=1,
        description="How long the files of a finished `$export` stay downloadable before they "
        "are deleted (its status URL then answers 410).",
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
    card_verify_fast_path: bool = Field(
        default=True,
        description="Answer `POST /cards/verify` in a lean ASGI handler ahead of the FastAPI "
        "routing (same checks, answers and errors; requests it cannot take as is go to the "
        "route). false: every verification goes through the FastAPI route.",
    )
    fhir_read_fast_path: bool = Field(
        default=True,
        description="Answer the FHIR read (`GET /fhir/<type>/<id>`) and type search "
        "(`GET /fhir/<type>?...`) in a lean ASGI handler ahead of the FastAPI routing (same "
        "checks, audit, answers and errors; other requests go to the routes). false: they go "
        "through the FastAPI routes.",
    )
    fhir_search_shapes: bool = Field(
        default=True,
        description="On PostgreSQL, keep the SQL of each search shape's page statement (the "
        "type, parameters, modifiers, value forms, cursor and count of a default-order search "
        "without a record-gate condition) per process and bind only the values of later "
        "searches of that shape (decision 0054; same answers). false: every search builds its "
        "statement.",
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

    # --- result recognition (exchange/recognition) ------------------------------------------
    recognition_table_file: Path | None = Field(
        default=None,
        description="TOML file merged over the shipped result-recognition table "
        "(`exchange/recognition/data/recognition.toml`): validity windows, recognition rules "
        "and local code mappings. Tests replace by `id`; see docs/result-recognition.md.",
    )
    recognition_avoided_window_hours: int = Field(
        default=72,
        ge=1,
        le=24 * 90,
        description="An alerted order counts as an avoided duplicate when, within this many "
        "hours of the alert, it is revoked, completed citing the existing result, or "
        "acknowledged with `use-existing`.",
    )
    # --- clinician page (clinicians/, api/web.py) -------------------------------------------
    clinician_scopes: str = Field(
        default="user/*.rs user/Encounter.cu user/Card.r",
        description="SMART scopes a signed-in clinician acts with (their institution's "
        "principal, the clinician named as end user). Access to a patient still needs a care "
        "relationship or break-the-glass.",
    )
    clinician_session_idle_minutes: int = Field(
        default=30,
        ge=1,
        le=24 * 60,
        description="A clinician-page session ends after this many minutes without a request.",
    )
    clinician_session_max_hours: int = Field(
        default=12,
        ge=1,
        le=72,
        description="A clinician-page session ends this many hours after sign-in, however "
        "active (one shift).",
    )
    clinician_login_max_failures: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Wrong passwords in a row that lock a clinician account.",
    )
    clinician_lockout_minutes: int = Field(
        default=15, ge=1, description="How long a locked clinician account stays locked."
    )
    clinician_login_max_failures_per_address: int = Field(
        default=30,
        ge=1,
        description="Failed sign-ins from one source address, within the lockout time, after "
        "which that address may not try again until the oldest failure ages out (counted in "
        "the database, for every server process together).",
    )

    # --- cross-institution care (exchange/care/) ---------------------------------------------
    care_relationship_hours: float = Field(
        default=72.0,
        gt=0,
        le=24 * 365,
        description="How long a card check-in (or an active encounter seen at a read) gives "
        "the institution a care relationship with the resident, in hours.",
    )
    care_break_glass_overrides_consent: bool = Field(
        default=True,
        description="Whether break-the-glass shows other institutions' data even when the "
        "resident's consent refuses sharing with the caller (always audited and flagged for "
        "review as a consent override).",
    )
    # --- HL7 v2 gateway (exchange/hl7/) -------------------------------------------------------
    gateway_host: str = Field(
        default="127.0.0.1",
        description="Address `healthroam gateway` (the HL7 v2 MLLP listener) binds to; "
        "`0.0.0.0` for every interface.",
    )
    gateway_port: int = Field(
        default=2575, ge=0, le=65535, description="TCP port of the MLLP listener (0: any free)."
    )
    gateway_tls_cert_file: Path | None = Field(
        default=None,
        description="PEM certificate (chain) of the MLLP listener; with `gateway_tls_key_file` "
        "the listener speaks MLLP over TLS only.",
    )
    gateway_tls_key_file: Path | None = Field(
        default=None, description="PEM private key of `gateway_tls_cert_file`."
    )
    gateway_tls_client_ca_file: Path | None = Field(
        default=None,
        description="PEM bundle of CAs whose client certificates the TLS listener requires "
        "(mutual TLS). Unset: no client certificate is asked for.",
    )
    gateway_max_message_bytes: int = Field(
        default=1_048_576,
        ge=1_024,
        description="Largest HL7 message accepted, in bytes between the MLLP start and end "
        "blocks; a larger one is refused (AR when its MSH can be read) and the connection "
        "closed.",
    )
    gateway_idle_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        description="A connection that sends nothing for this long is closed.",
    )
    gateway_default_charset: str = Field(
        default="UNICODE UTF-8",
        description="Character set of messages whose MSH-18 is empty (an HL7 table 0211 value: "
        "`ASCII`, `8859/1`, `UNICODE UTF-8`, `GB 18030-2000`).",
    )
    gateway_writer_threads: int = Field(
        default=4,
        ge=1,
        le=32,
        description="Threads that apply messages to the database, each committing a group of "
        "messages per transaction; several overlap PostgreSQL round trips (always 1 on SQLite, "
        "which has one writer).",
    )
    gateway_processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Processes of `healthroam gateway` sharing the port (SO_REUSEPORT; the "
        "kernel spreads connections): one Python process uses about one core. Needs a fixed "
        "port.",
    )
    gateway_group_commit_max: int = Field(
        default=200,
        ge=1,
        le=10_000,
        description="Most messages applied in one transaction (group commit). Each message runs "
        "in its own savepoint; every ACK is sent after that transaction commits.",
    )
    gateway_rejection_retention_days: int = Field(
        default=90,
        ge=1,
        le=3_650,
        description="Days a refused HL7 message (AE/AR, table `hl7_rejections`, with the "
        "reason) is kept; `healthroam gateway purge-rejections` deletes older ones (run it "
        "daily, e.g. from cron). Accepted messages and their ACKs are not affected.",
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
    def bulk_dir(self) -> Path:
        return self.data_dir / "bulk"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def serve_processes(self) -> int:
        """Processes `healthroam serve` starts by default: one on SQLite (one writer at a
        time, decision 0048), else ``server_workers`` or the CPU count."""
        if self.is_sqlite:
            return 1
        return self.server_workers or _cpu_count()


def _cpu_count() -> int:
    """CPUs this process may run on (its affinity, e.g. a container's cpuset), at least 1."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
