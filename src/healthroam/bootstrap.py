"""The composition root: settings -> storage -> keys -> services. Nothing else wires."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from healthroam.cards.service import CardPolicy, CardService
from healthroam.clinicians.model import AddressThrottle, LockoutPolicy, SessionPolicy
from healthroam.clinicians.service import ClinicianService
from healthroam.config import Settings
from healthroam.db.engine import Database, create_database_engine
from healthroam.exchange.care.gate import CareRecordGate
from healthroam.exchange.care.service import CarePolicy, CareService
from healthroam.exchange.recognition.model import load_table
from healthroam.exchange.recognition.service import RecognitionService
from healthroam.keys.backends import Pkcs11Config
from healthroam.keys.sealing import KeySealer, load_or_create_kek
from healthroam.keys.service import KeyService
from healthroam.records.bulk_export import BulkExportService
from healthroam.records.bulk_import import BulkImporter
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
    bulk_export: BulkExportService
    bulk_import: BulkImporter
    registry: RegistryService
    keys: KeyService
    cards: CardService
    recognition: RecognitionService
    care: CareService
    clinicians: ClinicianService

    def close(self) -> None:
        self.bulk_import.close()
        self.cards.close()
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


def build_keys(settings: Settings, db: Database) -> KeyService:
    """The card key hierarchy: software keystore (sealed in the database) and/or PKCS#11."""

    def sealer() -> KeySealer:
        if settings.card_keystore_passphrase is not None:
            return KeySealer(passphrase=settings.card_keystore_passphrase.get_secret_value())
        kek_file = settings.card_keystore_kek_file or settings.data_dir / "keys" / "card-kek.bin"
        return KeySealer(kek=load_or_create_kek(kek_file))

    pin = settings.card_pkcs11_pin
    return KeyService(
        db,
        sealer,
        signing_backend=settings.card_key_backend,
        signing_algorithm=settings.card_signing_algorithm,
        pkcs11=Pkcs11Config(
            str(settings.card_pkcs11_module),
            settings.card_pkcs11_token_label,
            pin.get_secret_value(),
        )
        if pin is not None
        else None,
        default_region=settings.card_default_region,
        rotation_lead_seconds=settings.card_key_rotation_lead_seconds,
        credential_lifetime_seconds=settings.card_credential_validity_days * 86_400,
        dynamic_window_seconds=settings.card_dynamic_code_window_seconds,
        trust_list_max_age_seconds=settings.card_trust_list_max_age_seconds,
    )


def build_cards(
    settings: Settings, db: Database, audit: AuditTrail, keys: KeyService
) -> CardService:
    policy = CardPolicy(
        issuer_code=settings.card_issuer_code,
        default_region=settings.card_default_region,
        validity_years=settings.card_validity_years,
        temporary_validity_days=settings.card_temporary_validity_days,
        credential_validity_days=settings.card_credential_validity_days,
        dynamic_window_seconds=settings.card_dynamic_code_window_seconds,
        trust_list_max_age_seconds=settings.card_trust_list_max_age_seconds,
        trust_list_refresh_seconds=settings.card_trust_list_refresh_seconds,
    )
    return CardService(db, audit, keys, policy, use_log_flush_ms=settings.card_use_log_flush_ms)


def build_clinicians(settings: Settings, db: Database, audit: AuditTrail) -> ClinicianService:
    lockout = timedelta(minutes=settings.clinician_lockout_minutes)
    return ClinicianService(
        db,
        audit,
        scopes=settings.clinician_scopes,
        lockout=LockoutPolicy(settings.clinician_login_max_failures, lockout),
        sessions=SessionPolicy(
            idle=timedelta(minutes=settings.clinician_session_idle_minutes),
            absolute=timedelta(hours=settings.clinician_session_max_hours),
        ),
        throttle=AddressThrottle(
            settings.clinician_login_max_failures_per_address, lockout.total_seconds()
        ),
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
    keys = build_keys(settings, db)
    records = RecordService(db, audit, registry)
    records.search_shapes = settings.fhir_search_shapes
    cards = build_cards(settings, db, audit, keys)
    care = CareService(
        db,
        audit,
        records,
        cards,
        CarePolicy(
            relationship_hours=settings.care_relationship_hours,
            break_glass_overrides_consent=settings.care_break_glass_overrides_consent,
        ),
    )
    # Plain FHIR reads and searches follow the same cross-institution rules (decision 0025).
    records.gate = CareRecordGate(care)
    recognition = RecognitionService(
        db,
        audit,
        registry,
        load_table(settings.recognition_table_file),
        avoided_window_hours=settings.recognition_avoided_window_hours,
        visibility=care.visibility_in,
        gate=care.result_access_in,
    )
    records.listen("ServiceRequest", recognition.on_service_request)
    clients = ClientService(db)
    auth = AuthService(
        db,
        tokens,
        token_endpoint=settings.token_endpoint,
        max_assertion_seconds=settings.client_assertion_max_lifetime_seconds,
    )
    clients.on_change.append(auth.forget_client)
    return Platform(
        settings=settings,
        db=db,
        institutions=InstitutionService(db),
        clients=clients,
        auth=auth,
        audit=audit,
        records=records,
        bulk_export=BulkExportService(
            db,
            audit,
            registry,
            settings.bulk_dir,
            file_max_resources=settings.bulk_export_file_max_resources,
            retention=timedelta(hours=settings.bulk_export_retention_hours),
        ),
        bulk_import=BulkImporter(db, audit, records, processes=settings.bulk_import_processes),
        registry=registry,
        keys=keys,
        cards=cards,
        care=care,
        clinicians=build_clinicians(settings, db, audit),
        recognition=recognition,
    )
