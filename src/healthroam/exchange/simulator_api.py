"""Hospital simulator, API side: hospitals whose HIS talks FHIR REST and card check-in.

A share of the simulated hospitals (``ApiOptions.fhir_share``) sends its visits to the
platform's HTTP API instead of the HL7 gateway, each with an API client of its own
(OAuth2 client credentials at ``/auth/token``, SMART system scopes):

- each visit is one FHIR transaction Bundle posted to ``/fhir``: the Patient (conditional
  create on the hospital's MRN identifier), the Encounter, the laboratory order
  (ServiceRequest), its result (Observation) and report (DiagnosticReport), linked by
  ``urn:uuid:`` references;
- for a share of visits (``check_in_share``) the resident holds an electronic health card: the
  card office (an agency client) applies for, issues and activates one the first time (after
  the registration made the person known to the master index), the resident's phone asks for
  a fresh dynamic code (never one already used: codes are per second and a second use is a
  replay), the hospital's terminal posts it to ``/care/check-in`` and its clinician reads the
  resident's summary.

Latencies and outcomes are tallied per kind in ``Summary.calls`` (see ``CALL_KINDS``).
Credentials are created by :func:`setup_api_clients` and kept in a JSON file (mode 0600).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from healthroam.errors import Conflict, InvalidInput
from healthroam.exchange.simulator import (
    DEPARTMENTS,
    TESTS,
    Hospital,
    Person,
    Summary,
)
from healthroam.registry.normalize import normalize_national_id

CLERK = "card-office"  # credentials key of the card office's client
CARD_AGENCY = "HNWJW"  # the health authority that runs the card office (an agency)
CARD_AGENCY_NAME = "海南省卫生健康委员会"
HOSPITAL_SCOPES = (
    "system/*.rs system/Patient.cu system/Encounter.cu system/ServiceRequest.cu "
    "system/Observation.cu system/DiagnosticReport.cu system/Card.r"
)
CLERK_SCOPES = "system/Card.cruds system/Patient.rs"
NATIONAL_ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"
MRN_SYSTEM = "urn:healthroam:mrn:"  # + hospital code, as the HL7 mapping uses
ORDER_SYSTEM = "urn:healthroam:simulator:order:"  # + hospital code
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
CHINA = "+08:00"
# Tally kinds: the hospital's traffic, then the card office's and the resident's phone's.
BUNDLE, CHECK_IN, SUMMARY, CARD, DYNAMIC_CODE = (
    "FHIR Bundle",
    "check-in",
    "summary",
    "card issue",
    "dynamic code",
)
CALL_KINDS = (BUNDLE, CHECK_IN, SUMMARY, CARD, DYNAMIC_CODE)


@dataclass(frozen=True, slots=True)
class Credentials:
    client_id: str
    client_secret: str
    institution: str


@dataclass(frozen=True, slots=True)
class ApiOptions:
    base_url: str  # the platform's HTTP base, e.g. http://127.0.0.1:8000
    credentials: Mapping[str, Credentials]  # hospital code (and CLERK) -> its API client
    fhir_share: float = 0.5  # share of the hospitals that talk FHIR instead of HL7 v2
    check_in_share: float = 0.3  # share of FHIR visits with a health-card check-in
    summary: bool = True  # after a check-in, the clinician reads the resident's summary
    timeout: float = 30.0


def api_hospitals(hospitals: Sequence[Hospital], share: float) -> list[Hospital]:
    """The hospitals that talk FHIR: ``share`` of them, spread over the list."""
    if not 0 <= share <= 1:
        raise InvalidInput("the FHIR share is between 0 and 1", expression="fhir_share")
    return [h for n, h in enumerate(hospitals) if int((n + 1) * share) > int(n * share)]


# --- credentials --------------------------------------------------------------------------


def load_credentials(path: Path) -> dict[str, Credentials]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput(
            f"no simulator API clients in {path}: run with --setup first", expression="api"
        ) from None
    except (OSError, ValueError):
        raise InvalidInput(
            f"cannot read the simulator's clients file {path}", expression="api"
        ) from None
    try:
        return {key: Credentials(**value) for key, value in raw.items()}
    except (AttributeError, TypeError):
        raise InvalidInput(f"{path} is not a simulator clients file", expression="api") from None


def _save_credentials(path: Path, found: Mapping[str, Credentials]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        key: {
            "client_id": c.client_id,
            "client_secret": c.client_secret,
            "institution": c.institution,
        }
        for key, c in sorted(found.items())
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=1)
    os.chmod(path, 0o600)


def setup_api_clients(platform: Any, hospitals: Sequence[Hospital], path: Path) -> int:
    """Create an API client for each FHIR hospital and for the card office, unless the
    clients file already holds an active one; make the card keys. Returns how many clients
    were created. The hospitals must be registered already (``setup_senders``)."""
    from healthroam.security.model import InstitutionKind

    found: dict[str, Credentials] = {}
    with contextlib.suppress(InvalidInput):
        found = load_credentials(path)
    active = {c.client_id for c in platform.clients.list() if c.active}
    if CARD_AGENCY not in {i.code for i in platform.institutions.list()}:
        with contextlib.suppress(Conflict):
            platform.institutions.add(
                code=CARD_AGENCY,
                name=CARD_AGENCY_NAME,
                kind=InstitutionKind.AGENCY.value,
                region="460000",
                level=None,
            )
    wanted = {h.code: (h.code, HOSPITAL_SCOPES) for h in hospitals}
    wanted[CLERK] = (CARD_AGENCY, CLERK_SCOPES)
    created = 0
    for key, (institution, scopes) in wanted.items():
        have = found.get(key)
        if have is not None and have.client_id in active and have.institution == institution:
            continue
        made = platform.clients.add(
            institution_code=institution, scopes=scopes, name=f"simulator {key}"
        )
        assert made.client_secret is not None
        found[key] = Credentials(made.client.client_id, made.client_secret, institution)
        created += 1
    _save_credentials(path, found)
    platform.keys.init()  # the card keys (idempotent)
    return created


# --- HTTP ---------------------------------------------------------------------------------


class TokenSource:
    """A bearer token of one client, fetched again shortly before it expires."""

    def __init__(self, base_url: str, credentials: Credentials, timeout: float) -> None:
        self.base_url, self.credentials, self.timeout = base_url, credentials, timeout
        self._header: dict[str, str] | None = None
        self._until = 0.0
        self._lock = threading.Lock()

    def header(self) -> dict[str, str]:
        with self._lock:
            if self._header is None or time.monotonic() >= self._until:
                answer = httpx.post(
                    f"{self.base_url}/auth/token",
                    data={"grant_type": "client_credentials"},
                    auth=(self.credentials.client_id, self.credentials.client_secret),
                    timeout=self.timeout,
                )
                answer.raise_for_status()
                body = answer.json()
                self._header = {"Authorization": f"Bearer {body['access_token']}"}
                self._until = time.monotonic() + max(float(body.get("expires_in", 300)) - 30, 5)
            return self._header


@dataclass(slots=True)
class Card:
    id: str
    master_index_id: str


class CardOffice:
    """Cards of the simulated residents (shared by every hospital thread): the card office
    issues them, the residents' phones show dynamic codes."""

    def __init__(self, base_url: str, tokens: TokenSource, timeout: float) -> None:
        self.tokens = tokens
        self.http = httpx.Client(base_url=base_url, timeout=timeout)
        self.lock = threading.Lock()
        self.cards: dict[str, Card] = {}  # person (population MRN) -> card
        self.claimed: set[str] = set()  # people whose card is being issued
        self.used: set[str] = set()  # dynamic codes handed out

    def close(self) -> None:
        self.http.close()

    def card_of(self, person: Person) -> Card | None:
        with self.lock:
            return self.cards.get(person.mrn)

    def claim(self, person: Person) -> bool:
        with self.lock:
            if person.mrn in self.cards or person.mrn in self.claimed:
                return False
            self.claimed.add(person.mrn)
            return True

    def issue(self, person: Person, national_id: str) -> Card | None:
        """Find the person in the master index, apply, issue, activate (claimed first)."""
        header = self.tokens.header()
        found = self.http.get(
            "/fhir/Patient",
            params={"identifier": f"{NATIONAL_ID_SYSTEM}|{national_id}"},
            headers=header,
        )
        found.raise_for_status()
        entries = found.json().get("entry") or []
        if not entries:
            return None
        mii = entries[0]["resource"]["id"]
        applied = self.http.post(
            "/cards", json={"masterIndexId": mii, "kind": "electronic"}, headers=header
        )
        if applied.status_code == 409:  # a card from an earlier run: use it when active
            held = self.http.get("/cards", params={"master_index_id": mii}, headers=header)
            held.raise_for_status()
            active = [
                c["id"]
                for c in held.json()["cards"]
                if c["kind"] == "electronic" and c["status"] == "active"
            ]
            if not active:
                return None
            card = Card(active[0], mii)
        else:
            applied.raise_for_status()
            card_id = applied.json()["id"]
            self.http.post(f"/cards/{card_id}/$issue", headers=header).raise_for_status()
            self.http.post(
                f"/cards/{card_id}/$activate", json={"reason": "simulator"}, headers=header
            ).raise_for_status()
            card = Card(card_id, mii)
        with self.lock:
            self.cards[person.mrn] = card
        return card

    def dynamic_code(self, card: Card) -> str:
        """A code nobody was given before: the phone asks again while the second lasts."""
        for _ in range(50):
            answer = self.http.post(f"/cards/{card.id}/$dynamic-code", headers=self.tokens.header())
            answer.raise_for_status()
            text: str = answer.json()["text"]
            with self.lock:
                if text not in self.used:
                    self.used.add(text)
                    return text
            time.sleep(0.1)
        raise RuntimeError("no fresh dynamic code within five seconds")


