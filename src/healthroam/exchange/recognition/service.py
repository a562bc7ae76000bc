"""Result recognition use cases: ``$recent-results``, alerts on new orders (FHIR and HL7 v2),
what became of an alerted order, and the counts.

Results are found across the whole person: a stored Patient or a golden (master index) id is
resolved through the registry to every source Patient linked to the same master person, so a
result written by hospital A is found for an order placed at hospital B.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Connection

from healthroam.db.engine import Database
from healthroam.errors import Conflict, Forbidden, InvalidInput, NotFound
from healthroam.exchange.hl7.contract import MessageContext, Note, Severity
from healthroam.exchange.recognition.model import (
    CHINA_TIME,
    LOINC,
    RESULT_TYPES,
    Finding,
    RecognitionTable,
    Site,
    TableTest,
    assess,
    codings,
    local_day,
    rank,
)
from healthroam.exchange.recognition.repository import (
    AlertRow,
    CountRow,
    RecognitionRepository,
)
from healthroam.records.model import StoredResource
from healthroam.records.results import patient_results
from healthroam.records.service import Notice, require
from healthroam.records.validation import ID_PATTERN
from healthroam.registry.repository import KnownPerson
from healthroam.registry.service import RegistryService
from healthroam.security.access import check_break_glass_reason
from healthroam.security.audit import Action, Outcome
from healthroam.security.model import Principal
from healthroam.security.repository import InstitutionRepository
from healthroam.security.service import AuditTrail, Clock, utcnow

MASTER_INDEX_ID = re.compile(r"^[0-9A-F]{64}$")
# Orders still to be carried out: the ones worth an alert.
OPEN_ORDER_STATUSES = frozenset({"draft", "active", "on-hold"})
RECENT_RESULTS_REL = "related"
COUNT_SCOPE_TYPE = "ResultRecognition"  # system/ResultRecognition.s reads the counts


@dataclass(frozen=True, slots=True)
class Person:
    patient_ids: list[str]  # every source Patient of the person
    audit_refs: list[str]  # Patient/<master index id> and Patient/<each source id>
    # The registry's rows of the person as read here (handed to the care gate), if any.
    known: KnownPerson | None = None


# (connection, caller, master index id, the person's registry rows if already read in this
# transaction) -> may the caller see this institution's data?
Visibility = Callable[
    [Connection, Principal, str, KnownPerson | None], Callable[[str | None], bool]
]


@dataclass(frozen=True, slots=True)
class ResultAccess:
    """What the care gate granted one ``$recent-results`` look-up (exchange/care)."""

    visible: Callable[[str | None], bool]  # may this institution's results be shown?
    reader: Principal  # whom the read is audited as (purpose of use BTG after break-the-glass)
    detail: str | None = None  # how access was granted, for the audit entry
    guidance: str | None = None  # others' results exist but are hidden: what the caller can do
    break_glass_exception: int | None = None  # the access exception opened for review


# (connection, caller, master index id, break-the-glass reason) -> the access granted; raises
# Forbidden (with guidance) when the caller may not read the person's results at all.
AccessGate = Callable[[Connection, Principal, str, str | None], ResultAccess]


@dataclass(frozen=True, slots=True)
class RecentResults:
    findings: list[Finding]
    ordering: Site
    tests: list[TableTest]  # the tests asked about (every tabled test when no code was given)
    unmatched: list[str]  # asked-for codes the table does not know
    guidance: str | None = None  # others' results are hidden: how to see them
    break_glass_exception: int | None = None  # set when the glass was broken for this read


@dataclass(frozen=True, slots=True)
class Acknowledged:
    order_id: str
    outcome: str
    result: str  # the result reference the outcome is attributed to


def _site(conn: Connection, code: str | None) -> Site | None:
    if code is None:
        return None
    found = InstitutionRepository(conn).get(code)
    if found is None:
        return None
    return Site(found.code, found.kind.value, found.region, found.level, found.active)


def _subject_id(content: dict[str, Any]) -> str | None:
    subject = content.get("subject")
    ref = subject.get("reference") if isinstance(subject, dict) else None
    if isinstance(ref, str) and ref.startswith("Patient/"):
        patient_id = ref.removeprefix("Patient/")
        return patient_id if ID_PATTERN.match(patient_id) else None
    return None


def _references(content: dict[str, Any], key: str) -> set[str]:
    refs = set()
    for item in content.get(key) or []:
        if isinstance(item, dict) and isinstance(item.get("reference"), str):
            refs.add(item["reference"])
    return refs


def note_text(finding: Finding) -> str:
    """One line for an HL7 ERR segment (no personal data; no HL7 delimiter characters)."""
    verdict = "recognised" if finding.decision.recognised else "not recognised"
    return (
        f"Equivalent result exists: {finding.test.name_en} (LOINC {finding.loinc}) of "
        f"{local_day(finding.taken).isoformat()} at {finding.institution or 'unknown'}, valid "
        f"until {finding.valid_until.isoformat()}, {verdict} ({finding.decision.reason}); "
        f"see {finding.reference}"
    )


class RecognitionService:
    def __init__(
        self,
        db: Database,
        audit: AuditTrail,
        registry: RegistryService,
        table: RecognitionTable,
        *,
        avoided_window_hours: int = 72,
        visibility: Visibility | None = None,
        gate: AccessGate | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.db, self.audit, self.registry, self.table = db, audit, registry, table
        # Care relationships and consent decide whose results a hospital may be shown
        # (exchange/care); None: every result the scopes allow (agencies, tests of the rules).
        self.visibility = visibility
        # The same gate decides a $recent-results look-up, with break-the-glass; None: the
        # look-up is filtered by ``visibility`` as the alerts are.
        self.gate = gate
        self.avoided_window = timedelta(hours=avoided_window_hours)
        self.clock = clock
        # The listener's findings of an order created in a transaction still open, for the
        # HL7 handler's order_alerts of the same order right after: (connection, order id).
        self._seen: dict[tuple[int, str], list[Finding]] = {}

    # --- whose results -------------------------------------------------------------------

    def _person(self, conn: Connection, patient_id: str) -> Person | None:
        """Every source Patient of the person a golden or stored Patient id names."""
        if MASTER_INDEX_ID.match(patient_id):
            mii, ids = self.registry.fhir_patients_in(conn, patient_id)
            if not ids:
                return None
            return Person(ids, [f"Patient/{mii}", *(f"Patient/{p}" for p in ids)])
        if not ID_PATTERN.match(patient_id):
            return None
        stored, found = self.registry.person_of_live_patient_in(conn, patient_id)
        if not stored:
            return None
        if found is None:
            return Person([patient_id], [f"Patient/{patient_id}"])
        mii = found.master.master_index_id
        ids = list(dict.fromkeys([patient_id, *found.fhir_patient_ids]))
        return Person(ids, [f"Patient/{mii}", *(f"Patient/{p}" for p in ids)], found)

    def _find(
        self,
        conn: Connection,
        principal: Principal,
        person: Person,
        tests: Sequence[TableTest] | None,
        ordering: Site,
        now: datetime,
        visible: Callable[[str | None], bool] | None = None,
    ) -> list[Finding]:
        types = [t for t in RESULT_TYPES if principal.scopes.allows(t, "r")]
        chosen = list(tests) if tests is not None else list(self.table.tests)
        if not types or not chosen:
            return []
        today = local_day(now)
        # The windows are applied in Python (assess); the query narrows by person and code.
        rows = patient_results(conn, person.patient_ids, types, codes=self.table.codings_of(chosen))
        master = person.audit_refs[0].removeprefix("Patient/")
        if visible is None and self.visibility is not None and MASTER_INDEX_ID.match(master):
            visible = self.visibility(conn, principal, master, person.known)
        if visible is not None:
            rows = [row for row in rows if visible(row.institution_code)]
        sites: dict[str | None, Site | None] = {}
        findings = []
        for row in rows:
            if row.institution_code not in sites:
                sites[row.institution_code] = _site(conn, row.institution_code)
            finding = assess(
                self.table,
                row.stored.resource_type,
                row.stored.id,
                row.stored.content,
                row.institution_code,
                ordering,
                sites[row.institution_code],
                today,
                chosen,
                row.stored.with_meta(),
            )
            if finding is not None:
                findings.append(finding)
        return rank(findings)

    def _audit_read(
        self,
        conn: Connection,
        principal: Principal,
        person: Person,
        subtype: str,
        query: str,
        detail: str | None = None,
    ) -> None:
        self.audit.append(
            conn,
            self.audit.patient_queries(
                principal, person.audit_refs, subtype=subtype, query=query, detail=detail
            ),
        )

    # --- $recent-results -----------------------------------------------------------------

    def tests_for(
        self, institutions: Sequence[str], tokens: Sequence[str]
    ) -> tuple[list[TableTest], list[str]]:
        """The tabled tests that ``system|code`` tokens name: LOINC, or a local code of one of
        ``institutions`` (the ordering institution, then the caller's); a bare code is tried
        as LOINC, then as any of those institutions' local codes."""
        tests: list[TableTest] = []
        unmatched: list[str] = []
        for token in tokens:
            system, bar, code = token.partition("|")
            if not bar:
                system, code = "", token
            if not code.strip():
                raise InvalidInput("code must be system|code or a code", expression="code")
            matched = None
            for institution in dict.fromkeys(institutions):
                candidates: list[tuple[str | None, str | None]] = (
                    [(system, code)]
                    if system
                    else [
                        (LOINC, code),
                        *(
                            (s, c)
                            for (i, s, c) in self.table.local_codes
                            if i == institution and c == code
                        ),
                    ]
                )
                matched = self.table.match(institution, candidates)
                if matched is not None:
                    break
            if matched is None:
                unmatched.append(token)
            elif matched[0] not in tests:
                tests.append(matched[0])
        return tests, unmatched

    def recent_results(
        self,
        principal: Principal,
        patient_id: str,
        tokens: Sequence[str],
        institution: str | None = None,
        *,
        break_glass_reason: str | None = None,
    ) -> RecentResults:
        """Equivalent results of the person within their validity windows, each judged for
        ``institution`` (default: the caller's). Audited as a read of the person's data.

        Whose results are shown is the care gate's decision (``gate``): without a care
        relationship a hospital sees its own results only, or is refused (Forbidden with
        guidance) when it has none; ``break_glass_reason`` (the ``X-Break-Glass-Reason``
        header) opens the whole person's results, audited with purpose of use BTG and
        flagged for review, as for ``$everything``."""
        require(principal, "Patient", "r")
        reason = check_break_glass_reason(break_glass_reason)
        findings: list[Finding] = []
        access: ResultAccess | None = None
        master = ""
        try:
            with self.db.transaction() as conn:
                ordering = _site(conn, institution or principal.institution_code)
                if ordering is None:
                    raise InvalidInput("unknown institution", expression="institution")
                tests, unmatched = self.tests_for(
                    [ordering.code, principal.institution_code], tokens
                )
                person = self._person(conn, patient_id)
                if person is None:
                    self.audit.append(
                        conn,
                        [
                            self.audit.event(
                                principal,
                                action=Action.EXECUTE,
                                event_type="query",
                                subtype="recent-results",
                                outcome=Outcome.MINOR_FAILURE,
                                resource_type="Patient",
                                resource_id=patient_id[:128],
                                detail="not found",
                            )
                        ],
                    )
                else:
                    master = person.audit_refs[0].removeprefix("Patient/")
                    if self.gate is not None and MASTER_INDEX_ID.match(master):
                        access = self.gate(conn, principal, master, reason)
                    asked = tests if tokens else None
                    if asked is None or asked:
                        findings = self._find(
                            conn,
                            principal,
                            person,
                            asked,
                            ordering,
                            self.clock(),
                            access.visible if access is not None else None,
                        )
                    self._audit_read(
                        conn,
                        access.reader if access is not None else principal,
                        person,
                        "recent-results",
                        urlencode([("code", t) for t in tokens]),
                        access.detail if access is not None else None,
                    )
        except Forbidden as error:
            self.audit.record(
                [
                    self.audit.event(
                        principal,
                        action=Action.EXECUTE,
                        event_type="query",
                        subtype="recent-results",
                        outcome=Outcome.MINOR_FAILURE,
                        resource_type="Patient",
                        resource_id=master or patient_id[:128],
                        patient_ref=f"Patient/{master}" if master else None,
                        detail=f"refused: {type(error).__name__}",
                    )
                ]
            )
            raise
        if person is None:
            raise NotFound(f"Patient/{patient_id} is not known", expression="Patient.id")
        return RecentResults(
            findings,
            ordering,
            tests if tokens else list(self.table.tests),
            unmatched,
            access.guidance if access is not None else None,
            access.break_glass_exception if access is not None else None,
        )

    # --- orders --------------------------------------------------------------------------

    def _order_findings(
        self,
        conn: Connection,
        principal: Principal,
        order_id: str | None,
        content: dict[str, Any],
        channel: str,
    ) -> tuple[list[Finding], str | None]:
        """Alerts for a new order: (findings, the subject Patient id)."""
        patient_id = _subject_id(content)
        if patient_id is None or content.get("status") not in OPEN_ORDER_STATUSES:
            return [], patient_id
        matched = self.table.match(principal.institution_code, codings(content.get("code")))
        if matched is None:  # not a tabled test: the ordering site is not needed
            return [], patient_id
        ordering = _site(conn, principal.institution_code)
        if ordering is None:
            return [], patient_id
        person = self._person(conn, patient_id)
        if person is None:
            return [], patient_id
        now = self.clock()
        findings = self._find(conn, principal, person, [matched[0]], ordering, now)
        if findings:
            if order_id is not None:
                RecognitionRepository(conn).record(order_id, ordering.code, findings, channel, now)
            order = f"ServiceRequest/{order_id}" if order_id else "ServiceRequest (not stored)"
            self._audit_read(conn, principal, person, "order-alerts", order)
        return findings, patient_id

    def on_service_request(
        self, conn: Connection, principal: Principal, stored: StoredResource, created: bool
    ) -> Notice:
        """The records service's listener: alerts on a new order, outcomes on a changed one."""
        if not created:
            self._order_changed(conn, stored)
            return Notice()
        findings, patient_id = self._order_findings(
            conn, principal, stored.id, stored.content, "fhir"
        )
        if len(self._seen) > 1_000:  # orders created outside the HL7 handler are never taken
            self._seen.clear()
        self._seen[(id(conn), stored.id)] = findings
        links: tuple[tuple[str, str], ...] = ()
        if patient_id is not None:
            ordered = codings(stored.content.get("code"))
            matched = self.table.match(principal.institution_code, ordered)
            if matched is not None:
                ordered = [(LOINC, matched[1])]
            params = [("code", f"{s}|{c}" if s else str(c)) for s, c in ordered[:1]]
            query = f"?{urlencode(params)}" if params else ""
            links = ((f"Patient/{patient_id}/$recent-results{query}", RECENT_RESULTS_REL),)
        return Notice(tuple(issue(f) for f in findings), links)

    def order_alerts(
        self, conn: Connection, context: MessageContext, service_request: dict[str, Any]
    ) -> list[Note]:
        """For the HL7 v2 order handler (ORM^O01, OML^O21): the alerts of an order as ACK
        notes (ERR severity I), inside the handler's transaction. Pass the ServiceRequest as
        stored (with its ``id``) so the alerts are counted; calling it for an order the FHIR
        listener already alerted on records nothing twice."""
        order_id = service_request.get("id")
        seen = self._seen.pop((id(conn), order_id), None) if isinstance(order_id, str) else None
        if seen is not None and service_request.get("status") in OPEN_ORDER_STATUSES:
            # Created just now through the record service: the listener found these already.
            if seen:
                RecognitionRepository(conn).record(
                    str(order_id), context.principal.institution_code, seen, "hl7", self.clock()
                )
            return [Note(note_text(f), Severity.INFORMATION) for f in seen]
        findings, _patient = self._order_findings(
            conn,
            context.principal,
            order_id if isinstance(order_id, str) and ID_PATTERN.match(order_id) else None,
            service_request,
            "hl7",
        )
        return [Note(note_text(f), Severity.INFORMATION) for f in findings]

    # --- outcomes ------------------------------------------------------------------------

    def _within_window(self, rows: Sequence[AlertRow], now: datetime) -> bool:
        first = min(_aware(r.alerted_at) for r in rows)
        return now - first <= self.avoided_window

    def _order_changed(self, conn: Connection, stored: StoredResource) -> None:
        """An alerted order revoked, or completed citing an alerted result, within the window
        counts as an avoided duplicate (once per order)."""
        repo = RecognitionRepository(conn)
        rows = repo.alerts_of(stored.id)
        now = self.clock()
        if not rows or any(r.outcome for r in rows) or not self._within_window(rows, now):
            return
        status = stored.content.get("status")
        if status == "revoked":
            repo.set_outcome(rows[0].id, "avoided", "revoked", now)
        elif status == "completed":
            cited = _references(stored.content, "supportingInfo")
            chosen = next((r for r in rows if r.result_reference in cited), None)
            if chosen is not None:
                repo.set_outcome(chosen.id, "avoided", "completed", now)

    def acknowledge(
        self, principal: Principal, order_id: str, decision: str, result: str | None
    ) -> Acknowledged:
        """The ordering clinician says what they did about an alert: ``use-existing`` (the
        order is not repeated: avoided) or ``repeat`` (declined)."""
        require(principal, "ServiceRequest", "u")
        if decision not in ("use-existing", "repeat"):
            raise InvalidInput("decision must be use-existing or repeat", expression="decision")
        now = self.clock()
        with self.db.transaction() as conn:
            repo = RecognitionRepository(conn)
            rows = repo.alerts_of(order_id)
            if not rows:
                raise NotFound(
                    f"no alert was given for ServiceRequest/{order_id}", expression="order"
                )
            if rows[0].ordering_institution != principal.institution_code:
                raise Forbidden("only the ordering institution can acknowledge", expression="order")
            decided = next((r for r in rows if r.outcome), None)
            if decided is not None:
                raise Conflict(
                    f"this order is already recorded as {decided.outcome}", expression="order"
                )
            if not self._within_window(rows, now):
                raise Conflict(
                    f"the alert is older than {int(self.avoided_window.total_seconds() // 3600)} "
                    "hours: it no longer counts",
                    expression="order",
                )
            chosen = rows[0]
            if result is not None:
                found = next((r for r in rows if r.result_reference == result), None)
                if found is None:
                    raise InvalidInput(
                        "this result was not among the order's alerts", expression="result"
                    )
                chosen = found
            outcome = "avoided" if decision == "use-existing" else "declined"
            repo.set_outcome(chosen.id, outcome, "acknowledged", now)
            self.audit.append(
                conn,
                [
                    self.audit.event(
                        principal,
                        action=Action.UPDATE,
                        subtype="recognition-outcome",
                        resource_type="ServiceRequest",
                        resource_id=order_id,
                        detail=outcome,
                    )
                ],
            )
        return Acknowledged(order_id, outcome, chosen.result_reference)

    # --- counts --------------------------------------------------------------------------

    def counts(
        self, since: date, until: date | None = None, by: str = "ordering"
    ) -> list[CountRow]:
        """Alerts, recognised alerts and avoided duplicates per test and institution, for
        alerts given on ``since`` .. ``until`` (inclusive; Beijing-time calendar days)."""
        if by not in ("ordering", "result"):
            raise InvalidInput("by must be ordering or result", expression="by")
        start = datetime.combine(since, time(), CHINA_TIME)
        end = datetime.combine(until + timedelta(days=1), time(), CHINA_TIME) if until else None
        if end is not None and end <= start:
            raise InvalidInput("until must not be before since", expression="until")
        with self.db.transaction(readonly=True) as conn:
            # In UTC: SQLite keeps instants as UTC text without their offset.
            return RecognitionRepository(conn).counts(
                start.astimezone(UTC), end.astimezone(UTC) if end else None, by
            )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- FHIR rendering --------------------------------------------------------------------------

EXTENSION_URL = "urn:healthroam:fhir:StructureDefinition:result-recognition"
REASON_SYSTEM = "urn:healthroam:fhir:CodeSystem:recognition-reason"
TEST_SYSTEM = "urn:healthroam:fhir:CodeSystem:recognition-test"
INSTITUTION_SYSTEM = "urn:healthroam:institution"


def recognition_extension(finding: Finding) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [
        {"url": "recognised", "valueBoolean": finding.decision.recognised},
        {
            "url": "reason",
            "valueCoding": {
                "system": REASON_SYSTEM,
                "code": finding.decision.reason,
                "display": finding.decision.detail,
            },
        },
        {
            "url": "test",
            "valueCoding": {
                "system": TEST_SYSTEM,
                "code": finding.test.id,
                "display": finding.test.name,
            },
        },
        {"url": "validUntil", "valueDate": finding.valid_until.isoformat()},
    ]
    if finding.institution is not None:
        parts.append(
            {
                "url": "performer",
                "valueIdentifier": {"system": INSTITUTION_SYSTEM, "value": finding.institution},
            }
        )
    return {"url": EXTENSION_URL, "extension": parts}


def issue(finding: Finding) -> dict[str, Any]:
    """An information issue of an OperationOutcome describing one alert."""
    verdict = "recognised" if finding.decision.recognised else "not recognised"
    return {
        "severity": "information",
        "code": "informational",
        "details": {
            "coding": [
                {
                    "system": REASON_SYSTEM,
                    "code": finding.decision.reason,
                    "display": finding.decision.detail,
                }
            ],
            "text": f"{finding.test.name} / {finding.test.name_en}",
        },
        "diagnostics": f"{finding.reference} ({local_day(finding.taken).isoformat()}, "
        f"{finding.institution or 'unknown institution'}) is an equivalent result valid until "
        f"{finding.valid_until.isoformat()}: {verdict}, {finding.decision.detail}",
    }
