"""The signed trust list (信任列表) that terminals download, and offline verification.

A trust list is a COSE_Sign1 (signed by the trust-list key, whose public key terminals hold as
their anchor) over a CBOR map:

 1 format version (uint, 1)        4 maximum age in seconds (uint)
 2 sequence number (uint, grows)   5 issuer keys: [[kid text, alg int, public point bytes,
 3 issued-at (epoch seconds)            valid-from, valid-until], ...]
                                    6 revoked cards: [[card ref (16 bytes), status version], ...]

The signature covers external AAD ``HR-TL1`` so a trust list can never pass as a credential or
the other way round. :func:`verify_offline` refuses a credential whose trust list is older than
its maximum age, and a card whose revoked entry has a status version >= the credential's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from healthroam.cards.cose import (
    ALGORITHM_NAMES,
    CoseError,
    KeyLookup,
    SignatureVerifier,
    Signer,
    decode_sign1,
    dumps,
    loads_strict,
    sign1,
    verifier_for,
    verify_sign1,
)
from healthroam.cards.credential import (
    CLOCK_SKEW_SECONDS,
    CredentialRejected,
    VerifiedCredential,
    check_signature,
    check_times,
    parse_credential_text,
)
from healthroam.errors import InvalidInput

TRUST_LIST_AAD = b"HR-TL1"
FORMAT_VERSION = 1
MAX_TRUST_LIST_BYTES = 16 * 1024 * 1024


class TrustListRejected(InvalidInput):
    """A downloaded trust list was refused; ``reason``: bad-cbor, bad-structure,
    unknown-key-id, algorithm-mismatch, bad-signature, stale-trust-list, rollback, too-long."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail, expression="trustList")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class IssuerKey:
    """An issuer's public key and the period in which it may have signed credentials."""

    key_id: str
    algorithm: int
    public_key: bytes
    valid_from: int
    valid_until: int


@dataclass(frozen=True, slots=True)
class RevokedCard:
    """A card whose credentials up to ``status_version`` are refused (lost, cancelled...)."""

    card_ref: bytes
    status_version: int


