"""Card use cases through the service on SQLite and PostgreSQL: lifecycle with history and
audit, cryptographic round trips, trust-list revocation, re-issue, key rotation."""

from __future__ import annotations

import json
import time

import pytest

from healthroam.bootstrap import Platform
from healthroam.cards.credential import CredentialRejected, verify_credential
from healthroam.cards.ehc_id import derive_ehc_id
from healthroam.cards.model import CardAction, CardKind, CardStatus
from healthroam.cards.service import CardRefused
from healthroam.cards.trustlist import load_trust_list, verify_offline
from healthroam.errors import Conflict, Forbidden, InvalidInput, NotFound
from healthroam.keys.model import KeyPurpose
from healthroam.keys.service import trust_list_anchors

from .conftest import add_person, principal

A = CardAction


def issued_card(platform: Platform, **golden: object) -> str:
    who = principal()
    mid = add_person(platform, **golden)
    card = platform.cards.apply(who, master_index_id=mid, kind="electronic")
    platform.cards.act(who, card.id, A.ISSUE)
    return platform.cards.act(who, card.id, A.ACTIVATE).id


def test_lifecycle_is_attributed_versioned_and_audited(keyed: Platform) -> None:
    who = principal()
    mid = add_person(keyed, national_id="46010619900101123X")
    card = keyed.cards.apply(who, master_index_id=mid, kind="electronic", reason="walk-in")
    assert (card.status, card.status_version, card.ehc_id) == (CardStatus.APPLIED, 1, None)
    card = keyed.cards.act(who, card.id, A.ISSUE)
    root_id, root_key = keyed.keys.symmetric(KeyPurpose.EHC_ROOT)
    assert card.ehc_id == derive_ehc_id(root_key, mid, "01", "46010619900101123X")
    assert card.ehc_root_key_id == root_id
    for action, status in (
        (A.ACTIVATE, CardStatus.ACTIVE),
        (A.FREEZE, CardStatus.FROZEN),
        (A.UNFREEZE, CardStatus.ACTIVE),
        (A.REPORT_LOST, CardStatus.LOST),
        (A.RECOVER, CardStatus.ACTIVE),
        (A.CANCEL, CardStatus.CANCELLED),
    ):
        card = keyed.cards.act(who, card.id, action, reason=f"test {action.value}")
        assert card.status is status
    assert card.status_version == 8
    with pytest.raises(Conflict, match="cancelled"):
        keyed.cards.act(who, card.id, A.ACTIVATE)
    events = keyed.cards.history(who, card.id)
    assert [e.action for e in events] == [
        "apply",
        "issue",
        "activate",
        "freeze",
        "unfreeze",
        "report-lost",
        "recover",
        "cancel",
    ]
    assert [e.status_version for e in events] == list(range(1, 9))
    assert {(e.client_id, e.institution_code, e.end_user) for e in events} == {
        ("client-1", "H001", "nurse-7")
    }
    assert events[0].reason == "walk-in"
    report = keyed.audit.verify()
    assert report.ok
    assert report.entries >= 8


def test_apply_checks(keyed: Platform) -> None:
    who = principal()
    with pytest.raises(NotFound):
        keyed.cards.apply(who, master_index_id="0" * 64, kind="electronic")
    mid = add_person(keyed)
    with pytest.raises(InvalidInput, match="kind"):
        keyed.cards.apply(who, master_index_id=mid, kind="plastic")
    with pytest.raises(InvalidInput, match="temporary cards"):
        keyed.cards.apply(who, master_index_id=mid, kind="temporary")
    keyed.cards.apply(who, master_index_id=mid, kind="electronic")
    with pytest.raises(Conflict, match="already holds"):
        keyed.cards.apply(who, master_index_id=mid, kind="electronic")
    physical = keyed.cards.apply(who, master_index_id=mid, kind="physical", card_no="CARD0001")
    assert physical.card_no == "CARD0001"
    other = add_person(keyed)
    with pytest.raises(Conflict, match="card number"):
        keyed.cards.apply(who, master_index_id=other, kind="physical", card_no="CARD0001")
    with pytest.raises(Forbidden):
        keyed.cards.apply(principal("system/Card.r"), master_index_id=other, kind="electronic")
    visitor = add_person(
        keyed, national_id=None, region=None, identifiers=["urn:healthroam:passport|E7654321"]
    )
    with pytest.raises(InvalidInput, match="national ID"):
        keyed.cards.apply(who, master_index_id=visitor, kind="electronic")
    temp = keyed.cards.apply(who, master_index_id=visitor, kind="temporary")
    temp = keyed.cards.act(who, temp.id, A.ISSUE)
    assert temp.kind is CardKind.TEMPORARY
    assert temp.id_type == "03"
    assert (temp.valid_until - temp.valid_from).days == 90


