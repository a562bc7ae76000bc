"""Hospital simulator: HL7 v2 traffic from the synthetic province over MLLP.

Each simulated hospital holds one MLLP connection and sends, at its share of the target rate,
the messages of patient visits: registration (ADT^A04), an order (ORM^O01), its result
(ORU^R01), and for some visits an admission (A01), an update (A08) and a discharge (A03).
Patients come from the synthetic population (real-looking names, ID numbers, addresses);
some hospitals send GB 18030 and older HL7 versions, as real ones do. Every ACK is waited for
(original mode) and its latency recorded.
"""

from __future__ import annotations

import contextlib
import random
import ssl
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from healthroam.errors import InvalidInput
from healthroam.exchange.hl7.mllp import MllpClient, MllpError
from healthroam.registry.names import split_chinese_name
from healthroam.synth import places
from healthroam.synth.population import PopulationGenerator

if TYPE_CHECKING:
    from healthroam.exchange.simulator_api import ApiOptions

APPLICATION = "HIS"  # MSH-3 of every simulated hospital; MSH-4 is the hospital's code
# (LOINC, name, unit, low, high) of common laboratory tests, in the SI units Chinese
# laboratories report (so the molar LOINC codes: mmol/L glucose is 14749-6, not 2345-7).
TESTS = (
    ("14749-6", "Glucose [Moles/volume] in Serum or Plasma", "mmol/L", 3.9, 6.1),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/L", 115.0, 150.0),
    ("14682-9", "Creatinine [Moles/volume] in Serum or Plasma", "umol/L", 44.0, 133.0),
    ("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
     "U/L", 7.0, 40.0),
    ("14647-2", "Cholesterol [Moles/volume] in Serum or Plasma", "mmol/L", 2.8, 5.2),
    ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*9/L", 3.5, 9.5),
)  # fmt: skip
DEPARTMENTS = ("内科", "外科", "儿科", "妇产科", "急诊科", "中医科")


@dataclass(frozen=True, slots=True)
class Person:
    mrn: str
    id_number: str | None
    surname: str
    given: str
    sex: str  # HL7 table 0001: M / F
    birth_date: str  # YYYYMMDD
    address: str
    phone: str


@dataclass(frozen=True, slots=True)
class Hospital:
    code: str
    name: str
    charset: str  # MSH-18
    version: str  # MSH-12


def hospitals(count: int) -> list[Hospital]:
    """The first ``count`` hospitals of the synthetic province, each with a character set and
    HL7 version (every third sends GB 18030; versions cycle through 2.5.1, 2.4, 2.3.1)."""
    found = places.institutions()
    if count > len(found):
        raise InvalidInput(f"the synthetic province has {len(found)} hospitals", expression="count")
    versions = ("2.5.1", "2.4", "2.3.1")
    return [
        Hospital(
            h.code,
            h.name,
            "GB 18030-2000" if n % 3 == 2 else "UNICODE UTF-8",
            versions[n % len(versions)],
        )
        for n, h in enumerate(found[:count])
    ]


def people(seed: int, n: int) -> list[Person]:
    chunk = PopulationGenerator(seed).chunk(0, 0, n)
    names = chunk.name.to_pylist()
    ids = chunk.id_number.to_pylist()
    addresses = chunk.address.to_pylist()
    phones = chunk.phone.to_pylist()
    result = []
    for i in range(len(chunk)):
        try:
            split = split_chinese_name(names[i])
            surname, given = split.surname or names[i], split.given or ""
        except InvalidInput:  # a foreign resident's Latin name
            parts = names[i].split()
            surname, given = parts[-1], " ".join(parts[:-1])
        result.append(
            Person(
                mrn=f"{100000 + i}",
                id_number=ids[i],
                surname=surname,
                given=given,
                sex={1: "M", 2: "F"}.get(int(chunk.sex[i]), "U"),
                birth_date=str(chunk.birth_date[i]).replace("-", ""),
                address=addresses[i] or "",
                phone=phones[i] or "",
            )
        )
    return result


def _escape(text: str) -> str:
    return (
        text.replace("\\", "\\E\\")
        .replace("|", "\\F\\")
        .replace("^", "\\S\\")
        .replace("~", "\\R\\")
        .replace("&", "\\T\\")
    )


