"""Card use cases (卡管): apply, issue, lifecycle, re-issue, verification at terminals, the
signed trust list and usage summaries. Every change is attributed, kept in the card's event
history and audited in the same transaction; every verification is logged (用卡监控)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from healthroam.cards.credential import CredentialRejected
from healthroam.cards.issuing import card_material, check_issuable
from healthroam.cards.lifecycle import transition
from healthroam.cards.model import (
    CHANNEL_CODES,
    STEP_CODES,
    Card,
    CardAction,
    CardEvent,
    CardKind,
    CardStatus,
    Holder,
    check_card_no,
    check_use_codes,
    holder_from_golden,
    luhn_digit,
)
from healthroam.cards.qr import (
    DynamicCodeVerifier,
    QrCodeRejected,
    make_dynamic_code,
    parse_static_code,
)
from healthroam.cards.repository import CardRepository
from healthroam.cards.trustlist import RevokedCard, TrustList, sign_trust_list, verify_offline
from healthroam.cards.verification import (
    STATE_REASONS,
    CardRefused,
    PendingUse,
    Verification,
    VerificationBatcher,
)
from healthroam.db.engine import Database
from healthroam.errors import Conflict, InvalidInput, NotFound
from healthroam.keys.model import KeyPurpose
from healthroam.keys.service import KeyService
from healthroam.records.service import require
from healthroam.security.audit import Action, Outcome
from healthroam.security.model import InstitutionKind, Principal
from healthroam.security.repository import InstitutionRepository
from healthroam.security.service import AuditTrail

CARD = "Card"
CARD_USAGE = "CardUsage"


@dataclass(frozen=True, slots=True)
class CardPolicy:
    issuer_code: str = "HNWJW"
    default_region: str = "460000"
    validity_years: int = 10
    temporary_validity_days: int = 90
    credential_validity_days: int = 365
    dynamic_window_seconds: int = 60
    trust_list_max_age_seconds: int = 7 * 86_400
    trust_list_refresh_seconds: int = 300


@dataclass(frozen=True, slots=True)
class UsageRow:
    institution_code: str
    step_code: str
    accepted: int
    refused: int


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def code_kind_of(text: str) -> str:
    if text.startswith("EHCID:D"):
        return "dynamic"
    if text.startswith("EHCID:S"):
        return "static"
    if text.startswith("HR1:"):
        return "credential"
    return "unknown"


class CardService:
    def __init__(
        self,
        db: Database,
        audit: AuditTrail,
        keys: KeyService,
        policy: CardPolicy | None = None,
        *,
        use_log_flush_ms: int = 0,
        use_log_writers: int = 2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db, self.audit, self.keys = db, audit, keys
        self.policy = policy or CardPolicy()
        self.clock = clock
        self.uses = VerificationBatcher(
            db, audit, flush_ms=use_log_flush_ms, writers=use_log_writers, clock=clock
        )
        self._local = threading.local()
        self._trust_lock = threading.Lock()
        self._trust_cache: tuple[int, bytes] | None = None
        self._trust_dirty = True
        self._issuer_cache: tuple[tuple[Any, ...], TrustList] | None = None

    def close(self) -> None:
        self.uses.close()

    # --- helpers ----------------------------------------------------------------------------

    def _validity(self, kind: CardKind, now: float) -> tuple[datetime, datetime]:
        start = _utc(now)
        if kind is CardKind.TEMPORARY:
            return start, start + timedelta(days=self.policy.temporary_validity_days)
        return start, start + timedelta(days=365 * self.policy.validity_years + 2)

    def _event(
        self,
        principal: Principal | None,
        card_id: str,
        action: str,
        before: CardStatus | None,
        after: CardStatus,
        version: int,
        reason: str | None,
        now: float,
    ) -> dict[str, Any]:
        return {
            "card_id": card_id,
            "occurred_at": _utc(now),
            "action": action,
            "from_status": before.value if before else None,
            "to_status": after.value,
            "status_version": version,
            "client_id": principal.client_id if principal else None,
            "institution_code": principal.institution_code if principal else None,
            "end_user": principal.end_user if principal else None,
            "reason": reason,
        }

    def _audit(
        self,
        conn: Any,
        principal: Principal | None,
        action: Action,
        subtype: str,
        card_id: str | None,
        master_index_id: str | None,
        detail: str | None = None,
        outcome: Outcome = Outcome.SUCCESS,
    ) -> None:
        self.audit.append(
            conn,
            [
                self.audit.event(
                    principal,
                    action=action,
                    subtype=subtype,
                    outcome=outcome,
                    resource_type=CARD,
                    resource_id=card_id,
                    patient_ref=f"MasterPerson/{master_index_id}" if master_index_id else None,
                    detail=detail,
                )
            ],
        )

    def _new_card_no(self, region: str) -> str:
        body = region + f"{secrets.randbelow(10**11):011d}"
        return body + luhn_digit(body)

    def _material(self, holder: Holder, card: Card, version: int, now: float) -> dict[str, Any]:
        """EHC ID, signed credential and static code of an electronic or temporary card."""
        root_id, root_key = self.keys.symmetric(KeyPurpose.EHC_ROOT)
        issuing = self.keys.current(KeyPurpose.ISSUING, card.region)
        expires = min(
            int(_aware(card.valid_until).timestamp()),
            int(now) + self.policy.credential_validity_days * 86_400,
        )
        material = card_material(
            holder,
            root_key,
            self.keys.signer(issuing.key_id),
            region=card.region,
            issuer=self.policy.issuer_code,
            status_version=version,
            issued_at=int(now),
            expires_at=expires,
        )
        return {
            "ehc_id": material.ehc_id,
            "card_ref": material.card_ref,
            "credential": material.credential,
            "credential_version": version,
            "static_code": material.static_code,
            "issuing_key_id": issuing.key_id,
            "ehc_root_key_id": root_id,
        }

    def _holder(self, repo: CardRepository, card: Card) -> Holder:
        return holder_from_golden(
            card.master_person_id, card.master_index_id, repo.golden(card.master_person_id)
        )

    # --- reading ----------------------------------------------------------------------------

    def get(self, principal: Principal, card_id: str) -> Card:
        require(principal, CARD, "r")
        with self.db.transaction() as conn:
            card = CardRepository(conn).get(card_id)
            self._audit(
                conn,
                principal,
                Action.READ,
                "read",
                card_id,
                card.master_index_id if card else None,
                outcome=Outcome.SUCCESS if card else Outcome.MINOR_FAILURE,
            )
        if card is None:
            raise NotFound(f"no card {card_id}", expression="Card.id")
        return card

    def list_for(self, principal: Principal, master_index_id: str) -> list[Card]:
        require(principal, CARD, "s")
        with self.db.transaction() as conn:
            found = CardRepository(conn).for_master(master_index_id)
            self._audit(conn, principal, Action.READ, "search-type", None, master_index_id, "cards")
        return found

    def history(self, principal: Principal, card_id: str) -> list[CardEvent]:
        card = self.get(principal, card_id)
        with self.db.transaction(readonly=True) as conn:
            return CardRepository(conn).events(card.id)

    # --- lifecycle --------------------------------------------------------------------------

    def apply(
        self,
        principal: Principal,
        *,
        master_index_id: str,
        kind: str,
        card_no: str | None = None,
        region: str | None = None,
        reason: str | None = None,
    ) -> Card:
        """申请: a new card in state ``applied`` for a master person."""
        require(principal, CARD, "c")
        try:
            card_kind = CardKind(kind)
        except ValueError:
            allowed = ", ".join(k.value for k in CardKind)
            raise InvalidInput(f"kind must be one of: {allowed}", expression="kind") from None
        if card_no is not None and card_kind is not CardKind.PHYSICAL:
            raise InvalidInput("only physical cards carry a card number", expression="cardNo")
        now = self.clock()
        with self.db.transaction() as conn:
            repo = CardRepository(conn)
            person = repo.person(master_index_id)
            if person is None:
                raise NotFound("no master person with that ID", expression="masterIndexId")
            if person.status != "active":
                raise Conflict(
                    "the master person was merged into another; apply for the survivor",
                    expression="masterIndexId",
                )
            holder = holder_from_golden(person.id, person.master_index_id, person.golden)
            check_issuable(holder)
            if card_kind is CardKind.ELECTRONIC and holder.id_type != "01":
                raise InvalidInput(
                    "an electronic resident card needs a national ID on record; "
                    "apply for a temporary card",
                    expression="kind",
                )
            if card_kind is CardKind.TEMPORARY and holder.id_type == "01":
                raise InvalidInput(
                    "temporary cards are for people without a national ID", expression="kind"
                )
            if card_kind in repo.live_kinds(person.id):
                raise Conflict(
                    f"the person already holds a {card_kind.value} card that is not cancelled",
                    expression="kind",
                )
            card_region = region or holder.region or self.policy.default_region
            if card_kind is CardKind.PHYSICAL:
                card_no = check_card_no(card_no) if card_no else self._new_card_no(card_region)
            valid_from, valid_until = self._validity(card_kind, now)
            card_id = uuid.uuid4().hex
            row = {
                "id": card_id,
                "master_person_id": person.id,
                "master_index_id": person.master_index_id,
                "kind": card_kind.value,
                "card_no": card_no,
                "id_type": holder.id_type,
                "status": CardStatus.APPLIED.value,
                "status_version": 1,
                "region": card_region,
                "issuer": principal.institution_code,
                "valid_from": valid_from,
                "valid_until": valid_until,
                "created_at": _utc(now),
                "updated_at": _utc(now),
            }
            try:
                with conn.begin_nested():
                    repo.add_cards([row])
            except IntegrityError:
                raise Conflict("card number is already in use", expression="cardNo") from None
            repo.add_events(
                [self._event(principal, card_id, "apply", None, CardStatus.APPLIED, 1, reason, now)]
            )
            self._audit(
                conn, principal, Action.CREATE, "card-apply", card_id, master_index_id, kind
            )
            card = repo.get(card_id)
        assert card is not None
        return card

    def act(
        self, principal: Principal, card_id: str, action: CardAction, reason: str | None = None
    ) -> Card:
        """One lifecycle action (not reissue, which makes a new card: :meth:`reissue`)."""
        require(principal, CARD, "u")
        if action is CardAction.REISSUE:
            return self.reissue(principal, card_id, reason=reason)
        now = self.clock()
        with self.db.transaction() as conn:
            repo = CardRepository(conn)
            card = repo.get(card_id, lock=True)
            if card is None:
                raise NotFound(f"no card {card_id}", expression="Card.id")
            target = transition(card.status, action)
            version = card.status_version + 1
            values: dict[str, Any] = {
                "status": target.value,
                "status_version": version,
                "updated_at": _utc(now),
            }
            if action is CardAction.ISSUE and card.kind is not CardKind.PHYSICAL:
                values.update(self._material(self._holder(repo, card), card, version, now))
            try:
                with conn.begin_nested():
                    changed = repo.update(card.id, card.status_version, **values)
            except IntegrityError:
                raise Conflict(
                    "the person already holds a live card with this EHC ID", expression="ehcId"
                ) from None
            if not changed:
                raise Conflict("the card changed meanwhile; read it and retry", expression="Card")
            repo.add_events(
                [
                    self._event(
                        principal, card.id, action.value, card.status, target, version, reason, now
                    )
                ]
            )
            self._audit(
                conn,
                principal,
                Action.UPDATE,
                f"card-{action.value}",
                card.id,
                card.master_index_id,
                f"{card.status.value}->{target.value}",
            )
            updated = repo.get(card.id)
        self._trust_dirty = True
        assert updated is not None
        return updated

    def reissue(
        self,
        principal: Principal,
        card_id: str,
        *,
        reason: str | None = None,
        card_no: str | None = None,
    ) -> Card:
        """补卡: cancel the card and make its successor (same kind; an electronic card keeps
        its EHC ID with a higher status version, so the old credentials are refused)."""
        require(principal, CARD, "u")
        now = self.clock()
        with self.db.transaction() as conn:
            repo = CardRepository(conn)
            old = repo.get(card_id, lock=True)
            if old is None:
                raise NotFound(f"no card {card_id}", expression="Card.id")
            target = transition(old.status, CardAction.REISSUE)
            old_version = old.status_version + 1
            new_id = uuid.uuid4().hex
            if not repo.update(
                old.id,
                old.status_version,
                status=target.value,
                status_version=old_version,
                replaced_by=new_id,
                updated_at=_utc(now),
            ):
                raise Conflict("the card changed meanwhile; read it and retry", expression="Card")
            version = old_version + 1
            valid_from, valid_until = self._validity(old.kind, now)
            row: dict[str, Any] = {
                "id": new_id,
                "master_person_id": old.master_person_id,
                "master_index_id": old.master_index_id,
                "kind": old.kind.value,
                "card_no": None,
                "id_type": old.id_type,
                "status": CardStatus.PENDING_ACTIVATION.value,
                "status_version": version,
                "region": old.region,
                "issuer": principal.institution_code,
                "valid_from": valid_from,
                "valid_until": valid_until,
                "replaces": old.id,
                "created_at": _utc(now),
                "updated_at": _utc(now),
            }
            if old.kind is CardKind.PHYSICAL:
                row["card_no"] = (
                    check_card_no(card_no) if card_no else self._new_card_no(old.region)
                )
            else:
                draft = replace(old, valid_until=valid_until)
                row.update(self._material(self._holder(repo, old), draft, version, now))
            try:
                with conn.begin_nested():
                    repo.add_cards([row])
            except IntegrityError:
                raise Conflict("card number is already in use", expression="cardNo") from None
            repo.add_events(
                [
                    self._event(
                        principal, old.id, "reissue", old.status, target, old_version, reason, now
                    ),
                    self._event(
                        principal,
                        new_id,
                        "reissue",
                        None,
                        CardStatus.PENDING_ACTIVATION,
                        version,
                        reason,
                        now,
                    ),
                ]
            )
            self._audit(
                conn,
                principal,
                Action.CREATE,
                "card-reissue",
                new_id,
                old.master_index_id,
                f"replaces {old.id}",
            )
            new = repo.get(new_id)
        self._trust_dirty = True
        assert new is not None
        return new

    # --- codes --------------------------------------------------------------------------------

    def dynamic_code(self, principal: Principal, card_id: str) -> str:
        """A fresh dynamic QR text (动态码) for an active card, for the resident's app."""
        card = self.get(principal, card_id)
        if card.status is not CardStatus.ACTIVE or card.ehc_id is None:
            raise Conflict("only active electronic cards have dynamic codes", expression="Card")
        key_id, key = self.keys.symmetric(KeyPurpose.QR)
        return make_dynamic_code(card.ehc_id, key_id, key, self.clock())

    def _dynamic_verifier(self) -> DynamicCodeVerifier:
        keys = self.keys.qr_keys()
        state = getattr(self._local, "verifier", None)
        if state is None or state[0] != keys:
            verifier = DynamicCodeVerifier(
                keys,
                self.policy.dynamic_window_seconds,
                lambda: self.clock(),
            )
            state = self._local.verifier = (keys, verifier)
        found: DynamicCodeVerifier = state[1]
        return found

    def _issuer_trust(self) -> TrustList:
        keys = self.keys.issuer_keys()
        cached = self._issuer_cache
        if cached is None or cached[0] != keys:
            # Revocation is checked against the database, so this list carries keys only.
            cached = self._issuer_cache = (keys, TrustList(0, 0, 2**62, keys, ()))
        return cached[1]

    # --- verification -------------------------------------------------------------------------

    def verify(
        self,
        principal: Principal,
        *,
        text: str,
        step: str,
        channel: str,
        terminal: str,
        check_client: bool = False,
    ) -> Verification:
        """Check a scanned code at a terminal; log the use; refuse with :class:`CardRefused`.

        Returns once the use is committed (with others waiting at the same moment: see
        :mod:`healthroam.cards.verification`). ``check_client`` re-checks in that transaction
        that the principal's API client is still active (HTTP callers)."""
        use = self.prepare(principal, text, step, channel, terminal, check_client)
        return self.uses.submit(use).result()

    async def verify_async(
        self,
        principal: Principal,
        *,
        text: str,
        step: str,
        channel: str,
        terminal: str,
        check_client: bool = False,
    ) -> Verification:
        """:meth:`verify` for an event loop: the code check runs inline (offline credentials,
        with their signature check, in a worker thread) and the loop is free while the batch
        commits."""
        if isinstance(text, str) and code_kind_of(text) == "credential":
            use = await asyncio.to_thread(
                self.prepare, principal, text, step, channel, terminal, check_client
            )
        else:
            use = self.prepare(principal, text, step, channel, terminal, check_client)
        use.waiter = asyncio.get_running_loop().create_future()
        self.uses.submit(use)
        return await use.waiter

    def prepare(
        self,
        principal: Principal,
        text: str,
        step: str,
        channel: str,
        terminal: str,
        check_client: bool = False,
    ) -> PendingUse:
        """The half of a verification that needs no database: scope, use codes, and the code
        itself (format, key, check value, signature, time)."""
        require(principal, CARD, "r")
        check_use_codes(step, channel, terminal)
        now = self.clock()
        kind = code_kind_of(text) if isinstance(text, str) else "unknown"
        use = PendingUse(principal, now, step, channel, terminal, kind, check_client=check_client)
        try:
            if kind == "dynamic":
                verifier = self._dynamic_verifier()
                code = verifier.check(text)
                use.ehc_id = code.ehc_id
                use.code_hash = hashlib.blake2b(text.encode("ascii"), digest_size=16).digest()
                use.expires_at = verifier.expires_at(code)
            elif kind == "static":
                use.ehc_id = parse_static_code(text).ehc_id
            elif kind == "credential":
                verified = verify_offline(text, self._issuer_trust(), now)
                use.card_ref = verified.credential.card_ref
                use.credential_version = verified.credential.status_version
                use.masked = verified.credential.masked_id_number
            else:
                raise CardRefused("bad-prefix", "text is not an EHC QR code or credential")
        except (QrCodeRejected, CredentialRejected) as exc:
            use.refused = CardRefused(exc.reason, exc.detail)
        except CardRefused as exc:
            use.refused = exc
        return use

    # --- trust list ---------------------------------------------------------------------------

    def trust_list(self) -> bytes:
        """The current signed trust list (re-signed after a status change or the refresh time)."""
        now = int(self.clock())
        refresh = self.policy.trust_list_refresh_seconds
        with self._trust_lock:
            cached = self._trust_cache
            if cached and not self._trust_dirty and now - cached[0] < refresh:
                return cached[1]
            with self.db.transaction() as conn:
                repo = CardRepository(conn)
                repo.lock_trust_lists()  # another server process may be signing one now
                latest = repo.latest_trust_list()
                if latest and not self._trust_dirty and now - latest[1] < refresh:
                    self._trust_cache = (latest[1], latest[2])
                    return latest[2]
                self._trust_dirty = False
                revoked = repo.revoked(_utc(now))
                trust = TrustList(
                    (latest[0] if latest else 0) + 1,
                    now,
                    self.policy.trust_list_max_age_seconds,
                    self.keys.issuer_keys(),
                    tuple(RevokedCard(ref, version) for ref, version in revoked),
                )
                key = self.keys.current(KeyPurpose.TRUST_LIST)
                signed = sign_trust_list(trust, self.keys.signer(key.key_id))
                repo.add_trust_list(trust.sequence, now, signed, key.key_id)
            self._trust_cache = (now, signed)
            return signed

    # --- usage --------------------------------------------------------------------------------

    def usage(self, principal: Principal | None, day: str) -> list[UsageRow]:
        """Uses per institution and step on a Beijing-time day (``YYYY-MM-DD``). Agencies (and
        the command line) see every institution; others only their own."""
        try:
            datetime.strptime(day, "%Y-%m-%d")
        except (TypeError, ValueError):
            raise InvalidInput("date must be YYYY-MM-DD", expression="date") from None
        institution: str | None = None
        with self.db.transaction() as conn:
            if principal is not None:
                require(principal, CARD_USAGE, "r")
                own = InstitutionRepository(conn).get(principal.institution_code)
                if own is None or own.kind is not InstitutionKind.AGENCY:
                    institution = principal.institution_code
            rows = CardRepository(conn).usage(day, institution)
            self.audit.append(
                conn,
                [
                    self.audit.event(
                        principal,
                        action=Action.READ,
                        subtype="search-type",
                        event_type="query",
                        resource_type=CARD_USAGE,
                        query=f"date={day}",
                    )
                ],
            )
        summary: dict[tuple[str, str], list[int]] = {}
        for inst, step, accepted, count in rows:
            summary.setdefault((inst, step), [0, 0])[0 if accepted else 1] += count
        return [UsageRow(i, s, a, r) for (i, s), (a, r) in sorted(summary.items())]


__all__ = [
    "CHANNEL_CODES",
    "STATE_REASONS",
    "STEP_CODES",
    "CardRefused",
    "CardService",
    "Verification",
]
