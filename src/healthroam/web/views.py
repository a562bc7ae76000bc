"""What the summary page shows, built from the care service's summary (pure: no framework).

The care service's summary is read through the small structural types below, so the page
depends only on the fields it shows: per item a display text, date, status, detail and the
institution it came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Protocol

# Times are shown in Beijing time (the province's clinics), whatever zone a source wrote.
BEIJING = timezone(timedelta(hours=8), "CST")

SECTIONS = (
    "problems",
    "allergies",
    "medications",
    "encounters",
    "results",
    "immunizations",
    "documents",
)


class SourceLike(Protocol):
    @property
    def code(self) -> str | None: ...
    @property
    def name(self) -> str | None: ...


class ItemLike(Protocol):
    @property
    def resource_type(self) -> str: ...
    @property
    def display(self) -> str: ...
    @property
    def date(self) -> str | None: ...
    @property
    def status(self) -> str | None: ...
    @property
    def detail(self) -> str | None: ...
    @property
    def source(self) -> SourceLike: ...


class PersonLike(Protocol):
    @property
    def master_index_id(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def sex(self) -> str | None: ...
    @property
    def birth_date(self) -> str | None: ...


class SummaryLike(Protocol):
    @property
    def person(self) -> PersonLike: ...
    @property
    def generated_at(self) -> datetime: ...
    @property
    def access(self) -> str: ...
    @property
    def consent_restricted(self) -> bool: ...
    @property
    def break_glass_exception(self) -> int | None: ...
    @property
    def institutions(self) -> Sequence[SourceLike]: ...
    def section(self, name: str) -> Sequence[ItemLike]: ...


@dataclass(frozen=True, slots=True)
class ItemView:
    display: str
    date: str
    status: str
    detail: str
    source_name: str
    source_code: str
    kind: str


@dataclass(frozen=True, slots=True)
class SectionView:
    key: str  # problems, allergies ... (label "summary.<key>")
    items: list[ItemView]


@dataclass(frozen=True, slots=True)
class PersonView:
    master_index_id: str
    name: str
    sex: str  # GB/T 2261.1 code: 0 1 2 9 (label "sex.<code>")
    birth_date: str


@dataclass(frozen=True, slots=True)
class SummaryView:
    person: PersonView
    generated_at: str
    access: str  # label "access.<basis>"
    consent_restricted: bool
    consent_overridden: bool
    break_glass_exception: int | None
    sections: list[SectionView]
    sources: list[str]  # names of the institutions the items came from


def short_date(value: str | None) -> str:
    """``2026-11-02T00:30:00Z`` -> ``2026-11-02 08:30`` (Beijing time); a date stays a date."""
    if not value:
        return ""
    if len(value) > 10 and value[10] == "T":
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return f"{value[:10]} {value[11:16]}"
        if moment.tzinfo is not None:
            moment = moment.astimezone(BEIJING)
        return moment.strftime("%Y-%m-%d %H:%M")
    return value[:10]


def local_time(moment: datetime) -> str:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def item_view(item: ItemLike) -> ItemView:
    source = item.source
    return ItemView(
        display=item.display,
        date=short_date(item.date),
        status=item.status or "",
        detail=item.detail or "",
        source_name=source.name or source.code or "?",
        source_code=source.code or "",
        kind=item.resource_type,
    )


def sex_code(value: str | None) -> str:
    """GB/T 2261.1 code from a registry code or a FHIR gender."""
    return {"male": "1", "female": "2", "unknown": "0", "other": "9"}.get(
        value or "", value if value in ("0", "1", "2", "9") else "0"
    )


def summary_view(summary: SummaryLike) -> SummaryView:
    person = summary.person
    return SummaryView(
        person=PersonView(
            master_index_id=person.master_index_id,
            name=person.name or "",
            sex=sex_code(person.sex),
            birth_date=short_date(person.birth_date),
        ),
        generated_at=local_time(summary.generated_at),
        access=str(summary.access),
        consent_restricted=summary.consent_restricted,
        consent_overridden=bool(getattr(summary, "consent_overridden", False)),
        break_glass_exception=summary.break_glass_exception,
        sections=[
            SectionView(key, [item_view(item) for item in summary.section(key)]) for key in SECTIONS
        ],
        sources=[s.name or s.code or "?" for s in summary.institutions],
    )