class MessageFactory:
    """ER7 messages of one hospital's visits."""

    def __init__(self, hospital: Hospital, rng: random.Random) -> None:
        self.hospital, self.rng = hospital, rng
        self.sequence = 0

    def _msh(self, kind: str, event: str, structure: str, at: datetime) -> str:
        self.sequence += 1
        message_type = f"{kind}^{event}" + (
            "" if self.hospital.version == "2.3" else f"^{structure}"
        )
        return "|".join(
            [
                "MSH",
                "^~\\&",
                APPLICATION,
                self.hospital.code,
                "HEALTHROAM",
                "HN",
                at.strftime("%Y%m%d%H%M%S"),
                "",
                message_type,
                f"{self.hospital.code}-{self.sequence:09d}",
                "P",
                self.hospital.version,
                "",
                "",
                "AL",
                "NE",
                "CHN",
                self.hospital.charset,
            ]
        )

    def _pid(self, person: Person) -> str:
        identifiers = f"{person.mrn}^^^{self.hospital.code}^MR"
        if person.id_number:
            identifiers += f"~{person.id_number}^^^CHN^NNCHN"
        return "|".join(
            [
                "PID",
                "1",
                "",
                identifiers,
                "",
                f"{_escape(person.surname)}^{_escape(person.given)}",
                "",
                person.birth_date,
                person.sex,
                "",
                "",
                f"{_escape(person.address)}^^^^^CHN^H",
                "",
                f"^PRN^CP^^^^^^^^^{person.phone}" if person.phone else "",
            ]
        )

    def _pv1(self, patient_class: str, visit: str, at: datetime, discharged: bool = False) -> str:
        fields = [
            "PV1",
            "1",
            patient_class,
            f"{self.rng.choice(DEPARTMENTS)}^^^{self.hospital.code}",
        ]
        fields += [""] * 15 + [visit]  # PV1-19 visit number
        fields += [""] * 24 + [at.strftime("%Y%m%d%H%M%S")]  # PV1-44 admit date/time
        if discharged:
            fields.append(at.strftime("%Y%m%d%H%M%S"))  # PV1-45 discharge date/time
        return "|".join(fields)

    def _message(
        self, kind: str, event: str, structure: str, at: datetime, *segments: str
    ) -> tuple[str, str]:
        """(label, ER7 text) of a message: its MSH, then ``segments``."""
        return f"{kind}^{event}", "\r".join([self._msh(kind, event, structure, at), *segments])

    def _adt(self, event: str, structure: str, at: datetime, pid: str, pv1: str) -> tuple[str, str]:
        return self._message(
            "ADT", event, structure, at, f"EVN|{event}|{at:%Y%m%d%H%M%S}", pid, pv1
        )

    def visit(self, person: Person, at: datetime) -> Iterator[tuple[str, str]]:
        """(label, ER7 text) of one visit's messages, in order."""
        visit = f"V{self.hospital.code}{self.sequence:09d}"
        pid = self._pid(person)
        yield self._adt("A04", "ADT_A01", at, pid, self._pv1("O", visit, at))
        loinc, name, unit, low, high = self.rng.choice(TESTS)
        placer = f"O{self.hospital.code}{self.sequence:09d}"
        ordered = at + timedelta(minutes=5)
        yield self._message(
            "ORM",
            "O01",
            "ORM_O01",
            ordered,
            pid,
            self._pv1("O", visit, at),
            f"ORC|NW|{placer}|||||||{ordered:%Y%m%d%H%M%S}",
            f"OBR|1|{placer}||{loinc}^{_escape(name)}^LN|||{ordered:%Y%m%d%H%M%S}",
        )
        resulted = at + timedelta(hours=2)
        value = round(self.rng.uniform(low * 0.8, high * 1.2), 1)
        flag = "L" if value < low else "H" if value > high else "N"
        yield self._message(
            "ORU",
            "R01",
            "ORU_R01",
            resulted,
            pid,
            self._pv1("O", visit, at),
            f"ORC|RE|{placer}|F{placer[1:]}",
            f"OBR|1|{placer}|F{placer[1:]}|{loinc}^{_escape(name)}^LN|||"
            f"{ordered:%Y%m%d%H%M%S}|||||||||||||||{resulted:%Y%m%d%H%M%S}||LAB|F",
            f"OBX|1|NM|{loinc}^{_escape(name)}^LN||{value}|{unit}|{low}-{high}|{flag}|||F|||"
            f"{resulted:%Y%m%d%H%M%S}",
        )
        if self.rng.random() < 0.2:
            admitted = at + timedelta(hours=3)
            inpatient = visit + "I"
            yield self._adt("A01", "ADT_A01", admitted, pid, self._pv1("I", inpatient, admitted))
            yield self._adt("A08", "ADT_A01", admitted, pid, self._pv1("I", inpatient, admitted))
            left = admitted + timedelta(days=self.rng.randint(1, 9))
            discharge = self._pv1("I", inpatient, admitted, discharged=True)
            yield self._adt("A03", "ADT_A03", left, pid, discharge)