# --- visits -------------------------------------------------------------------------------


def _time(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def valid_national_id(person: Person) -> str | None:
    if not person.id_number:
        return None
    try:
        return normalize_national_id(person.id_number).number
    except InvalidInput:  # a passport number or a number the registry refuses
        return None


class BundleFactory:
    """FHIR transaction Bundles of one hospital's visits."""

    def __init__(self, hospital: Hospital, rng: random.Random) -> None:
        self.hospital, self.rng = hospital, rng
        self.sequence = 0

    def patient(self, person: Person) -> dict[str, Any]:
        identifiers: list[dict[str, Any]] = [
            {
                "use": "usual",
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
                    ]
                },
                "system": MRN_SYSTEM + self.hospital.code,
                "value": person.mrn,
            }
        ]
        national_id = valid_national_id(person)
        if national_id:
            identifiers.append(
                {"use": "official", "system": NATIONAL_ID_SYSTEM, "value": national_id}
            )
        patient: dict[str, Any] = {
            "resourceType": "Patient",
            "identifier": identifiers,
            "active": True,
            "name": [
                {
                    "use": "official",
                    "text": person.surname + person.given
                    if person.given and not person.given.isascii()
                    else f"{person.given} {person.surname}".strip(),
                    "family": person.surname,
                    **({"given": [person.given]} if person.given else {}),
                }
            ],
            "gender": {"M": "male", "F": "female"}.get(person.sex, "unknown"),
            "birthDate": "-".join(
                (person.birth_date[:4], person.birth_date[4:6], person.birth_date[6:8])
            ),
        }
        if person.address:
            patient["address"] = [{"use": "home", "text": person.address, "country": "CN"}]
        if person.phone:
            patient["telecom"] = [{"system": "phone", "value": person.phone, "use": "mobile"}]
        return patient

    def visit(self, person: Person, at: datetime) -> dict[str, Any]:
        """One outpatient visit with a laboratory order and its result."""
        self.sequence += 1
        code = self.hospital.code
        ids = {k: f"urn:uuid:{uuid.uuid4()}" for k in ("patient", "visit", "order", "obs", "rep")}
        subject = {"reference": ids["patient"]}
        encounter = {"reference": ids["visit"]}
        loinc, name, unit, low, high = self.rng.choice(TESTS)
        ordered = at + timedelta(minutes=5)
        resulted = at + timedelta(hours=2)
        value = round(self.rng.uniform(low * 0.8, high * 1.2), 1)
        flag = "L" if value < low else "H" if value > high else "N"
        placer = f"O{code}{self.sequence:09d}"
        test = {"coding": [{"system": LOINC, "code": loinc, "display": name}], "text": name}
        department = self.rng.choice(DEPARTMENTS)
        resources: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
            (
                ids["patient"],
                self.patient(person),
                {
                    "method": "POST",
                    "url": "Patient",
                    "ifNoneExist": f"identifier={MRN_SYSTEM}{code}|{person.mrn}",
                },
            ),
            (
                ids["visit"],
                {
                    "resourceType": "Encounter",
                    "identifier": [
                        {"system": f"urn:healthroam:simulator:visit:{code}", "value": placer[1:]}
                    ],
                    "status": "finished",
                    "class": {"system": ACT_CODE, "code": "AMB", "display": "ambulatory"},
                    "subject": subject,
                    "serviceType": {"text": department},
                    "period": {"start": _time(at), "end": _time(resulted)},
                    "serviceProvider": {
                        "identifier": {"system": "urn:healthroam:institution", "value": code},
                        "display": self.hospital.name,
                    },
                },
                {"method": "POST", "url": "Encounter"},
            ),
            (
                ids["order"],
                {
                    "resourceType": "ServiceRequest",
                    "identifier": [{"system": ORDER_SYSTEM + code, "value": placer}],
                    "status": "completed",
                    "intent": "order",
                    "category": [
                        {
                            "coding": [{"system": "http://snomed.info/sct", "code": "108252007"}],
                            "text": "Laboratory procedure",
                        }
                    ],
                    "code": test,
                    "subject": subject,
                    "encounter": encounter,
                    "authoredOn": _time(ordered),
                },
                {"method": "POST", "url": "ServiceRequest"},
            ),
            (
                ids["obs"],
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "category": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/"
                                    "observation-category",
                                    "code": "laboratory",
                                }
                            ]
                        }
                    ],
                    "code": test,
                    "subject": subject,
                    "encounter": encounter,
                    "basedOn": [{"reference": ids["order"]}],
                    "effectiveDateTime": _time(ordered),
                    "issued": _time(resulted),
                    "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
                    "interpretation": [{"coding": [{"system": INTERPRETATION, "code": flag}]}],
                    "referenceRange": [
                        {
                            "low": {"value": low, "unit": unit, "system": UCUM, "code": unit},
                            "high": {"value": high, "unit": unit, "system": UCUM, "code": unit},
                        }
                    ],
                },
                {"method": "POST", "url": "Observation"},
            ),
            (
                ids["rep"],
                {
                    "resourceType": "DiagnosticReport",
                    "identifier": [{"system": ORDER_SYSTEM + code, "value": f"F{placer[1:]}"}],
                    "status": "final",
                    "code": test,
                    "subject": subject,
                    "encounter": encounter,
                    "basedOn": [{"reference": ids["order"]}],
                    "effectiveDateTime": _time(ordered),
                    "issued": _time(resulted),
                    "result": [{"reference": ids["obs"]}],
                },
                {"method": "POST", "url": "DiagnosticReport"},
            ),
        ]
        return {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"fullUrl": full_url, "resource": resource, "request": request}
                for full_url, resource, request in resources
            ],
        }


