"""Key management use cases (密管): initialise, rotate, list, and hand out keys and signers.

Key records are read from the database and cached for :data:`CACHE_SECONDS`; a rotation made
by another process is therefore seen within that time. Rotation publishes the new key first
and lets it sign only after ``lead`` seconds, so no verifier ever meets a key it does not know
and nothing needs restarting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from healthroam.cards.cose import (
    KeyLookup,
    SignatureVerifier,
    Signer,
    decode_sign1,
    loads_strict,
    sign1,
    verifier_for,
    verify_sign1,
)
from healthroam.cards.trustlist import IssuerKey
from healthroam.db.engine import Database
from healthroam.errors import InvalidInput, NotFound
from healthroam.keys.backends import (
    KeyBackend,
    Pkcs11Config,
    SignerSpec,
    SoftwareBackend,
    open_signer,
)
from healthroam.keys.model import (
    CERTIFICATE_AAD,
    FOREVER,
    SIGNING_ALGORITHMS,
    SYMMETRIC_ALGORITHM,
    KeyPurpose,
    KeyRecord,
    check_region,
    current,
    key_id_for,
    region_chain,
    rotation_times,
)
from healthroam.keys.repository import KeyRepository
from healthroam.keys.sealing import KeySealer

CACHE_SECONDS = 30.0
_CERTIFIED = (KeyPurpose.ISSUING, KeyPurpose.TRUST_LIST)


class KeyService:
    """The card key hierarchy over the database and the configured backends."""

    def __init__(
        self,
        db: Database,
        sealer: Callable[[], KeySealer],
        *,
        signing_backend: str = "software",
        signing_algorithm: str = "SM2",
        pkcs11: Pkcs11Config | None = None,
        default_region: str = "460000",
        rotation_lead_seconds: int = 86_400,
        credential_lifetime_seconds: int = 365 * 86_400,
        dynamic_window_seconds: int = 60,
        trust_list_max_age_seconds: int = 7 * 86_400,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if signing_algorithm not in SIGNING_ALGORITHMS:
            raise InvalidInput("signing algorithm must be SM2 or ES256", expression="algorithm")
        self.db = db
        self._sealer_factory = sealer
        self._sealer: KeySealer | None = None
        self.signing_backend = signing_backend
        self.signing_algorithm = signing_algorithm
        self.pkcs11 = pkcs11
        self.default_region = check_region(default_region)
        self.rotation_lead_seconds = rotation_lead_seconds
        self.credential_lifetime_seconds = credential_lifetime_seconds
        self.dynamic_window_seconds = dynamic_window_seconds
        self.trust_list_max_age_seconds = trust_list_max_age_seconds
        self.clock = clock
        self._software = SoftwareBackend()
        self._lock = threading.Lock()
        self._records: list[KeyRecord] = []
        self._loaded_at = -1e18
        self._secrets: dict[str, bytes] = {}
        self._signers: dict[str, Signer] = {}

    # --- backends and secrets -------------------------------------------------------------

    @property
    def sealer(self) -> KeySealer:
        if self._sealer is None:
            self._sealer = self._sealer_factory()
        return self._sealer

    def _backend(self, name: str) -> KeyBackend:
        if name == "software":
            return self._software
        if name == "pkcs11":
            if self.pkcs11 is None:
                raise InvalidInput(
                    "PKCS#11 is not configured (card_pkcs11_pin)", expression="pkcs11"
                )
            from healthroam.keys.pkcs11 import Pkcs11Backend

            return Pkcs11Backend(self.pkcs11)
        raise InvalidInput(f"unknown key backend {name}", expression="backend")

    @staticmethod
    def _aad(record: KeyRecord) -> bytes:
        return f"{record.key_id}|{record.purpose.value}|{record.algorithm}".encode("ascii")

    def _secret(self, record: KeyRecord) -> bytes | None:
        if record.backend != "software":
            return None
        found = self._secrets.get(record.key_id)
        if found is None:
            with self.db.transaction(readonly=True) as conn:
                sealed = KeyRepository(conn).sealed_secret(record.key_id)
            if sealed is None:
                raise NotFound(f"key {record.key_id} has no material", expression="keyId")
            found = self._secrets[record.key_id] = self.sealer.open(sealed, self._aad(record))
        return found

    # --- reading --------------------------------------------------------------------------

    def records(self, *, refresh: bool = False) -> list[KeyRecord]:
        """Every key record (cached for a few seconds)."""
        now = time.monotonic()
        with self._lock:
            if refresh or now - self._loaded_at > CACHE_SECONDS:
                with self.db.transaction(readonly=True) as conn:
                    self._records = KeyRepository(conn).all()
                self._loaded_at = now
            return list(self._records)

    def get(self, key_id: str) -> KeyRecord:
        for record in self.records():
            if record.key_id == key_id:
                return record
        for record in self.records(refresh=True):
            if record.key_id == key_id:
                return record
        raise NotFound(f"no card key {key_id}", expression="keyId")

    def current(self, purpose: KeyPurpose, region: str | None = None) -> KeyRecord:
        """The key of ``purpose`` (and ``region`` for issuing keys) in use now."""
        now = self.clock()
        for refresh in (False, True):
            records = self.records(refresh=refresh)
            if purpose is KeyPurpose.ISSUING:
                for candidate in region_chain(region or self.default_region, self.default_region):
                    found = current(
                        (r for r in records if r.purpose is purpose and r.region == candidate),
                        now,
                    )
                    if found:
                        return found
            else:
                found = current((r for r in records if r.purpose is purpose), now)
                if found:
                    return found
        raise NotFound(
            f"no {purpose.value} key is in use; run `healthroam cards keys init`",
            expression="keys",
        )

    def signer(self, key_id: str) -> Signer:
        found = self._signers.get(key_id)
        if found is None:
            found = self._signers[key_id] = open_signer(self.signer_spec(key_id))
        return found

    def signer_spec(self, key_id: str) -> SignerSpec:
        record = self.get(key_id)
        if record.algorithm not in SIGNING_ALGORITHMS:
            raise InvalidInput(f"key {key_id} is not a signing key", expression="keyId")
        return self._backend(record.backend).signer_spec(
            key_id, record.algorithm, self._secret(record), record.public_key
        )

    def symmetric(self, purpose: KeyPurpose) -> tuple[str, bytes]:
        """(key id, 16-byte SM4 key) of the EHC root or QR protection key in use."""
        if not purpose.symmetric:
            raise InvalidInput(f"{purpose.value} keys are not symmetric", expression="purpose")
        record = self.current(purpose)
        secret = self._secret(record)
        assert secret is not None
        return record.key_id, secret

    def symmetric_by_id(self, key_id: str) -> bytes:
        record = self.get(key_id)
        if not record.purpose.symmetric:
            raise InvalidInput(f"key {key_id} is not symmetric", expression="keyId")
        secret = self._secret(record)
        assert secret is not None
        return secret

    def qr_keys(self) -> dict[str, bytes]:
        """Every published QR protection key (the verifier accepts codes made with any)."""
        now = self.clock()
        keys: dict[str, bytes] = {}
        for record in self.records():
            if record.purpose is KeyPurpose.QR and record.published_at(now):
                secret = self._secret(record)
                assert secret is not None
                keys[record.key_id] = secret
        return keys

    def issuer_keys(self) -> tuple[IssuerKey, ...]:
        """Issuing keys for the trust list: every published one, with its signing period."""
        now = self.clock()
        return tuple(
            IssuerKey(
                r.key_id,
                r.cose_algorithm,
                r.public_key or b"",
                r.valid_from,
                r.valid_until if r.valid_until is not None else FOREVER,
            )
            for r in self.records()
            if r.purpose is KeyPurpose.ISSUING and r.published_at(now)
        )

    def anchor_bundle(self) -> dict[str, Any]:
        """What terminals configure: the root public key and the certified trust-list keys."""
        now = self.clock()
        records = self.records(refresh=True)
        root = current((r for r in records if r.purpose is KeyPurpose.ROOT), now)
        if root is None or root.public_key is None:
            raise NotFound("no root key; run `healthroam cards keys init`", expression="keys")
        return {
            "format": "healthroam-anchors-1",
            "root": {
                "kid": root.key_id,
                "alg": root.cose_algorithm,
                "publicKey": root.public_key.hex(),
            },
            "trustListKeys": [
                {
                    "kid": r.key_id,
                    "alg": r.cose_algorithm,
                    "publicKey": (r.public_key or b"").hex(),
                    "certificate": (r.certificate or b"").hex(),
                }
                for r in records
                if r.purpose is KeyPurpose.TRUST_LIST and r.published_at(now)
            ],
        }

    # --- writing --------------------------------------------------------------------------

    def _algorithm(self, purpose: KeyPurpose) -> str:
        return SYMMETRIC_ALGORITHM if purpose.symmetric else self.signing_algorithm

    def _certify(self, record: KeyRecord) -> bytes | None:
        if record.purpose not in _CERTIFIED:
            return None
        root = self.current(KeyPurpose.ROOT)
        return sign1(record.certificate_payload(), self.signer(root.key_id), CERTIFICATE_AAD)

    def _create(
        self, purpose: KeyPurpose, region: str | None, valid_from: int
    ) -> tuple[KeyRecord, bytes | None]:
        algorithm = self._algorithm(purpose)
        backend_name = "software" if purpose.symmetric else self.signing_backend
        backend = self._backend(backend_name)
        with self.db.transaction(readonly=True) as conn:
            repo = KeyRepository(conn)
            key_id = key_id_for(purpose, repo.next_sequence(purpose))
            version = repo.next_version(purpose, region)
        generated = backend.generate(key_id, algorithm)
        record = KeyRecord(
            key_id=key_id,
            purpose=purpose,
            algorithm=algorithm,
            region=region,
            version=version,
            backend=backend_name,
            public_key=generated.public_key,
            valid_from=valid_from,
            valid_until=None,
            publish_until=None,
            created_at=datetime.now(UTC),
        )
        sealed = (
            self.sealer.seal(generated.secret, self._aad(record))
            if generated.secret is not None
            else None
        )
        return record, sealed

    def _store(self, record: KeyRecord, sealed: bytes | None) -> KeyRecord:
        record = replace(record, certificate=self._certify(record))
        with self.db.transaction() as conn:
            KeyRepository(conn).add(record, sealed)
        self.records(refresh=True)
        return record

    def init(self, regions: Sequence[str] = ()) -> list[KeyRecord]:
        """Create every key that does not exist yet (idempotent); returns the new ones."""
        now = int(self.clock())
        made: list[KeyRecord] = []
        records = self.records(refresh=True)

        def missing(purpose: KeyPurpose, region: str | None = None) -> bool:
            return not any(
                r.purpose is purpose and r.region == region and r.published_at(now) for r in records
            )

        for purpose in (
            KeyPurpose.ROOT,
            KeyPurpose.TRUST_LIST,
            KeyPurpose.EHC_ROOT,
            KeyPurpose.QR,
        ):
            if missing(purpose):
                made.append(self._store(*self._create(purpose, None, now)))
        for region in dict.fromkeys([self.default_region, *regions]):
            if missing(KeyPurpose.ISSUING, check_region(region)):
                made.append(self._store(*self._create(KeyPurpose.ISSUING, region, now)))
        return made

    def _overlap(self, purpose: KeyPurpose) -> int | None:
        """How long a replaced key stays published after it stops signing (None: forever)."""
        return {
            KeyPurpose.ISSUING: self.credential_lifetime_seconds,
            KeyPurpose.QR: self.dynamic_window_seconds + 300,
            KeyPurpose.TRUST_LIST: self.trust_list_max_age_seconds,
            KeyPurpose.EHC_ROOT: None,
        }[purpose]

    def rotate(
        self, purpose: KeyPurpose, region: str | None = None, lead_seconds: int | None = None
    ) -> KeyRecord:
        """Make the successor of the key in use; it signs after ``lead_seconds``."""
        if purpose is KeyPurpose.ROOT:
            raise InvalidInput(
                "the provincial root is every terminal's anchor: replacing it means "
                "re-provisioning terminals (see docs/health-card.md, 'Keys')",
                expression="purpose",
            )
        if purpose is KeyPurpose.ISSUING:
            region = check_region(region or self.default_region)
        elif region is not None:
            raise InvalidInput("only issuing keys belong to a region", expression="region")
        now = int(self.clock())
        lead = self.rotation_lead_seconds if lead_seconds is None else lead_seconds
        records = self.records(refresh=True)
        mine = [r for r in records if r.purpose is purpose and r.region == region]
        old = current(mine, now)
        if old is not None and any(r.valid_from > now for r in mine):
            raise InvalidInput(
                f"a {purpose.value} key is already waiting to take over; rotate after it starts",
                expression="purpose",
            )
        overlap = self._overlap(purpose)
        start, publish_until = rotation_times(now, lead, overlap or 0)
        record, sealed = self._create(purpose, region, start if old is not None else now)
        # Store the successor before ending the old key: a crash in between leaves two keys
        # (the newer wins once it starts), never none.
        new = self._store(record, sealed)
        if old is not None:
            ended = replace(
                old,
                valid_until=start,
                publish_until=publish_until if overlap is not None else None,
            )
            certificate = self._certify(ended)
            with self.db.transaction() as conn:
                KeyRepository(conn).end(old.key_id, start, ended.publish_until, certificate)
            self.records(refresh=True)
        return new


def certificate_verifier(root: SignatureVerifier, root_key_id: str) -> KeyLookup:
    def lookup(key_id: str) -> SignatureVerifier | None:
        return root if key_id == root_key_id else None

    return lookup


def trust_list_anchors(bundle: dict[str, Any], *, root_public_key: str | None = None) -> KeyLookup:
    """A terminal's anchor lookup from a bundle: each trust-list key is accepted only if its
    certificate verifies with the root key (``root_public_key`` pins it, hex)."""
    try:
        root = bundle["root"]
        if root_public_key is not None and root["publicKey"].lower() != root_public_key.lower():
            raise InvalidInput("anchor bundle names a different root key", expression="anchors")
        root_verifier = verifier_for(int(root["alg"]), bytes.fromhex(root["publicKey"]))
        verifiers: dict[str, SignatureVerifier] = {}
        for entry in bundle["trustListKeys"]:
            message = decode_sign1(bytes.fromhex(entry["certificate"]))
            verify_sign1(message, certificate_verifier(root_verifier, root["kid"]), CERTIFICATE_AAD)
            payload = loads_strict(message.payload)
            if payload.get(1) != entry["kid"] or payload.get(4) != bytes.fromhex(
                entry["publicKey"]
            ):
                raise InvalidInput("certificate does not match its key", expression="anchors")
            verifiers[entry["kid"]] = verifier_for(int(entry["alg"]), payload[4])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidInput(
            f"anchor bundle is malformed ({type(exc).__name__})", expression="anchors"
        ) from None
    return verifiers.get
