"""Cross-institution care routes (/care): card check-in at a hospital terminal, the
clinician's summary of a resident's record from every institution, care relationships, and
the privacy officer's review of break-the-glass accesses.

Scopes: check-in ``system/Card.r`` and ``system/Encounter.c`` (plus ``system/Patient.r`` to see
the holder's demographics, as at /cards/verify); summary and relationships
``system/Patient.r`` (each section also needs read scope on its resource types); access
exceptions ``system/AccessException.s`` to list, ``system/AccessException.u`` to close.
Break-the-glass: the header ``X-Break-Glass-Reason`` (see docs/cross-institution-care.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from healthroam.api.auth import platform_of, scoped
from healthroam.api.cards import card_refused_response, verification_json
from healthroam.api.fhir_registry import BREAK_GLASS_HEADER
from healthroam.cards.service import CardRefused
from healthroam.exchange.care.model import (
    SECTIONS,
    AccessException,
    CareRelationship,
    SourceInstitution,
    Summary,
    SummaryItem,
    visit_purpose,
)
from healthroam.exchange.care.service import EXCEPTION_TYPE
from healthroam.exchange.care.summary import TITLES
from healthroam.security.model import Principal

router = APIRouter(prefix="/care", tags=["care"])

CardReader = Annotated[Principal, Depends(scoped("Card", "r"))]
PatientReader = Annotated[Principal, Depends(scoped("Patient", "r"))]
ExceptionSearcher = Annotated[Principal, Depends(scoped(EXCEPTION_TYPE, "s"))]
ExceptionUpdater = Annotated[Principal, Depends(scoped(EXCEPTION_TYPE, "u"))]


class _Body(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")


class CheckInBody(_Body):
    text: str = Field(max_length=4096, description="The scanned QR text or offline credential.")
    terminal: str = Field(description="The terminal's code within its institution.")
    purpose: str = Field(
        default="outpatient",
        description="outpatient, emergency, inpatient, examination or public-health.",
    )
    channel: str = Field(default="01", description="Card-use channel code, e.g. 01 counter.")


class CloseBody(_Body):
    outcome: Literal["justified", "unjustified"]
    note: str | None = Field(default=None, max_length=2000)


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def relationship_json(relationship: CareRelationship) -> dict[str, Any]:
    return {
        "id": relationship.id,
        "masterIndexId": relationship.master_index_id,
        "institution": relationship.institution_code,
        "since": _time(relationship.since),
        "until": _time(relationship.until),
        "reason": relationship.reason.value,
        "encounter": relationship.encounter_ref,
        "card": relationship.card_id,
    }


def _source_json(source: SourceInstitution) -> dict[str, Any]:
    return {"code": source.code, "name": source.name, "level": source.level, "kind": source.kind}


def _item_json(item: SummaryItem) -> dict[str, Any]:
    return {
        "reference": f"{item.resource_type}/{item.id}",
        "resourceType": item.resource_type,
        "display": item.display,
        "date": item.date,
        "status": item.status,
        "detail": item.detail,
        "source": _source_json(item.source),
    }


def summary_json(summary: Summary, lang: str) -> dict[str, Any]:
    mii = summary.person.master_index_id
    titles = TITLES[lang]
    return {
        "masterIndexId": mii,
        "person": {
            "name": summary.person.name,
            "sex": summary.person.sex,
            "birthDate": summary.person.birth_date,
        },
        "generatedAt": _time(summary.generated_at),
        "lang": lang,
        "access": {
            "basis": summary.access.value,
            "consentRestricted": summary.consent_restricted,
            "breakGlassException": summary.break_glass_exception,
            "othersHidden": summary.others_hidden,
            "guidance": summary.guidance,
        },
        "institutions": [_source_json(s) for s in summary.institutions],
        "sections": [
            {
                "key": name,
                "title": titles[name],
                "items": [_item_json(i) for i in summary.section(name)],
            }
            for name in SECTIONS
        ],
        "links": {"everything": f"/fhir/Patient/{mii}/$everything"},
    }


def exception_json(exc: AccessException) -> dict[str, Any]:
    return {
        "id": exc.id,
        "occurredAt": _time(exc.occurred_at),
        "institution": exc.institution_code,
        "client": exc.client_id,
        "endUser": exc.end_user,
        "masterIndexId": exc.master_index_id,
        "access": exc.access,
        "reason": exc.reason,
        "hadRelationship": exc.had_relationship,
        "consentOverridden": exc.consent_overridden,
        "status": exc.status.value,
        "reviewOutcome": exc.review_outcome.value if exc.review_outcome else None,
        "reviewNote": exc.review_note,
        "reviewedBy": exc.reviewed_by,
        "reviewedAt": _time(exc.reviewed_at),
    }


@router.post("/check-in", summary="Check a resident in by health card at a terminal (用卡就诊)")
def check_in(body: CheckInBody, request: Request, principal: CardReader) -> JSONResponse:
    platform = platform_of(request)
    try:
        verification, checked = platform.care.check_in(
            principal,
            text=body.text,
            terminal=body.terminal,
            purpose=body.purpose,
            channel=body.channel,
        )
    except CardRefused as exc:
        return card_refused_response(request, exc)
    result = verification_json(verification, visit_purpose(body.purpose).step)
    mii = checked.master_index_id
    result["checkIn"] = {
        "masterIndexId": mii,
        "encounter": checked.encounter_ref,
        "subject": checked.subject_ref,
        "relationship": relationship_json(checked.relationship),
        "summary": f"/care/patients/{mii}/summary",
        "everything": f"/fhir/Patient/{mii}/$everything",
    }
    return JSONResponse(result, status_code=201)


@router.get(
    "/patients/{master_index_id:mii}/summary",
    summary="A resident's record from every institution, grouped (患者摘要)",
)
def summary(
    master_index_id: str,
    request: Request,
    principal: PatientReader,
    lang: Annotated[Literal["zh", "en"], Query(description="Section titles: zh or en")] = "zh",
) -> JSONResponse:
    result = platform_of(request).care.summary(
        principal,
        master_index_id,
        break_glass_reason=request.headers.get(BREAK_GLASS_HEADER),
        lang=lang,
    )
    return JSONResponse(summary_json(result, lang))


@router.get(
    "/patients/{master_index_id:mii}/relationships",
    summary="Care relationships with a resident (agencies see every institution's)",
)
def relationships(master_index_id: str, request: Request, principal: PatientReader) -> JSONResponse:
    found = platform_of(request).care.relationships(principal, master_index_id)
    return JSONResponse({"relationships": [relationship_json(r) for r in found]})


@router.get("/access-exceptions", summary="Break-the-glass accesses to review")
def list_exceptions(
    request: Request,
    principal: ExceptionSearcher,
    status: Annotated[Literal["open", "closed", "any"], Query()] = "open",
    institution: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[int | None, Query(ge=0)] = None,
) -> JSONResponse:
    found = platform_of(request).care.exceptions(
        principal,
        status=None if status == "any" else status,
        institution=institution,
        limit=limit,
        after=after,
    )
    return JSONResponse({"exceptions": [exception_json(e) for e in found]})


@router.post("/access-exceptions/{exception_id}/$close", summary="Close a reviewed exception")
def close_exception(
    exception_id: int, body: CloseBody, request: Request, principal: ExceptionUpdater
) -> JSONResponse:
    closed = platform_of(request).care.close_exception(
        principal, exception_id, outcome=body.outcome, note=body.note
    )
    return JSONResponse(exception_json(closed))