@dataclass
class CallTally:
    """HTTP calls of one kind (FHIR Bundle, check-in ...) by the API hospitals."""

    sent: int = 0
    ok: int = 0
    statuses: dict[str, int] = field(default_factory=dict)  # errors: HTTP status or "no answer"
    latencies: list[float] = field(default_factory=list)
    first_error: str | None = None  # the first error answer's body (shortened), for diagnosis

    @property
    def errors(self) -> int:
        return self.sent - self.ok

    def percentile(self, q: float) -> float:
        return _percentile(sorted(self.latencies), q)


@dataclass
class Summary:
    sent: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    no_ack: int = 0
    latencies: list[float] = field(default_factory=list)
    by_type: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    calls: dict[str, CallTally] = field(default_factory=dict)  # the API hospitals' calls

    def record(self, label: str, code: str | None, seconds: float) -> None:
        with self.lock:
            self.sent += 1
            self.by_type[label] = self.by_type.get(label, 0) + 1
            if code is None:
                self.no_ack += 1
            else:
                self.codes[code] = self.codes.get(code, 0) + 1
                self.latencies.append(seconds)

    def record_call(
        self, kind: str, status: int | None, ok: bool, seconds: float, error: str | None = None
    ) -> None:
        with self.lock:
            tally = self.calls.setdefault(kind, CallTally())
            tally.sent += 1
            if ok:
                tally.ok += 1
                tally.latencies.append(seconds)
            else:
                key = str(status) if status is not None else "no answer"
                tally.statuses[key] = tally.statuses.get(key, 0) + 1
                if tally.first_error is None:
                    tally.first_error = (error or key)[:500]

    def percentile(self, q: float) -> float:
        with self.lock:
            values = sorted(self.latencies)
        return _percentile(values, q)


