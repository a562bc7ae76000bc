from __future__ import annotations

import contextlib
import dataclasses
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healthroam.cards.cose import Es256Signer, SignatureVerifier, Sm2Signer, sign1
from healthroam.cards.credential import (
    CredentialRejected,
    EmergencyCredential,
    card_ref,
    issue_credential,
    worst_case_example,
)
from healthroam.cards.trustlist import (
    IssuerKey,
    RevokedCard,
    TrustList,
    TrustListRejected,
    load_trust_list,
    sign_trust_list,
    verify_offline,
)

NOW = 1_795_000_000


def no_keys(_: str) -> SignatureVerifier | None:
    return None


DAY = 86400
EHC_ID = "B" * 64


def make_trust_list(
    *signers: Sm2Signer | Es256Signer,
    issued_at: int = NOW,
    revoked: tuple[RevokedCard, ...] = (),
    sequence: int = 1,
) -> TrustList:
    keys = tuple(
        IssuerKey(s.key_id, s.algorithm, s.public_key_bytes(), NOW - 365 * DAY, NOW + 365 * DAY)
        for s in signers
    )
    return TrustList(sequence, issued_at, DAY, keys, revoked)


def credential(status_version: int = 2) -> EmergencyCredential:
    return dataclasses.replace(
        worst_case_example(NOW), card_ref=card_ref(EHC_ID), status_version=status_version
    )


def download(
    tl: TrustList, tl_signer: Sm2Signer, now: float = NOW, previous: TrustList | None = None
) -> TrustList:
    return load_trust_list(
        sign_trust_list(tl, tl_signer), {tl_signer.key_id: tl_signer.verifier()}.get, now, previous
    )


def reason(text: str, tl: TrustList, now: float) -> str:
    with pytest.raises(CredentialRejected) as info:
        verify_offline(text, tl, now)
    return info.value.reason


def test_sm2_and_es256_verify_offline(
    sm2_signer: Sm2Signer, es256_signer: Es256Signer, trust_list_signer: Sm2Signer
) -> None:
    tl = download(make_trust_list(sm2_signer, es256_signer), trust_list_signer)
    for signer in (sm2_signer, es256_signer):
        text = issue_credential(credential(), signer)
        verified = verify_offline(text, tl, datetime.fromtimestamp(NOW + 60, UTC))
        assert verified.key_id == signer.key_id
        assert verified.credential.status_version == 2
    assert verify_offline(text, tl, NOW).algorithm == "ES256"


def test_revoked_after_refresh(sm2_signer: Sm2Signer, trust_list_signer: Sm2Signer) -> None:
    text = issue_credential(credential(status_version=2), sm2_signer)
    old = download(make_trust_list(sm2_signer), trust_list_signer)
    verify_offline(text, old, NOW + 10)
    # the card is reported lost: the next trust list revokes status versions up to 2
    new = download(
        make_trust_list(
            sm2_signer,
            issued_at=NOW + 3600,
            sequence=2,
            revoked=(RevokedCard(card_ref(EHC_ID), 2),),
        ),
        trust_list_signer,
        NOW + 3600,
        previous=old,
    )
    assert reason(text, new, NOW + 3700) == "revoked"
    # the re-issued card (status version 3) is accepted
    verify_offline(issue_credential(credential(status_version=3), sm2_signer), new, NOW + 3700)
    # and the terminal refuses to go back to the older list
    with pytest.raises(TrustListRejected) as info:
        download(old, trust_list_signer, NOW + 3700, previous=new)
    assert info.value.reason == "rollback"


def test_stale_trust_list(sm2_signer: Sm2Signer, trust_list_signer: Sm2Signer) -> None:
    tl = download(make_trust_list(sm2_signer), trust_list_signer)
    text = issue_credential(credential(), sm2_signer)
    assert reason(text, tl, NOW + DAY + 1) == "stale-trust-list"
    with pytest.raises(TrustListRejected) as info:
        download(make_trust_list(sm2_signer), trust_list_signer, NOW + DAY + 1)
    assert info.value.reason == "stale-trust-list"


def test_unknown_key_expired_and_key_validity(
    sm2_signer: Sm2Signer, es256_signer: Es256Signer, trust_list_signer: Sm2Signer
) -> None:
    tl = download(make_trust_list(es256_signer), trust_list_signer)
    text = issue_credential(credential(), sm2_signer)
    assert reason(text, tl, NOW) == "unknown-key-id"
    tl = download(make_trust_list(sm2_signer), trust_list_signer)
    late = dataclasses.replace(credential(), issued_at=NOW + 400 * DAY, expires_at=NOW + 500 * DAY)
    assert reason(issue_credential(late, sm2_signer), tl, NOW) == "key-not-valid"
    short = dataclasses.replace(credential(), expires_at=NOW + 60)
    assert reason(issue_credential(short, sm2_signer), tl, NOW + 61) == "expired"


def test_trust_list_signature_and_domain_separation(
    sm2_signer: Sm2Signer, trust_list_signer: Sm2Signer
) -> None:
    data = bytearray(sign_trust_list(make_trust_list(sm2_signer), trust_list_signer))
    data[-70] ^= 1  # inside the payload's key bytes
    anchors = {trust_list_signer.key_id: trust_list_signer.verifier()}.get
    with pytest.raises(TrustListRejected):
        load_trust_list(bytes(data), anchors, NOW)
    # a message signed by the same key without the trust-list AAD is refused
    plain = sign1(make_trust_list(sm2_signer).to_payload(), trust_list_signer)
    with pytest.raises(TrustListRejected) as info:
        load_trust_list(plain, anchors, NOW)
    assert info.value.reason == "bad-signature"
    with pytest.raises(TrustListRejected) as info:
        load_trust_list(sign_trust_list(make_trust_list(sm2_signer), sm2_signer), anchors, NOW)
    assert info.value.reason == "unknown-key-id"


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_fuzz_trust_list_bytes(raw: bytes) -> None:
    with contextlib.suppress(TrustListRejected):
        load_trust_list(raw, no_keys, NOW)


@settings(max_examples=200)
@given(st.text(max_size=300))
def test_fuzz_verify_offline(text: str) -> None:
    tl = TrustList(1, NOW, DAY)
    with contextlib.suppress(CredentialRejected):
        verify_offline(text, tl, NOW)
