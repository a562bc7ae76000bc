"""The card key hierarchy (密钥体系): purposes, key records, certificates, rotation rules.

Plain data and rules; no storage, no framework.

* ``root`` (省级根密钥, SM2 or ES256): signs certificates of issuing and trust-list keys only.
  Terminals hold its public key as their one anchor.
* ``issuing`` (签发密钥, one line per region): signs offline credentials. Rotation publishes
  the new key ``lead`` seconds before it signs; the old key stops signing then but stays in
  the trust list until the last credential it signed has expired.
* ``trust-list`` (信任列表签名密钥): signs the trust list; certified by the root.
* ``ehc-root`` (EHC 根安全密钥, SM4): derives EHC IDs (``cards.ehc_id``).
* ``qr`` (二维码保护密钥, SM4): protects dynamic QR codes; verifiers hold every published one.

Times are epoch seconds. A key *signs* (or is used) while ``valid_from <= t < valid_until``
and is *published* (trusted by verifiers) until ``publish_until``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from healthroam.cards.cose import ALG_ES256, ALG_SM2_SM3, dumps
from healthroam.errors import InvalidInput

CERTIFICATE_AAD = b"HR-KEY1"
FOREVER = 2**40 - 1  # far future, still a valid trust-list uint


class KeyPurpose(StrEnum):
    ROOT = "root"
    ISSUING = "issuing"
    TRUST_LIST = "trust-list"
    EHC_ROOT = "ehc-root"
    QR = "qr"

    @property
    def prefix(self) -> str:
        return _PREFIXES[self]

    @property
    def symmetric(self) -> bool:
        return self in (KeyPurpose.EHC_ROOT, KeyPurpose.QR)


_PREFIXES = {
    KeyPurpose.ROOT: "RT",
    KeyPurpose.ISSUING: "IS",
    KeyPurpose.TRUST_LIST: "TL",
    KeyPurpose.EHC_ROOT: "ER",
    KeyPurpose.QR: "QR",
}
SIGNING_ALGORITHMS = {"SM2": ALG_SM2_SM3, "ES256": ALG_ES256}
SYMMETRIC_ALGORITHM = "SM4"
_REGION = re.compile(r"[0-9]{6}")


def parse_purpose(value: str) -> KeyPurpose:
    try:
        return KeyPurpose(value)
    except ValueError:
        allowed = ", ".join(p.value for p in KeyPurpose)
        raise InvalidInput(f"key purpose must be one of: {allowed}", expression="purpose") from None


def check_region(region: str) -> str:
    if not isinstance(region, str) or not _REGION.fullmatch(region):
        raise InvalidInput("region must be a six-digit GB/T 2260 code", expression="region")
    return region


def region_chain(region: str, default: str) -> list[str]:
    """Regions whose issuing key may sign for ``region``, most specific first:
    county (460106) -> prefecture (460100) -> province (460000) -> the default region."""
    check_region(region)
    chain = [region, region[:4] + "00", region[:2] + "0000", default]
    return list(dict.fromkeys(chain))


def key_id_for(purpose: KeyPurpose, sequence: int) -> str:
    """``IS0003``: purpose prefix and a sequence per purpose; fits QR and COSE key ids."""
    if not 1 <= sequence <= 999_999:
        raise InvalidInput("key sequence out of range", expression="keyId")
    return f"{purpose.prefix}{sequence:04d}"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One key of the hierarchy; never holds secret material."""

    key_id: str
    purpose: KeyPurpose
    algorithm: str  # SM2 | ES256 | SM4
    region: str | None
    version: int
    backend: str  # software | pkcs11 | a vendor plug-in's name
    public_key: bytes | None
    valid_from: int
    valid_until: int | None
    publish_until: int | None
    created_at: datetime
    certificate: bytes | None = None

    @property
    def cose_algorithm(self) -> int:
        try:
            return SIGNING_ALGORITHMS[self.algorithm]
        except KeyError:
            raise InvalidInput(
                f"key {self.key_id} is not a signing key", expression="keyId"
            ) from None

    def in_use_at(self, t: float) -> bool:
        return self.valid_from <= t and (self.valid_until is None or t < self.valid_until)

    def published_at(self, t: float) -> bool:
        return self.publish_until is None or t < self.publish_until

    def certificate_payload(self) -> bytes:
        """What the root signs: the key's identity, algorithm, public key and validity."""
        return dumps(
            {
                1: self.key_id,
                2: self.purpose.value,
                3: self.cose_algorithm,
                4: self.public_key or b"",
                5: self.region or "",
                6: self.valid_from,
                7: self.valid_until if self.valid_until is not None else FOREVER,
                8: self.version,
            }
        )


def current(records: Iterable[KeyRecord], t: float) -> KeyRecord | None:
    """The key that signs at ``t``: the newest one in use (latest start, then version)."""
    live = [r for r in records if r.in_use_at(t)]
    return max(live, key=lambda r: (r.valid_from, r.version), default=None)


def rotation_times(now: int, lead: int, keep_publishing: int) -> tuple[int, int]:
    """(new key's start, old key's publish_until) for a rotation at ``now``.

    The new key is published at once and signs from ``now + lead``; the old one signs until
    then and stays published ``keep_publishing`` seconds longer (the lifetime of what it
    signed), so nothing it signed stops verifying early.
    """
    if lead < 0 or keep_publishing < 0:
        raise InvalidInput("rotation lead and overlap must be >= 0", expression="lead")
    start = now + lead
    return start, start + keep_publishing