def test_credential_round_trip_and_revocation_through_the_trust_list(keyed: Platform) -> None:
    card_id = issued_card(keyed)
    card = keyed.cards.get(principal(), card_id)
    assert card.credential is not None
    bundle = json.loads(json.dumps(keyed.keys.anchor_bundle()))
    anchors = trust_list_anchors(bundle, root_public_key=bundle["root"]["publicKey"])
    now = time.time()
    trust = load_trust_list(keyed.cards.trust_list(), anchors, now)
    assert verify_offline(card.credential, trust, now).credential.name == "张三"
    keyed.cards.act(principal(), card_id, A.REPORT_LOST)
    newer = load_trust_list(keyed.cards.trust_list(), anchors, now, previous=trust)
    assert newer.sequence > trust.sequence
    with pytest.raises(CredentialRejected) as caught:
        verify_offline(card.credential, newer, now)
    assert caught.value.reason == "revoked"
    new = keyed.cards.reissue(principal(), card_id, reason="lost phone")
    assert new.ehc_id == card.ehc_id
    assert new.status_version > card.status_version
    assert new.credential is not None
    latest = load_trust_list(keyed.cards.trust_list(), anchors, now, previous=newer)
    assert verify_offline(new.credential, latest, now).credential.status_version == 6
    with pytest.raises(CredentialRejected):
        verify_offline(card.credential, latest, now)
    old = keyed.cards.get(principal(), card_id)
    assert (old.status, old.replaced_by) == (CardStatus.CANCELLED, new.id)


def test_anchor_bundle_refuses_a_certificate_not_signed_by_the_root(keyed: Platform) -> None:
    bundle = keyed.keys.anchor_bundle()
    forged = dict(bundle, trustListKeys=[dict(bundle["trustListKeys"][0], certificate="d2" + "00")])
    with pytest.raises(InvalidInput):
        trust_list_anchors(forged)
    with pytest.raises(InvalidInput, match="different root"):
        trust_list_anchors(bundle, root_public_key="04" + "00" * 64)


def test_issuing_key_rotation_keeps_old_credentials_valid(keyed: Platform) -> None:
    first = keyed.cards.get(principal(), issued_card(keyed))
    old_key = keyed.keys.current(KeyPurpose.ISSUING)
    new_key = keyed.keys.rotate(KeyPurpose.ISSUING, "460000", lead_seconds=0)
    assert keyed.keys.current(KeyPurpose.ISSUING).key_id == new_key.key_id != old_key.key_id
    second = keyed.cards.get(principal(), issued_card(keyed))
    assert (first.issuing_key_id, second.issuing_key_id) == (old_key.key_id, new_key.key_id)
    ended = keyed.keys.get(old_key.key_id)
    assert ended.valid_until == new_key.valid_from
    assert ended.publish_until is not None
    issuers = {k.key_id for k in keyed.keys.issuer_keys()}
    assert {old_key.key_id, new_key.key_id} <= issuers
    lookup = {k.key_id: k for k in keyed.keys.issuer_keys()}
    from healthroam.cards.cose import verifier_for

    for cred in (first.credential, second.credential):
        assert cred is not None
        verify_credential(
            cred,
            lambda kid: (
                verifier_for(lookup[kid].algorithm, lookup[kid].public_key)
                if kid in lookup
                else None
            ),
            time.time(),
        )
    # Both still verify through the API path too.
    for cred in (first.credential, second.credential):
        assert cred is not None
        keyed.cards.verify(principal(), text=cred, step="02", channel="01", terminal="T1")


def test_rotation_with_lead_publishes_first_and_root_cannot_rotate(keyed: Platform) -> None:
    qr_old = keyed.keys.current(KeyPurpose.QR)
    successor = keyed.keys.rotate(KeyPurpose.QR, lead_seconds=3600)
    assert keyed.keys.current(KeyPurpose.QR).key_id == qr_old.key_id  # not yet signing
    assert set(keyed.keys.qr_keys()) == {qr_old.key_id, successor.key_id}
    with pytest.raises(InvalidInput, match="waiting to take over"):
        keyed.keys.rotate(KeyPurpose.QR)
    with pytest.raises(InvalidInput, match="anchor"):
        keyed.keys.rotate(KeyPurpose.ROOT)
    assert keyed.keys.init() == []  # idempotent


def test_refusals_are_logged_and_reasons_exact(keyed: Platform) -> None:
    card_id = issued_card(keyed)
    code = keyed.cards.dynamic_code(principal(), card_id)
    keyed.cards.verify(principal(), text=code, step="01", channel="02", terminal="K1")
    with pytest.raises(CardRefused) as caught:
        keyed.cards.verify(principal(), text=code, step="01", channel="02", terminal="K1")
    assert (caught.value.reason, caught.value.status) == ("replayed", 400)
    keyed.cards.act(principal(), card_id, A.FREEZE)
    with pytest.raises(CardRefused) as caught:
        keyed.cards.verify(
            principal(),
            text=keyed.cards.get(principal(), card_id).static_code or "",
            step="01",
            channel="02",
            terminal="K1",
        )
    assert (caught.value.reason, caught.value.status) == ("card-frozen", 409)
    from datetime import UTC, datetime

    from healthroam.cards.qr import BEIJING

    day = datetime.now(UTC).astimezone(BEIJING).date().isoformat()
    rows = keyed.cards.usage(None, day)
    assert [(r.institution_code, r.step_code, r.accepted, r.refused) for r in rows] == [
        ("H001", "01", 1, 2)
    ]
    assert keyed.audit.verify().ok
