"""Making a card's cryptographic material: EHC ID, card reference, signed offline credential
and static QR text. Pure (no storage), so bulk-issuance worker processes can run it."""

from __future__ import annotations

from dataclasses import dataclass

from healthroam.cards.cose import Signer
from healthroam.cards.credential import EmergencyCredential, card_ref, issue_credential
from healthroam.cards.ehc_id import derive_ehc_id
from healthroam.cards.model import Holder, masked_document
from healthroam.cards.qr import StaticCode
from healthroam.errors import InvalidInput

ABO_UNKNOWN, RH_UNKNOWN = 5, 3


@dataclass(frozen=True, slots=True)
class CardMaterial:
    ehc_id: str
    card_ref: bytes
    credential: str
    static_code: str


def check_issuable(holder: Holder) -> None:
    """Refuse a holder the card cannot be made for, naming the missing field."""
    if holder.id_type is None or holder.id_number is None:
        raise InvalidInput(
            "the master person has no national ID, passport or travel permit on record",
            expression="identifiers",
        )
    if not holder.name:
        raise InvalidInput("the master person has no name on record", expression="name")
    if holder.birth_date is None:
        raise InvalidInput("the master person has no birth date on record", expression="birthDate")


def card_material(
    holder: Holder,
    ehc_root_key: bytes,
    signer: Signer,
    *,
    region: str,
    issuer: str,
    status_version: int,
    issued_at: int,
    expires_at: int,
) -> CardMaterial:
    check_issuable(holder)
    assert holder.id_type is not None
    assert holder.id_number is not None
    assert holder.name is not None
    assert holder.birth_date is not None
    ehc_id = derive_ehc_id(ehc_root_key, holder.master_index_id, holder.id_type, holder.id_number)
    ref = card_ref(ehc_id)
    credential = issue_credential(
        EmergencyCredential(
            card_ref=ref,
            name=holder.name,
            sex=holder.sex,
            birth_date=holder.birth_date,
            masked_id_number=masked_document(holder.id_number),
            abo=ABO_UNKNOWN,
            rh=RH_UNKNOWN,
            allergies=(),
            chronic_conditions=(),
            emergency_contact_name="",
            emergency_contact_phone="",
            status_version=status_version,
            issuer=region,
            issued_at=issued_at,
            expires_at=expires_at,
        ),
        signer,
    )
    return CardMaterial(ehc_id, ref, credential, StaticCode(ehc_id, region, issuer).text())
