"""Cross-institution care use cases: card check-in, care relationships, the access gate in
front of a resident's whole record, break-the-glass review, and the clinician's summary.

Flow of a read (summary or golden ``$everything``): resolve the master person, list the keys
of everything written about them with the writing institution, read their consent directives,
look for a care relationship, then let :func:`healthroam.security.access.decide` answer. A
break-the-glass access opens an access exception for review in the same transaction as the
read's audit entry (purpose of use ``BTG``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from healthroam.cards.service import CardService, Verification
from healthroam.db.engine import Database
from healthroam.errors import Conflict, Forbidden, InvalidInput, NotFound
from healthroam.exchange.care.model import (
    AccessException,
    CareRelationship,
    CheckIn,
    PersonHeader,
    RelationshipReason,
    ReviewOutcome,
    ReviewStatus,
    SourceInstitution,
    Summary,
    visit_purpose,
)
from healthroam.exchange.care.repository import CareRepository, PersonRecord, RecordKey
from healthroam.exchange.care.summary import SUMMARY_TYPES, build_summary
from healthroam.exchange.recognition.service import ResultAccess
from healthroam.records.repository import ResourceRepository
from healthroam.records.service import RecordService, require
from healthroam.registry.repository import KnownPerson
from healthroam.security.access import (
    BREAK_GLASS_PURPOSE,
    AccessBasis,
    AccessDecision,
    AccessRequest,
    check_break_glass_reason,
    decide,
)
from healthroam.security.audit import Action, Outcome
from healthroam.security.consent import (
    ConsentDecision,
    ConsentDirective,
    ConsentOutcome,
    evaluate,
    parse_consent,
)
from healthroam.security.model import Institution, InstitutionKind, Principal
from healthroam.security.repository import InstitutionRepository
from healthroam.security.service import AuditTrail, Clock, utcnow

EXCEPTION_TYPE = "AccessException"  # scope resource type of the privacy officer's API
CHECK_IN_SYSTEM = "urn:healthroam:check-in"
INSTITUTION_SYSTEM = "urn:healthroam:institution"


@dataclass(frozen=True, slots=True)
class CarePolicy:
    relationship_hours: float = 72.0  # how long a check-in or active encounter counts
    break_glass_overrides_consent: bool = True


@dataclass(frozen=True, slots=True)
class Grant:
    """What the gate decided for one read of a person's record."""

    person: PersonRecord
    decision: AccessDecision
    principal: Principal  # for auditing the read: purpose of use BTG after break-the-glass
    institution: str
    exception_id: int | None = None
    # Every live resource about the person (and the source Patients), as the decision listed
    # them: ``$everything`` starts from these instead of finding the compartment again.
    record: tuple[RecordKey, ...] = ()

    def visible(self, institution_code: str | None) -> bool:
        return self.decision.visible(self.institution, institution_code)