def _percentile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted latencies (the median for 0.5; 0 when there are none)."""
    if not ordered:
        return 0.0
    if q == 0.5:
        return statistics.median(ordered)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ack_code(ack: bytes) -> str:
    start = ack.find(b"\rMSA")
    return ack[start + 5 : start + 7].decode("ascii", "replace") if start >= 0 else "??"


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    host: str = "127.0.0.1"
    port: int = 2575
    count: int = 20
    rate: float = 200.0  # messages per second, all hospitals together
    seconds: float = 30.0
    seed: int = 2026
    people: int = 2_000
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    api: ApiOptions | None = None  # some hospitals talk FHIR and check in by card instead


def simulate(
    config: SimulatorConfig,
    *,
    stop: threading.Event | None = None,
    on_message: Callable[[Summary], None] | None = None,
) -> Summary:
    """Drive the gateway for ``config.seconds`` (or until ``stop``); returns the tally."""
    stop = stop or threading.Event()
    summary = Summary()
    population = people(config.seed, config.people)
    per_hospital = config.rate / config.count
    started = time.monotonic()
    until = started + config.seconds

    def run(index: int, hospital: Hospital) -> None:
        rng = random.Random(config.seed * 1_000 + index)  # noqa: S311 - simulated data
        factory = MessageFactory(hospital, rng)
        client: MllpClient | None = None
        clock = datetime(2026, 11, 1, 8, tzinfo=UTC) + timedelta(minutes=index)
        due = time.monotonic()
        while not stop.is_set() and time.monotonic() < until:
            person = population[rng.randrange(len(population))]
            clock += timedelta(minutes=rng.randint(1, 30))
            for label, text in factory.visit(person, clock):
                if stop.is_set() or time.monotonic() >= until:
                    break
                due += 1 / per_hospital
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                payload = (text + "\r").encode(
                    "gb18030" if hospital.charset.startswith("GB") else "utf-8"
                )
                sent_at = time.perf_counter()
                try:
                    if client is None:
                        client = MllpClient(
                            config.host,
                            config.port,
                            timeout=30,
                            ssl_context=config.ssl_context,
                            server_hostname=config.server_hostname,
                        )
                    code: str | None = _ack_code(client.send(payload))
                except (OSError, MllpError):
                    code = None
                    if client is not None:
                        client.close()
                    client = None
                summary.record(label, code, time.perf_counter() - sent_at)
                if on_message is not None:
                    on_message(summary)
        if client is not None:
            client.close()

    threads = [
        threading.Thread(target=run, args=(n, h), name=f"hospital-{h.code}", daemon=True)
        for n, h in enumerate(hospitals(config.count))
    ]
    office = None
    if config.api is not None:
        threads, office = _with_api_hospitals(
            config, config.api, threads, summary, population, per_hospital, until, stop, on_message
        )
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if office is not None:
        office.close()
    summary.elapsed = time.monotonic() - started
    return summary


def _with_api_hospitals(
    config: SimulatorConfig,
    api: ApiOptions,
    threads: list[threading.Thread],
    summary: Summary,
    population: list[Person],
    per_hospital: float,
    until: float,
    stop: threading.Event,
    on_message: Callable[[Summary], None] | None,
) -> tuple[list[threading.Thread], Any]:
    """The threads with the FHIR hospitals' HL7 threads replaced by API ones."""
    from healthroam.exchange import simulator_api

    every = hospitals(config.count)
    chosen = {h.code for h in simulator_api.api_hospitals(every, api.fhir_share)}
    clerk = api.credentials.get(simulator_api.CLERK)
    if clerk is None:
        raise InvalidInput("no card-office API client: run with --setup", expression="api")
    missing = sorted(chosen - set(api.credentials))
    if missing:
        raise InvalidInput(
            f"no API client for hospital {missing[0]}: run with --setup", expression="api"
        )
    office = simulator_api.CardOffice(
        api.base_url, simulator_api.TokenSource(api.base_url, clerk, api.timeout), api.timeout
    )
    result = []
    for n, (hospital, thread) in enumerate(zip(every, threads, strict=True)):
        if hospital.code not in chosen:
            result.append(thread)
            continue
        result.append(
            threading.Thread(
                target=simulator_api.run_hospital,
                args=(n, hospital, api, office, summary, population),
                kwargs={
                    "seed": config.seed,
                    "per_hospital": per_hospital,
                    "until": until,
                    "stop": stop,
                    "on_message": on_message,
                },
                name=f"hospital-{hospital.code}-fhir",
                daemon=True,
            )
        )
    return result, office


def setup_senders(platform: Any, count: int) -> int:
    """Register the simulated hospitals and bind their HIS as HL7 senders (idempotent)."""
    from healthroam.errors import Conflict
    from healthroam.exchange.hl7.service import SenderService
    from healthroam.security.model import InstitutionKind

    senders = SenderService(platform.db)
    bound = {(b.application, b.facility) for b in senders.list()}
    known = {i.code for i in platform.institutions.list()}
    added = 0
    for hospital in places.institutions()[:count]:
        if hospital.code not in known:
            township = hospital.kind == "township"
            with contextlib.suppress(Conflict):
                platform.institutions.add(
                    code=hospital.code,
                    name=hospital.name,
                    kind=(
                        InstitutionKind.TOWNSHIP_HEALTH_CENTRE
                        if township
                        else InstitutionKind.HOSPITAL
                    ).value,
                    region=hospital.region_code,
                    level=None if township else hospital.level,
                )
        if (APPLICATION, hospital.code) not in bound:
            senders.add(
                application=APPLICATION,
                facility=hospital.code,
                institution_code=hospital.code,
                description="healthroam simulate hospitals",
            )
            added += 1
    return added