@dataclass(frozen=True)
class TrustList:
    """Issuer keys and revoked cards; lookups are dictionaries built once."""

    sequence: int
    issued_at: int
    max_age: int
    keys: tuple[IssuerKey, ...] = ()
    revoked: tuple[RevokedCard, ...] = ()
    _verifiers: dict[str, tuple[IssuerKey, SignatureVerifier]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _revoked: dict[bytes, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for key in self.keys:
            if key.key_id in self._verifiers:
                raise InvalidInput("duplicate issuer key id", expression="trustList.keys")
            self._verifiers[key.key_id] = (key, verifier_for(key.algorithm, key.public_key))
        for entry in self.revoked:
            previous = self._revoked.get(entry.card_ref, -1)
            self._revoked[entry.card_ref] = max(previous, entry.status_version)

    def verifier(self, key_id: str) -> SignatureVerifier | None:
        found = self._verifiers.get(key_id)
        return found[1] if found else None

    def issuer_key(self, key_id: str) -> IssuerKey | None:
        found = self._verifiers.get(key_id)
        return found[0] if found else None

    def revoked_version(self, card_ref: bytes) -> int | None:
        """The highest revoked status version of a card, or None if it is not revoked."""
        return self._revoked.get(card_ref)

    def is_stale(self, now: float) -> bool:
        return now - self.issued_at > self.max_age

    def to_payload(self) -> bytes:
        return dumps(
            {
                1: FORMAT_VERSION,
                2: self.sequence,
                3: self.issued_at,
                4: self.max_age,
                5: [
                    [k.key_id, k.algorithm, k.public_key, k.valid_from, k.valid_until]
                    for k in self.keys
                ],
                6: [[r.card_ref, r.status_version] for r in self.revoked],
            }
        )


def sign_trust_list(trust_list: TrustList, signer: Signer) -> bytes:
    """The COSE_Sign1 bytes terminals download."""
    return sign1(trust_list.to_payload(), signer, TRUST_LIST_AAD)


def _uint(value: Any) -> bool:
    return type(value) is int and 0 <= value < 2**63


def _structure(detail: str) -> TrustListRejected:
    return TrustListRejected("bad-structure", f"trust list {detail}")


def _from_payload(obj: Any) -> TrustList:
    if not isinstance(obj, dict) or obj.get(1) != FORMAT_VERSION:
        raise _structure("is not a version-1 map")
    seq: Any = obj.get(2)
    issued: Any = obj.get(3)
    max_age: Any = obj.get(4)
    keys, revoked = obj.get(5), obj.get(6)
    if not (_uint(seq) and _uint(issued) and _uint(max_age)):
        raise _structure("lacks sequence, issued-at or maximum age")
    if not (isinstance(keys, list) and isinstance(revoked, list)):
        raise _structure("lacks its key or revocation arrays")
    issuer_keys = []
    for k in keys:
        if not (
            isinstance(k, list)
            and len(k) == 5
            and type(k[0]) is str
            and type(k[1]) is int
            and type(k[2]) is bytes
            and _uint(k[3])
            and _uint(k[4])
        ):
            raise _structure("has a malformed issuer key entry")
        issuer_keys.append(IssuerKey(k[0], k[1], k[2], k[3], k[4]))
    revoked_cards = []
    for r in revoked:
        if not (isinstance(r, list) and len(r) == 2 and type(r[0]) is bytes and _uint(r[1])):
            raise _structure("has a malformed revocation entry")
        revoked_cards.append(RevokedCard(r[0], r[1]))
    try:
        return TrustList(seq, issued, max_age, tuple(issuer_keys), tuple(revoked_cards))
    except InvalidInput as exc:
        raise _structure(f"is inconsistent ({exc.detail})") from None


def load_trust_list(
    data: bytes,
    anchors: KeyLookup,
    now: float | datetime,
    previous: TrustList | None = None,
) -> TrustList:
    """Verify and decode a downloaded trust list.

    ``anchors`` maps the trust-list key id to its public key (configured on the terminal).
    Refuses a list that is already stale at ``now`` or older than ``previous`` (rollback).
    """
    if not isinstance(data, bytes) or not data:
        raise TrustListRejected("bad-cbor", "trust list must be non-empty bytes")
    if len(data) > MAX_TRUST_LIST_BYTES:
        raise TrustListRejected("too-long", "trust list is larger than 16 MiB")
    try:
        message = decode_sign1(data)
        verify_sign1(message, anchors, TRUST_LIST_AAD)
        obj = loads_strict(message.payload)
    except CoseError as exc:
        raise TrustListRejected(exc.reason, exc.detail) from None
    trust_list = _from_payload(obj)
    if trust_list.is_stale(_epoch(now)):
        raise TrustListRejected("stale-trust-list", "trust list is older than its maximum age")
    if previous is not None and trust_list.sequence < previous.sequence:
        raise TrustListRejected("rollback", "trust list is older than the one already held")
    return trust_list


def _epoch(now: float | datetime) -> float:
    if isinstance(now, datetime):
        if now.tzinfo is None:
            raise InvalidInput("now must be timezone-aware", expression="now")
        return now.timestamp()
    return float(now)


def verify_offline(
    text: str,
    trust_list: TrustList,
    now: float | datetime,
    clock_skew: int = CLOCK_SKEW_SECONDS,
) -> VerifiedCredential:
    """Verify an ``HR1:`` credential with no network, or raise :class:`CredentialRejected`.

    Checks, in order: prefix, Base45, CBOR, COSE structure, key id known, algorithm matches
    the key, signature, claims, key valid at issue time, expiry, not issued in the future,
    trust list fresh, card not revoked.
    """
    t = _epoch(now)
    message = parse_credential_text(text)
    cred = check_signature(message, trust_list.verifier)
    key = trust_list.issuer_key(message.key_id)
    if key is None or not key.valid_from <= cred.issued_at <= key.valid_until:
        raise CredentialRejected("key-not-valid", "issuer key was not valid at issue time")
    check_times(cred, t, clock_skew)
    if trust_list.is_stale(t):
        raise CredentialRejected("stale-trust-list", "trust list is older than its maximum age")
    revoked = trust_list.revoked_version(cred.card_ref)
    if revoked is not None and revoked >= cred.status_version:
        raise CredentialRejected("revoked", "card is revoked")
    return VerifiedCredential(
        cred, message.key_id, ALGORITHM_NAMES.get(message.algorithm, "?"), message
    )