def run_hospital(
    index: int,
    hospital: Hospital,
    options: ApiOptions,
    office: CardOffice,
    summary: Summary,
    population: Sequence[Person],
    *,
    seed: int,
    per_hospital: float,
    until: float,
    stop: threading.Event,
    on_message: Callable[[Summary], None] | None,
) -> None:
    """One FHIR hospital's thread: visits at its share of the rate until ``until``."""
    rng = random.Random(seed * 1_000 + index)  # noqa: S311 - simulated data
    factory = BundleFactory(hospital, rng)
    credentials = options.credentials.get(hospital.code)
    if credentials is None:
        raise InvalidInput(
            f"no API client for hospital {hospital.code}: run with --setup", expression="api"
        )
    tokens = TokenSource(options.base_url, credentials, options.timeout)
    clock = datetime(2026, 11, 1, 8, tzinfo=UTC) + timedelta(minutes=index)
    due = time.monotonic()

    def running() -> bool:
        return not stop.is_set() and time.monotonic() < until

    def paced() -> bool:
        nonlocal due
        if not running():
            return False
        due += 1 / per_hospital
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        return True

    def call(kind: str, send: Callable[[], httpx.Response], expect: int) -> httpx.Response | None:
        started = time.perf_counter()
        error = None
        try:
            answer: httpx.Response | None = send()
        except (httpx.HTTPError, KeyError, ValueError, RuntimeError) as exc:
            answer, error = None, f"{type(exc).__name__}: {exc}"
        status = answer.status_code if answer is not None else None
        if answer is not None and status != expect:
            error = f"{status} {answer.text}"
        seconds = time.perf_counter() - started
        summary.record_call(kind, status, status == expect, seconds, error)
        if on_message is not None:
            on_message(summary)
        return answer if status == expect else None

    with httpx.Client(base_url=options.base_url, timeout=options.timeout) as http:

        def check_in(card: Card) -> None:
            code = call(
                DYNAMIC_CODE,
                lambda: httpx.Response(200, json={"text": office.dynamic_code(card)}),
                200,
            )
            if code is None or not paced():
                return
            text = code.json()["text"]
            checked = call(
                CHECK_IN,
                lambda: http.post(
                    "/care/check-in",
                    json={"text": text, "terminal": "REG-01", "purpose": "outpatient"},
                    headers={**tokens.header(), "X-End-User": "registration-1"},
                ),
                201,
            )
            if checked is not None and options.summary and paced():
                call(
                    SUMMARY,
                    lambda: http.get(
                        f"/care/patients/{card.master_index_id}/summary",
                        headers={**tokens.header(), "X-End-User": "clinician-1"},
                    ),
                    200,
                )

        def post_bundle(bundle: dict[str, Any]) -> httpx.Response:
            headers = {**tokens.header(), "Content-Type": "application/fhir+json"}
            return http.post("/fhir", json=bundle, headers=headers)

        while running():
            person = population[rng.randrange(len(population))]
            clock += timedelta(minutes=rng.randint(1, 30))
            with_card = rng.random() < options.check_in_share
            card = office.card_of(person) if with_card else None
            if card is not None:
                check_in(card)  # the resident shows the card at registration
            if not paced():
                break
            bundle = factory.visit(person, clock)
            posted = call(
                BUNDLE,
                functools.partial(post_bundle, bundle),
                200,
            )
            national_id = valid_national_id(person)
            if (
                posted is not None
                and with_card
                and card is None
                and national_id is not None
                and office.claim(person)
            ):
                # First card at the registration desk, then used at once.
                issued = call(
                    CARD,
                    functools.partial(_issued, office, person, national_id),
                    201,
                )
                if issued is not None:
                    check_in(Card(**issued.json()))


def _issued(office: CardOffice, person: Person, national_id: str) -> httpx.Response:
    card = office.issue(person, national_id)
    if card is None:
        return httpx.Response(404)
    return httpx.Response(201, json={"id": card.id, "master_index_id": card.master_index_id})
