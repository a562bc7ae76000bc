"""The cross-institution access rules on plain FHIR reads, searches, history and writes.

:class:`RecordService` asks this gate (wired in bootstrap) before it shows a resource to an API
client. The rules are those of the whole record (``$everything``, the summary), decided by
:func:`healthroam.security.access.decide` through :meth:`CareService.gate_in`:

- an institution always sees what it wrote; agencies are not narrowed (scopes decide);
- resources outside every patient compartment (no reference to a Patient) are not narrowed;
- another institution's Patient, or a resource about a Patient, is shown to a care provider
  only with a care relationship with that person (card check-in, active Encounter) and no
  consent refusal, or after break-the-glass (``X-Break-Glass-Reason``: audited with purpose of
  use BTG and an access exception for review).

Writes are narrower: a care provider updates, patches or deletes only resources its own
institution wrote - whatever its care relationships, and break-the-glass opens reads only;
agencies are not narrowed (decision 0028).

A read is decided for the person(s) of the resource (403 with the guidance otherwise, as
``$everything`` answers). A search becomes one SQL condition (so pages and totals stay right):
restricted to one patient (``subject``/``patient``/a Patient ``_id``) it is that person's
decision, which may break the glass; otherwise it is "written by us, outside any compartment,
or about a person we have a care relationship with" (see ``visible_condition``).
"""

from __future__ import annotations

from sqlalchemy import Connection

from healthroam.db.raw import is_postgres
from healthroam.errors import Forbidden, InvalidInput
from healthroam.exchange.care.repository import CareRepository, visible_condition
from healthroam.exchange.care.service import CareService, Grant
from healthroam.records.repository import Key
from healthroam.records.search import Match, SearchRequest
from healthroam.records.service import Access
from healthroam.security.access import NO_RELATIONSHIP_GUIDANCE, check_break_glass_reason
from healthroam.security.model import Principal

CONSENT_GUIDANCE = (
    "the resident's consent directive refuses sharing other institutions' data with your "
    "institution; in an emergency break the glass by sending the header X-Break-Glass-Reason "
    "with the clinical reason (audited and reviewed)"
)
WRITE_REFUSAL = (
    "{reference} belongs to another institution: a care provider may update, patch or delete "
    "only resources its own institution wrote; corrections go through the authoring "
    "institution (ask it to correct the resource, or record your own)"
)
ONE_PATIENT_GLASS = (
    "break-the-glass opens one resident's record: restrict the search to one patient "
    "(subject=Patient/<id> or patient=<id>)"
)
PATIENT_PARAMS = frozenset({"subject", "patient"})


def _patient_of(request: SearchRequest, base_url: str) -> str | None:
    """The one Patient id a search is restricted to, if it is (one value, no chain)."""
    base = base_url.rstrip("/") + "/"
    for clause in request.clauses:
        if not isinstance(clause, Match) or len(clause.values) != 1:
            continue
        value = clause.values[0].removeprefix(base)
        if clause.kind == "_id" and request.resource_type == "Patient":
            return value
        if clause.kind != "reference" or clause.code not in PATIENT_PARAMS:
            continue
        if clause.modifier not in (None, "Patient"):
            continue
        parts = value.split("/")
        if len(parts) == 2 and parts[0] == "Patient":
            return parts[1]
        if len(parts) == 1 and parts[0]:
            return parts[0]
    return None