class CareService:
    def __init__(
        self,
        db: Database,
        audit: AuditTrail,
        records: RecordService,
        cards: CardService,
        policy: CarePolicy | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.db, self.audit, self.records, self.cards = db, audit, records, cards
        self.policy = policy or CarePolicy()
        self.clock = clock
        self._institutions: dict[str, Institution | None] = {}

    # --- institutions (cached: they change rarely and are never deleted) ------------------

    def _institution(self, conn: Connection, code: str | None) -> Institution | None:
        if code is None:
            return None
        found = self._institutions.get(code)
        if found is None:
            found = InstitutionRepository(conn).get(code)
            # An unknown code is not remembered: the institution may be added later by another
            # process (the command line, another server process, decision 0048).
            if found is not None:
                self._institutions[code] = found
        return found

    def _source(self, conn: Connection) -> Callable[[str | None], SourceInstitution]:
        def source(code: str | None) -> SourceInstitution:
            found = self._institution(conn, code)
            if found is None:
                return SourceInstitution(code, None)
            return SourceInstitution(found.code, found.name, found.level, found.kind.value)

        return source

    def _care_provider(self, conn: Connection, code: str) -> bool:
        found = self._institution(conn, code)
        return found is None or found.kind is not InstitutionKind.AGENCY

    # --- check-in -------------------------------------------------------------------------

    def check_in(
        self,
        principal: Principal,
        *,
        text: str,
        terminal: str,
        purpose: str,
        channel: str = "01",
    ) -> tuple[Verification, CheckIn]:
        """Verify a scanned card (logs the card use), then record an Encounter at the caller's
        institution and a care relationship with the holder, in one transaction."""
        require(principal, "Card", "r")
        require(principal, "Encounter", "c")
        visit = visit_purpose(purpose)
        verification = self.cards.verify(
            principal, text=text, step=visit.step, channel=channel, terminal=terminal
        )
        now = self.clock()
        with self.db.transaction() as conn:
            repo = CareRepository(conn)
            person = repo.person(verification.card.master_index_id, predecessors=False)
            own = [
                s
                for s in person.sources
                if s.institution == principal.institution_code and s.fhir_patient_id
            ]
            own.sort(key=lambda s: s.updated_at, reverse=True)
            subject = (
                f"Patient/{own[0].fhir_patient_id}" if own else f"Patient/{person.master_index_id}"
            )
            institution = self._institution(conn, principal.institution_code)
            provider: dict[str, Any] = {
                "identifier": {"system": INSTITUTION_SYSTEM, "value": principal.institution_code}
            }
            if institution is not None:
                provider["display"] = institution.name
            encounter = {
                "resourceType": "Encounter",
                "identifier": [{"system": CHECK_IN_SYSTEM, "value": str(uuid.uuid4())}],
                "status": "arrived",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": visit.act_code,
                    "display": visit.act_display,
                },
                "subject": {"reference": subject},
                "period": {"start": now.isoformat()},
                "serviceProvider": provider,
            }
            created = self.records.create_in(conn, principal, "Encounter", encounter)
            encounter_ref = created.stored.reference
            relationship = repo.add_relationship(
                master_index_id=person.master_index_id,
                institution_code=principal.institution_code,
                since=now,
                until=now + timedelta(hours=self.policy.relationship_hours),
                reason=RelationshipReason.CHECK_IN,
                encounter_ref=encounter_ref,
                card_id=verification.card.id,
                terminal_code=terminal,
                client_id=principal.client_id,
            )
            self.audit.append(
                conn,
                [
                    self.audit.event(
                        principal,
                        action=Action.CREATE,
                        subtype="check-in",
                        resource_type="Encounter",
                        resource_id=created.stored.id,
                        patient_ref=f"Patient/{person.master_index_id}",
                        detail=f"purpose={visit.code} terminal={terminal} "
                        f"card={verification.card.id} relationship={relationship.id}",
                    )
                ],
            )
        return verification, CheckIn(person.master_index_id, encounter_ref, relationship, subject)

    # --- relationships --------------------------------------------------------------------

    def has_relationship(
        self, conn: Connection, institution: str, master_id: str, now: datetime
    ) -> bool:
        """Whether ``institution`` cares for the person now: a relationship on record (card
        check-in, or an earlier active encounter) or an active Encounter it wrote."""
        return self._relationship(conn, institution, master_id, now, record=False) is not None

    def _relationship(
        self,
        conn: Connection,
        institution: str,
        master_id: str,
        now: datetime,
        *,
        record: bool,
        person: PersonRecord | None = None,
    ) -> CareRelationship | None:
        repo = CareRepository(conn)
        found = repo.current_relationship(institution, master_id, now)
        if found is not None:
            return found
        person = person or repo.person(master_id)
        encounters = repo.active_encounters(institution, person.patient_keys)
        if not encounters:
            return None
        until = now + timedelta(hours=self.policy.relationship_hours)
        if not record:
            return CareRelationship(
                0, person.master_index_id, institution, now, until, RelationshipReason.ENCOUNTER
            )
        return repo.add_relationship(
            master_index_id=person.master_index_id,
            institution_code=institution,
            since=now,
            until=until,
            reason=RelationshipReason.ENCOUNTER,
            encounter_ref=f"Encounter/{encounters[0][0]}",
        )

    def relationships(self, principal: Principal, master_index_id: str) -> list[CareRelationship]:
        require(principal, "Patient", "r")
        with self.db.transaction(readonly=True) as conn:
            repo = CareRepository(conn)
            person = repo.person(master_index_id)
            found = repo.relationships_of(person.master_index_id)
        if self._is_agency(principal):
            return found
        return [r for r in found if r.institution_code == principal.institution_code]

    def _is_agency(self, principal: Principal) -> bool:
        with self.db.transaction(readonly=True) as conn:
            return not self._care_provider(conn, principal.institution_code)

    # --- the gate -------------------------------------------------------------------------

    def _consents(self, conn: Connection, keys: list[RecordKey]) -> list[ConsentDirective]:
        consent_keys = [(k.resource_type, k.id) for k in keys if k.resource_type == "Consent"]
        directives = []
        for stored in ResourceRepository(conn).load(consent_keys):
            directive = parse_consent(stored.id, stored.content)
            if directive is not None:
                directives.append(directive)
        return directives

    def gate_in(
        self,
        conn: Connection,
        principal: Principal,
        master_index_id: str,
        *,
        access: str,
        break_glass_reason: str | None,
        whole_record: bool = True,
        foreign_known: bool = False,
        record: bool = True,
        known: KnownPerson | None = None,
    ) -> tuple[Grant, list[RecordKey]]:
        """Decide a read of the person's record; refuse with Forbidden (audited by the
        caller) or return the grant and the record's keys. ``whole_record`` False (plain FHIR
        reads and searches): only find out who wrote about the person, without listing the
        record (the keys returned are then empty); ``foreign_known``: another institution's
        resource is being read, so who else wrote does not matter. ``record`` False: an active
        Encounter counts without being recorded as a relationship (no write). ``known``: the
        person's registry rows already read in this transaction (CareRepository.person)."""
        reason = check_break_glass_reason(break_glass_reason)
        now = self.clock()
        repo = CareRepository(conn)
        person = repo.person(master_index_id, known=known)
        own = principal.institution_code
        care_provider = self._care_provider(conn, own)
        if whole_record:
            keys = repo.record_keys(person)
            writers = frozenset(k.institution_code or "" for k in keys)
            consent_keys = keys
        elif foreign_known:
            keys, others = [], True
            writers = frozenset(["(others)"])
            consent_keys = repo.consent_keys(person) if care_provider else []
        else:
            keys = []
            ours, others = repo.wrote_about(person, own)
            writers = frozenset([own] * ours + ["(others)"] * others)
            consent_keys = repo.consent_keys(person) if care_provider and others else []
        relationship = None
        if care_provider:
            relationship = self._relationship(
                conn, own, person.master_index_id, now, record=record, person=person
            )
        consent = (
            evaluate(self._consents(conn, consent_keys), own, now)
            if care_provider
            else ConsentOutcome(ConsentDecision.SHARE)
        )
        decision = decide(
            AccessRequest(
                institution=own,
                care_provider=care_provider,
                institutions=writers,
                relationship=relationship is not None,
                consent=consent,
                break_glass_reason=reason,
            ),
            overrides_consent=self.policy.break_glass_overrides_consent,
        )
        if not decision.allowed:
            raise Forbidden(
                decision.guidance or "access refused", expression="X-Break-Glass-Reason"
            )
        reader = principal
        exception_id = None
        if decision.break_glass:
            assert reason is not None
            reader = replace(principal, purpose_of_use=BREAK_GLASS_PURPOSE)
            exception_id = repo.add_exception(
                {
                    "occurred_at": now,
                    "institution_code": own,
                    "client_id": principal.client_id,
                    "end_user": principal.end_user,
                    "master_index_id": person.master_index_id,
                    "access": access,
                    "reason": reason,
                    "had_relationship": relationship is not None,
                    "consent_overridden": decision.consent_overridden,
                }
            )
        grant = Grant(person, decision, reader, own, exception_id)
        return grant, keys

    def visibility_in(
        self,
        conn: Connection,
        principal: Principal,
        master_index_id: str,
        known: KnownPerson | None = None,
    ) -> Callable[[str | None], bool]:
        """Whose data about the person the caller may see now without breaking the glass
        (result recognition's look-ups and order alerts): every institution's with a care
        relationship (and consent), otherwise only its own. ``known``: the person's registry
        rows as recognition read them in this transaction (not read again)."""
        try:
            grant, _ = self.gate_in(
                conn,
                principal,
                master_index_id,
                access="recent-results",
                break_glass_reason=None,
                known=known,
            )
        except Forbidden:
            own = principal.institution_code
            return lambda code: code == own
        return grant.visible

    def result_access_in(
        self,
        conn: Connection,
        principal: Principal,
        master_index_id: str,
        break_glass_reason: str | None,
    ) -> ResultAccess:
        """The gate of a ``$recent-results`` look-up: like ``$everything`` (Forbidden with
        guidance when refused; break-the-glass audited with BTG and opened for review)."""
        grant, _ = self.gate_in(
            conn,
            principal,
            master_index_id,
            access="recent-results",
            break_glass_reason=break_glass_reason,
        )
        return ResultAccess(
            grant.visible,
            grant.principal,
            self.detail(grant),
            grant.decision.guidance if grant.decision.others_hidden else None,
            grant.exception_id,
        )

    def audit_refusal(
        self, principal: Principal, master_index_id: str, access: str, error: Exception
    ) -> None:
        """Record a refused read (its own transaction: the read's was rolled back)."""
        self.audit.record(
            [
                self.audit.event(
                    principal,
                    action=Action.READ,
                    subtype=access,
                    outcome=Outcome.MINOR_FAILURE,
                    resource_type="Patient",
                    resource_id=master_index_id,
                    patient_ref=f"Patient/{master_index_id}",
                    detail=f"refused: {type(error).__name__}",
                )
            ]
        )

    def authorize(
        self,
        principal: Principal,
        master_index_id: str,
        *,
        access: str,
        break_glass_reason: str | None = None,
    ) -> Grant:
        """The gate on its own transaction (for ``$everything``, which reads afterwards)."""
        try:
            with self.db.transaction() as conn:
                grant, keys = self.gate_in(
                    conn,
                    principal,
                    master_index_id,
                    access=access,
                    break_glass_reason=break_glass_reason,
                )
        except Forbidden as error:
            self.audit_refusal(principal, master_index_id, access, error)
            raise
        return replace(grant, record=tuple(keys))

    def detail(self, grant: Grant) -> str:
        parts = [f"access={grant.decision.basis.value}"]
        if grant.decision.consent_refused:
            parts.append("consent=refused")
        if grant.decision.consent_overridden:
            parts.append("consent-overridden")
        if grant.decision.others_hidden:
            parts.append("others-hidden")
        if grant.exception_id is not None:
            parts.append(f"exception={grant.exception_id}")
        return " ".join(parts)

    # --- summary --------------------------------------------------------------------------

    def summary(
        self,
        principal: Principal,
        master_index_id: str,
        *,
        break_glass_reason: str | None = None,
        lang: str = "zh",
    ) -> Summary:
        """The resident's record from every institution the caller may see, grouped."""
        del lang  # items carry the source's own text; the titles are the page's business
        require(principal, "Patient", "r")
        try:
            with self.db.transaction() as conn:
                grant, keys = self.gate_in(
                    conn,
                    principal,
                    master_index_id,
                    access="summary",
                    break_glass_reason=break_glass_reason,
                )
                wanted = [
                    (k.resource_type, k.id)
                    for k in keys
                    if k.resource_type in SUMMARY_TYPES
                    and principal.scopes.allows(k.resource_type, "r")
                    and grant.visible(k.institution_code)
                ]
                resources = ResourceRepository(conn).load(wanted)
                golden = grant.person.master.golden
                summary = Summary(
                    person=PersonHeader(
                        grant.person.master_index_id,
                        golden.get("name"),
                        golden.get("sex"),
                        golden.get("birth_date"),
                    ),
                    generated_at=self.clock(),
                    access=grant.decision.basis,
                    consent_restricted=grant.decision.consent_refused
                    and not grant.decision.consent_overridden,
                    break_glass_exception=grant.exception_id,
                    others_hidden=grant.decision.others_hidden,
                    guidance=grant.decision.guidance if grant.decision.others_hidden else None,
                )
                build_summary(summary, resources, self._source(conn))
                self.audit.append(
                    conn,
                    [
                        self.audit.event(
                            grant.principal,
                            action=Action.READ,
                            subtype="summary",
                            resource_type="Patient",
                            resource_id=grant.person.master_index_id,
                            patient_ref=f"Patient/{grant.person.master_index_id}",
                            detail=self.detail(grant),
                        )
                    ],
                )
        except Forbidden as error:
            self.audit_refusal(principal, master_index_id, "summary", error)
            raise
        return summary

    # --- access exceptions (privacy officer) ----------------------------------------------

    def exceptions(
        self,
        principal: Principal,
        *,
        status: str | None = "open",
        institution: str | None = None,
        limit: int = 100,
        after: int | None = None,
    ) -> list[AccessException]:
        require(principal, EXCEPTION_TYPE, "s")
        try:
            wanted = ReviewStatus(status) if status else None
        except ValueError:
            raise InvalidInput("status is open or closed", expression="status") from None
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit is 1-1000", expression="limit")
        with self.db.transaction() as conn:
            if self._care_provider(conn, principal.institution_code):
                # A hospital's privacy officer reviews its own staff only; agencies see all.
                if institution not in (None, principal.institution_code):
                    raise Forbidden(
                        "a care provider sees only its own access exceptions",
                        expression="institution",
                    )
                institution = principal.institution_code
            found = CareRepository(conn).exceptions(wanted, institution, limit, after)
            self.audit.append(
                conn,
                [
                    self.audit.event(
                        principal,
                        action=Action.EXECUTE,
                        event_type="query",
                        subtype="access-exceptions",
                        resource_type=EXCEPTION_TYPE,
                        detail=f"status={status or 'any'} count={len(found)}",
                    )
                ],
            )
        return found

    def close_exception(
        self, principal: Principal, exception_id: int, *, outcome: str, note: str | None
    ) -> AccessException:
        require(principal, EXCEPTION_TYPE, "u")
        if principal.end_user is None:
            raise InvalidInput(
                "name the reviewing privacy officer in X-End-User", expression="X-End-User"
            )
        try:
            result = ReviewOutcome(outcome)
        except ValueError:
            raise InvalidInput(
                "outcome is justified or unjustified", expression="outcome"
            ) from None
        now = self.clock()
        with self.db.transaction() as conn:
            repo = CareRepository(conn)
            current = repo.exception(exception_id)
            if current is None or (
                self._care_provider(conn, principal.institution_code)
                and current.institution_code != principal.institution_code
            ):
                raise NotFound(f"no access exception {exception_id}", expression="id")
            if not repo.close_exception(exception_id, result, note, principal.end_user, now):
                raise Conflict("this access exception is already closed", expression="id")
            self.audit.append(
                conn,
                [
                    self.audit.event(
                        principal,
                        action=Action.UPDATE,
                        event_type="admin",
                        subtype="access-exception-review",
                        resource_type=EXCEPTION_TYPE,
                        resource_id=str(exception_id),
                        patient_ref=f"Patient/{current.master_index_id}",
                        detail=f"outcome={result.value}",
                    )
                ],
            )
            closed = repo.exception(exception_id)
        assert closed is not None
        return closed


__all__ = ["AccessBasis", "CarePolicy", "CareService", "Grant"]
