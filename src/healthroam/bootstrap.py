"""The composition root: settings -> storage -> keys -> services. Nothing else wires."""

from __future__ import annotations

from dataclasses import dataclass

from healthroam.config import Settings
from healthroam.db.engine import Database, create_database_engine
from healthroam.records.service import RecordService
from healthroam.registry.scoring import MatchModel
from healthroam.registry.service import RegistryService
from healthroam.security.service import (
    AuditTrail,
    AuthService,
    ClientService,
    InstitutionService,
)
from healthroam.security.tokens import TokenService, load_or_create_signing_key


@dataclass
class Platform:
    """Every service of a running healthroam, built once per process."""

    settings: Settings
    db: Database
    institutions: InstitutionService
    clients: ClientService
    auth: AuthService
    audit: AuditTrail
    records: RecordService
    registry: RegistryService

    def close(self) -> None:
        self.db.dispose()

    def __enter__(self) -> Platform:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def build_database(settings: Settings) -> Database:
    return Database(
        create_database_engine(
            settings.database_url,
            pool_size=settings.database_pool_size,
            busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        )
    )


def build(settings: Settings) -> Platform:
    db = build_database(settings)
    tokens = TokenService(
        load_or_create_signing_key(settings.signing_key_path),
        issuer=settings.token_issuer,
        ttl_seconds=settings.token_ttl_seconds,
    )
    audit = AuditTrail(db, default_purpose=settings.default_purpose_of_use)
    registry = RegistryService(
        db,
        audit,
        MatchModel.load(settings.registry_matching_file),
        steward_agencies=settings.steward_agencies,
        candidate_limit=settings.registry_candidate_limit,
    )
    return Platform(
        settings=settings,
        db=db,
        institutions=InstitutionService(db),
        clients=ClientService(db),
        auth=AuthService(
            db,
            tokens,
            token_endpoint=settings.token_endpoint,
            max_assertion_seconds=settings.client_assertion_max_lifetime_seconds,
        ),
        audit=audit,
        records=RecordService(db, audit, registry),
        registry=registry,
    )