class CareRecordGate:
    """:class:`healthroam.records.service.RecordGate` for the cross-institution care rules."""

    def __init__(self, care: CareService) -> None:
        self.care = care

    def _narrowed(self, conn: Connection, principal: Principal) -> bool:
        return self.care._care_provider(conn, principal.institution_code)

    def _grant(
        self, conn: Connection, principal: Principal, master_index_id: str, access: str
    ) -> Grant:
        glass = principal.break_glass_reason
        grant, _ = self.care.gate_in(
            conn,
            principal,
            master_index_id,
            access=access,
            break_glass_reason=glass,
            whole_record=False,
            foreign_known=access == "read",
            # A search's transaction only reads unless the glass is broken.
            record=access == "read" or glass is not None,
        )
        return grant

    def read(
        self,
        conn: Connection,
        principal: Principal,
        key: Key,
        institution: str | None,
        content: dict[str, object] | None,
    ) -> Access:
        del content  # the reference index says whose compartment the resource is in
        if institution == principal.institution_code or not self._narrowed(conn, principal):
            return Access(principal)
        repo = CareRepository(conn)
        own, now = principal.institution_code, self.care.clock
        if repo.shown(key, own, now):  # one query: outside compartments, or a relationship
            return Access(principal, "access=care-relationship")
        # Slow path, for the exact answer: consent, break-the-glass, or the guidance.
        patients = repo.compartment_patients(key)
        if not patients:
            return Access(principal)  # Organization, Practitioner, ValueSet ...
        masters = repo.masters_of(patients)
        if len(masters) < len(patients):
            # About a Patient that stands for no known person: nobody has a relationship.
            check_break_glass_reason(principal.break_glass_reason)
            raise Forbidden(NO_RELATIONSHIP_GUIDANCE, expression="X-Break-Glass-Reason")
        reader, details = principal, []
        for master_index_id in sorted(set(masters.values())):
            grant = self._grant(conn, principal, master_index_id, "read")
            if not grant.decision.show_foreign:
                raise Forbidden(
                    CONSENT_GUIDANCE
                    if grant.decision.consent_refused
                    else (grant.decision.guidance or NO_RELATIONSHIP_GUIDANCE),
                    expression="X-Break-Glass-Reason",
                )
            reader = grant.principal if grant.decision.break_glass else reader
            details.append(self.care.detail(grant))
        return Access(reader, " ".join(details))

    def search(
        self, conn: Connection, principal: Principal, request: SearchRequest, base_url: str
    ) -> Access:
        if not self._narrowed(conn, principal):
            return Access(principal)
        own, now = principal.institution_code, self.care.clock
        pg = is_postgres(conn)
        repo = CareRepository(conn)
        patient = _patient_of(request, base_url)
        if patient is not None and repo.related(patient, own, now):
            # One query: a relationship and no consent on record, so everything about the
            # person is shown - the same condition as a search across residents.
            return Access(
                principal,
                "access=care-relationship",
                visible_condition(own, None, now, postgres=pg),
            )
        master = repo.masters_of([patient]).get(patient) if patient else None
        if master is None:
            if principal.break_glass_reason is not None:
                raise InvalidInput(ONE_PATIENT_GLASS, expression="X-Break-Glass-Reason")
            return Access(principal, visible=visible_condition(own, None, now, postgres=pg))
        grant = self._grant(conn, principal, master, "search")
        decision = grant.decision
        shown = [pid for _, pid in grant.person.patient_keys] if decision.show_foreign else []
        notice = None
        if decision.others_hidden:
            notice = decision.guidance
        elif decision.consent_refused and not decision.show_foreign:
            notice = CONSENT_GUIDANCE
        return Access(
            grant.principal,
            detail=self.care.detail(grant),
            visible=visible_condition(own, shown, now, postgres=pg),
            notice=notice,
        )

    def history(self, conn: Connection, principal: Principal) -> Access:
        if not self._narrowed(conn, principal):
            return Access(principal)
        return Access(
            principal,
            visible=visible_condition(
                principal.institution_code, None, self.care.clock, postgres=is_postgres(conn)
            ),
        )

    def write(
        self, conn: Connection, principal: Principal, key: Key, institution: str | None
    ) -> None:
        if institution == principal.institution_code or not self._narrowed(conn, principal):
            return
        # The writer is not named: which hospital treated the resident is theirs to tell.
        raise Forbidden(WRITE_REFUSAL.format(reference=f"{key[0]}/{key[1]}"), expression=key[0])
